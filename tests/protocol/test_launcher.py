"""protocol.launcher: starting a daemon (a real ``python -m backend``), finding one that
answers, reporting one that dies; and the interpreter, folders and environment it gets."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from protocol.errors import DaemonUnavailable
from protocol.launcher import (_child_env, _tail, default_backend_python, ensure_daemon,
                               log_dir, port_open, repo_dir, start_daemon)
from tests.support import LISTENING, REPO, free_port


def test_start_daemon_ensure_daemon_and_sigterm(tmp_path):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    log = tmp_path / "d.log"
    proc = start_daemon(sys.executable, port, str(REPO), wait_s=60, log_path=str(log),
                        token="tok")
    try:
        assert proc.poll() is None
        with ensure_daemon(endpoint, sys.executable, str(REPO), token="tok") as c:
            assert c.process is None  # it was already running: nothing started
            assert c.ping()["type"] == "pong"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        text = log.read_text()
        assert LISTENING.format(port) in text and "Traceback" not in text
        # nothing answers now: ensure_daemon starts a fresh one
        with ensure_daemon(endpoint, sys.executable, str(REPO), token="tok",
                           timeout_s=5) as c:
            assert c.process is not None and c.process.poll() is None
            assert c.ping()["type"] == "pong"
            c.process.send_signal(signal.SIGTERM)
            assert c.process.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_start_daemon_reports_a_dying_daemon(tmp_path):
    with pytest.raises(DaemonUnavailable, match="No module named backend"):
        start_daemon(sys.executable, free_port(), str(tmp_path), wait_s=30,
                     log_path=str(tmp_path / "d.log"))


def test_the_interpreter_and_the_log_folder_come_from_the_environment(monkeypatch, tmp_path):
    assert repo_dir() == REPO
    monkeypatch.setenv("ORTHOLENS_BACKEND_PYTHON", "/opt/engine/bin/python")
    assert default_backend_python() == "/opt/engine/bin/python"
    monkeypatch.delenv("ORTHOLENS_BACKEND_PYTHON")
    assert default_backend_python() == str(REPO / ".venv" / "backend" / "bin" / "python")
    monkeypatch.setenv("ORTHOLENS_LOG_DIR", str(tmp_path))
    assert log_dir() == tmp_path
    monkeypatch.delenv("ORTHOLENS_LOG_DIR")
    assert log_dir().name.startswith("ortholens-")


def test_the_child_environment_drops_qgis_python_paths_and_carries_the_token(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/qgis/python")
    monkeypatch.setenv("PYTHONPATH", "/qgis/python/plugins")
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    env = _child_env({"EXTRA": "1"}, "s3cret")
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env
    assert env["EXTRA"] == "1" and env["ORTHOLENS_TOKEN"] == "s3cret"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == os.environ["PATH"]
    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    assert "ORTHOLENS_TOKEN" not in _child_env(None, None)


def test_tail_of_a_log_and_of_a_missing_one(tmp_path):
    log = tmp_path / "d.log"
    log.write_bytes(b"a" * 5000 + b"\nlast line \xff\n")
    tail = _tail(log, max_bytes=100)
    assert tail.endswith("last line \ufffd") and len(tail) <= 100
    assert _tail(tmp_path / "none.log").startswith("(no log: ")


def test_port_open():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert port_open("127.0.0.1", s.getsockname()[1])
    assert not port_open("127.0.0.1", free_port())
