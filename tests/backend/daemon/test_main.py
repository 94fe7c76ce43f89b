"""``python -m backend`` (backend.daemon.main): its options, the start-up refusals it
answers with exit status 2, and the ONNX export of models that lack one when a daemon
starts (the CLI as a real process: tests/backend/daemon/test_daemon.py)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import protocol as P
from backend.daemon import main as M
from backend.daemon.server import DEFAULT_MAX_QUEUE, DEFAULT_WORKERS
from protocol.client import OrtholensClient
from protocol.params import DetectParams
from tests.support import DEFAULT_MODEL, INSIDE, REPO, start_engine, stop_engine


def test_the_options_and_their_defaults(monkeypatch):
    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    a = M._parser().parse_args([])
    assert (a.host, a.port, a.token) == ("127.0.0.1", 5591, None)
    assert (a.host, a.port) == (P.DEFAULT_HOST, P.DEFAULT_PORT)
    assert (a.workers, a.max_queue) == (1, 256) == (DEFAULT_WORKERS, DEFAULT_MAX_QUEUE)
    assert not a.restrict_paths and not a.resume_jobs and a.jobs_dir is None
    assert a.log_level == "INFO"
    monkeypatch.setenv("ORTHOLENS_TOKEN", "from-env")
    a = M._parser().parse_args(["--port", "0", "--workers", "3", "--log-level", "debug",
                                "--restrict-paths", "--jobs-dir", "/tmp/j"])
    assert (a.port, a.workers, a.log_level, a.token) == (0, 3, "DEBUG", "from-env")
    assert a.restrict_paths and a.jobs_dir == "/tmp/j"


def test_the_precision_option_takes_the_environment_as_default(monkeypatch, capsys):
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    assert M._parser().parse_args([]).precision == "auto"
    assert M._parser().parse_args(["--precision", "FP32"]).precision == "fp32"
    monkeypatch.setenv("ORTHOLENS_PRECISION", "fp32")
    assert M._parser().parse_args([]).precision == "fp32"
    with pytest.raises(SystemExit) as e:
        M._parser().parse_args(["--precision", "int4"])
    assert e.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_an_engine_started_with_fp32_says_so_and_detects_with_fp32(tmp_path, port):
    """``--precision fp32``: the engine's ``pong`` says so and a 0.1 m held-out tile,
    which the shipped card's INT8 graph serves, is detected with the fp32 graph."""
    env = {"PYTHONPATH": str(REPO), "ORTHOLENS_USER_MODELS": str(tmp_path / "user-models"),
           "ORTHOLENS_JOBS_DIR": str(tmp_path / "jobs"), "ORTHOLENS_PRECISION": "auto"}
    endpoint, proc = start_engine(tmp_path / "daemon.log", port, cwd=tmp_path, env=env,
                                  wait_s=60, args=["--precision", "fp32"])
    try:
        with OrtholensClient(endpoint, timeout_s=10) as c:
            assert c.ping()["precision"] == "fp32"
            res = c.detect(DetectParams(source={"kind": "file", "path": str(INSIDE)},
                                        model=DEFAULT_MODEL), job_timeout_s=300)
        assert (res["stats"]["graph"], res["stats"]["precision"]) == ("model.onnx", "fp32")
        assert res["features"]
    finally:
        stop_engine(proc, wait_s=10)


def test_refusals_exit_2_with_one_line_on_stderr(capsys, monkeypatch):
    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    assert M.main(["--port", "70000"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "ortholens daemon: --port 70000 is not a TCP port\n"
    assert M.main(["--host", "192.0.2.1", "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("ortholens daemon: binding '192.0.2.1' (not loopback) "
                                 "requires a token (--token or ORTHOLENS_TOKEN)\n")
    assert M.main(["--workers", "0", "--port", "0"]) == 2
    assert capsys.readouterr().err == ("ortholens daemon: workers and max_queue must be "
                                       ">= 1\n")


def _models_folder(tmp_path, files):
    """A model folder holding the shipped model's ``files`` and ``defaults.json``."""
    models = tmp_path / "models"
    (models / DEFAULT_MODEL).mkdir(parents=True)
    shutil.copy2(REPO / "models" / "defaults.json", models / "defaults.json")
    for name in files:
        shutil.copy2(REPO / "models" / DEFAULT_MODEL / name, models / DEFAULT_MODEL / name)
    return models


def test_nothing_to_export_without_weights_or_with_an_onnx_file(tmp_path, monkeypatch,
                                                                 user_dir):
    """A card without weights cannot be exported, one with its ONNX file need not be:
    both are left as they are; a model folder that cannot be read exports nothing and
    raises nothing."""
    models = _models_folder(tmp_path, ["card.json"])
    monkeypatch.setenv("ORTHOLENS_MODELS", str(models))
    assert M.export_missing_onnx() == []
    assert sorted(p.name for p in (models / DEFAULT_MODEL).iterdir()) == ["card.json"]
    (models / DEFAULT_MODEL / "weights.safetensors").write_bytes(b"w")
    (models / DEFAULT_MODEL / "model.onnx").write_bytes(b"o")
    assert M.export_missing_onnx() == []
    assert (models / DEFAULT_MODEL / "model.onnx").read_bytes() == b"o"
    (models / DEFAULT_MODEL / "card.json").write_text(json.dumps({"id": 1}))
    assert M.export_missing_onnx() == []


def test_missing_onnx_is_exported_when_the_daemon_starts(tmp_path, port):
    """A model folder with weights but no ``model.onnx`` (an engine installed from a
    checkout before any export): the started daemon writes the ONNX file and then
    detects with it."""
    models = _models_folder(tmp_path, ["card.json", "weights.safetensors"])
    onnx = models / DEFAULT_MODEL / "model.onnx"
    env = {"PYTHONPATH": str(REPO), "ORTHOLENS_MODELS": str(models),
           "ORTHOLENS_USER_MODELS": str(tmp_path / "user-models"),
           "ORTHOLENS_JOBS_DIR": str(tmp_path / "jobs")}
    log = tmp_path / "daemon.log"
    endpoint, proc = start_engine(log, port, cwd=tmp_path, env=env, wait_s=60)
    try:
        # a hang guard, not a timing check: the export takes seconds, more when loaded
        deadline = time.monotonic() + 300
        while (f"exported {DEFAULT_MODEL}" not in log.read_text() and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert f"exported {DEFAULT_MODEL}" in log.read_text(), log.read_text()[-2000:]
        assert onnx.is_file()
        assert INSIDE.is_file(), f"held-out tile missing: {INSIDE} (set ORTHOLENS_DATA)"
        with OrtholensClient(endpoint, timeout_s=10) as c:
            res = c.detect(DetectParams(source={"kind": "file", "path": str(INSIDE)},
                                        model=DEFAULT_MODEL), job_timeout_s=300)
        assert res["stats"]["runtime"] == "onnxruntime" and res["features"]
    finally:
        stop_engine(proc, wait_s=10)
