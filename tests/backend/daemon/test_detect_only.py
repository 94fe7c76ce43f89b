"""An engine installed for detection only: no PyTorch. The daemon starts, describes its
device, detects with ONNX Runtime and refuses a retrain with a sentence that says why
(a model folder without ONNX files exported when a daemon with PyTorch starts:
tests/backend/daemon/test_main.py)."""

from __future__ import annotations

import os

import pytest

from protocol.client import OrtholensClient
from protocol.errors import DaemonError
from protocol.params import DetectParams, RetrainParams
from tests.support import DEFAULT_MODEL, INSIDE, REPO, start_engine, stop_engine

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


def test_daemon_detects_without_torch(tmp_path, port):
    """The daemon runs with torch and the training packages unimportable; its pong says
    ONNX Runtime and no PyTorch; a detection equals the in-process one; a retrain gets
    a ``not_found`` error that names the missing PyTorch."""
    from backend.inference.detect import run_detect

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    tile = INSIDE
    assert tile.is_file(), f"held-out tile missing: {tile} (set ORTHOLENS_DATA)"
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "ORTHOLENS_USER_MODELS": str(tmp_path / "user-models"),
           "ORTHOLENS_JOBS_DIR": str(tmp_path / "jobs")}
    endpoint, proc = start_engine(tmp_path / "daemon.log", port, cwd=tmp_path, env=env,
                                  wait_s=60)
    try:
        with OrtholensClient(endpoint, timeout_s=10) as c:
            pong = c.ping()
            assert pong["device"] == "cpu"
            info = pong["device_info"]
            assert info["kind"] == "cpu" and info["runtime"] == "onnxruntime"
            assert info["torch"] is None and info["cores"] == os.cpu_count()
            assert DEFAULT_MODEL in [m["id"] for m in c.models()]
            got = c.detect(DetectParams(source={"kind": "file", "path": str(tile)},
                                        model=DEFAULT_MODEL), job_timeout_s=300)["features"]
            with pytest.raises(DaemonError) as err:
                c.retrain(RetrainParams(model=DEFAULT_MODEL, source={"kind": "file",
                                                             "path": str(tile)},
                                        crs="EPSG:32651", features=[]),
                          job_timeout_s=60)
        assert err.value.code == "not_found" and "PyTorch" in str(err.value)
    finally:
        stop_engine(proc, wait_s=10)
    log = (tmp_path / "daemon.log").read_text()
    assert "blocked by the test" not in log, log[-2000:]
    want = run_detect(DetectParams(source={"kind": "file", "path": str(tile)},
                                   model=DEFAULT_MODEL), [])["features"]
    assert got and [(f["wkt"], f["score"]) for f in got] == [(f["wkt"], f["score"])
                                                            for f in want]


