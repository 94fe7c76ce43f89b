"""An engine installed for detection only: no PyTorch. The daemon starts, describes its
device, detects with ONNX Runtime and refuses a retrain with a sentence that says why;
and a model folder without ONNX files is exported when a daemon with PyTorch starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.client import OrtholensClient
from protocol.launcher import start_daemon
from protocol.errors import DaemonError
from protocol.params import DetectParams, RetrainParams

REPO = Path(__file__).resolve().parents[3]
MODEL = "pv-unet-efl0"

#: Put first on sys.path of a child Python, it makes these packages unimportable, as in
#: a virtual environment where they were never installed.
BLOCKER = '''
import importlib.abc, sys
BLOCKED = {"torch", "torchvision", "segmentation_models_pytorch", "timm", "safetensors",
           "onnx", "onnxscript", "ray"}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Block())
'''


def _heldout_tile() -> Path:
    from backend.config import pv01_dir
    tile = pv01_dir() / "heldout" / "PV01_325228_1203845.tif"
    if not tile.is_file():
        pytest.fail(f"held-out tile missing: {tile} (set ORTHOLENS_DATA)")
    return tile


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_daemon_detects_without_torch(tmp_path, port):
    """The daemon runs with torch and the training packages unimportable; its pong says
    ONNX Runtime and no PyTorch; a detection equals the in-process one; a retrain gets
    a ``not_found`` error that names the missing PyTorch."""
    from backend.inference.detect import run_detect

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    tile = _heldout_tile()
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "ORTHOLENS_USER_MODELS": str(tmp_path / "user-models"),
           "ORTHOLENS_JOBS_DIR": str(tmp_path / "jobs")}
    proc = start_daemon(sys.executable, port, cwd=str(tmp_path), env=env,
                        log_path=str(tmp_path / "daemon.log"))
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=10) as c:
            pong = c.ping()
            assert pong["device"] == "cpu"
            info = pong["device_info"]
            assert info["kind"] == "cpu" and info["runtime"] == "onnxruntime"
            assert info["torch"] is None and info["cores"] == os.cpu_count()
            assert MODEL in [m["id"] for m in c.models()]
            got = c.detect(DetectParams(source={"kind": "file", "path": str(tile)},
                                        model=MODEL), job_timeout_s=300)["features"]
            with pytest.raises(DaemonError) as err:
                c.retrain(RetrainParams(model=MODEL, source={"kind": "file",
                                                             "path": str(tile)},
                                        crs="EPSG:32651", features=[]),
                          job_timeout_s=60)
        assert err.value.code == "not_found" and "PyTorch" in str(err.value)
    finally:
        _stop(proc)
    log = (tmp_path / "daemon.log").read_text()
    assert "blocked by the test" not in log, log[-2000:]
    want = run_detect(DetectParams(source={"kind": "file", "path": str(tile)},
                                   model=MODEL), [])["features"]
    assert got and [(f["wkt"], f["score"]) for f in got] == [(f["wkt"], f["score"])
                                                            for f in want]


def test_missing_onnx_is_exported_when_the_daemon_starts(tmp_path, port):
    """A model folder with weights but no ``model.onnx`` (an engine installed from a
    checkout before any export): the started daemon writes the ONNX file and then
    detects with it."""
    src = REPO / "models" / MODEL
    models = tmp_path / "models"
    (models / MODEL).mkdir(parents=True)
    shutil.copy2(REPO / "models" / "defaults.json", models / "defaults.json")
    for name in ("card.json", "weights.safetensors"):
        shutil.copy2(src / name, models / MODEL / name)
    onnx = models / MODEL / "model.onnx"
    env = {"PYTHONPATH": str(REPO), "ORTHOLENS_MODELS": str(models),
           "ORTHOLENS_USER_MODELS": str(tmp_path / "user-models"),
           "ORTHOLENS_JOBS_DIR": str(tmp_path / "jobs")}
    proc = start_daemon(sys.executable, port, cwd=str(tmp_path), env=env,
                        log_path=str(tmp_path / "daemon.log"))
    log = tmp_path / "daemon.log"
    try:
        # a hang guard, not a timing check: the export takes seconds, more when loaded
        deadline = time.monotonic() + 300
        while ("exported pv-unet-efl0" not in log.read_text() and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert "exported pv-unet-efl0" in log.read_text(), log.read_text()[-2000:]
        assert onnx.is_file()
        tile = _heldout_tile()
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=10) as c:
            res = c.detect(DetectParams(source={"kind": "file", "path": str(tile)},
                                        model=MODEL), job_timeout_s=300)
        assert res["stats"]["runtime"] == "onnxruntime" and res["features"]
    finally:
        _stop(proc)
