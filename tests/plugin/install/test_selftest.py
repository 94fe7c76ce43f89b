"""The engine's self-test after a setup: start, ping, models, a detection on the
generated chip, stop; and the device in words."""

from __future__ import annotations

import pytest

from helpers import BACKEND_PYTHON, DEFAULT_MODEL, MODELS, REPO
from plugin.install.selftest import describe_device, run_self_test

#: Marks a test that starts the repository's engine.
needs_engine = pytest.mark.skipif(
    not (BACKEND_PYTHON.is_file() and (MODELS / DEFAULT_MODEL).is_dir()),
    reason=f"needs {BACKEND_PYTHON} and the model {DEFAULT_MODEL}")


def _port(lines):
    """The engine's port, from the self-test's first line."""
    return int(lines[0].rsplit(":", 1)[1].rstrip("…"))


def test_the_device_in_words():
    gpu = {"kind": "cuda", "name": "NVIDIA H200", "memory_gib": 139.8, "torch": "2.4.1"}
    assert describe_device(gpu) == "NVIDIA H200, 139.8 GiB, PyTorch 2.4.1"
    cpu = {"kind": "cpu", "cores": 2, "runtime": "onnxruntime"}
    assert describe_device(cpu) == "CPU, 2 cores, ONNX Runtime (no PyTorch)"
    assert describe_device({}, "cpu") == "cpu"
    assert describe_device(None) == "an unknown device"


@pytest.mark.e2e
@needs_engine
def test_the_repositorys_engine_passes_and_is_stopped(tmp_path):
    from protocol.launcher import port_open

    lines = []
    report = run_self_test(str(BACKEND_PYTHON), str(REPO), tmp_path / "selftest",
                           lines.append, timeout_s=120)
    assert DEFAULT_MODEL in report.models and report.default_model in report.models
    assert report.version != "?" and report.start_s > 0 and report.detect_s > 0
    assert report.polygons >= 0
    assert lines[0].startswith("Self-test: starting the engine on 127.0.0.1:")
    assert any(t.startswith("Self-test: ping answered") for t in lines)
    assert lines[-1].startswith("Self-test: detection on the 256 x 256 px test chip")
    assert (tmp_path / "selftest" / "chip.tif").is_file()
    assert (tmp_path / "selftest" / "daemon.log").is_file()
    assert not port_open("127.0.0.1", _port(lines))  # stopped


@pytest.mark.e2e
@needs_engine
def test_a_cancelled_self_test_stops_its_engine(tmp_path):
    """Cancelled before the detection: InterruptedError, and the engine is stopped."""
    from protocol.launcher import port_open

    lines = []
    with pytest.raises(InterruptedError):
        run_self_test(str(BACKEND_PYTHON), str(REPO), tmp_path, lines.append,
                      is_cancelled=lambda: True, timeout_s=120)
    assert not any("detection on the" in t for t in lines)
    assert not port_open("127.0.0.1", _port(lines))
