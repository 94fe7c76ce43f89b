"""The dock's engine section: the status line says which engine answers, where it
runs and on what device."""

from __future__ import annotations


def test_dock_status_says_where_the_engine_runs_and_its_device():
    from plugin.dock.status import device_text, pong_text
    from plugin.settings import DaemonSettings

    local = DaemonSettings("tcp://127.0.0.1:5591", None, None, None)
    remote = DaemonSettings("tcp://10.0.0.5:5591", None, None, "t")
    cpu = {"version": "0.1.0", "device": "cpu",
           "device_info": {"kind": "cpu", "cores": 16, "runtime": "onnxruntime"}}
    gpu = {"version": "0.1.0", "device": "cuda:0 NVIDIA H200",
           "device_info": {"kind": "cuda", "name": "NVIDIA H200", "memory_gib": 139.8}}
    assert pong_text(cpu, local) == ("Engine 0.1.0 on this computer "
                                     "(tcp://127.0.0.1:5591) — CPU, 16 cores")
    assert pong_text(gpu, remote) == ("Engine 0.1.0 on 10.0.0.5 (remote) "
                                      "(tcp://10.0.0.5:5591) — GPU NVIDIA H200, 139.8 GiB")
    assert device_text({"device": "cpu"}) == "cpu"  # an engine without device_info
    assert "tcp://x:1" in pong_text({}, "tcp://x:1")


def test_status_names_the_onnx_provider_and_the_idle_exit():
    """The status line says which ONNX Runtime provider runs the models, and that an
    engine started by the plugin stops after its minutes without work."""
    from plugin.dock.status import pong_text
    from plugin.settings import DaemonSettings

    local = DaemonSettings("tcp://127.0.0.1:5591", None, None, None)
    pong = {"version": "0.1.0", "idle_exit_s": 1800.0,
            "device_info": {"kind": "cuda", "name": "NVIDIA H200", "memory_gib": 139.8,
                            "provider": "CUDAExecutionProvider"}}
    assert pong_text(pong, local) == (
        "Engine 0.1.0 on this computer (tcp://127.0.0.1:5591) — GPU NVIDIA H200, "
        "139.8 GiB, ONNX Runtime CUDA; it stops after 30 min without work")
    assert "stops" not in pong_text(dict(pong, idle_exit_s=0), local)
    assert "fp32 graphs only" in pong_text(dict(pong, precision="fp32"), local)
    assert "fp32" not in pong_text(dict(pong, precision="auto"), local)


def test_an_engine_started_from_the_plugin_gets_the_idle_exit(monkeypatch):
    from plugin.settings import DEFAULT_IDLE_EXIT_MIN, daemon_settings, idle_exit_min

    monkeypatch.delenv("ORTHOLENS_IDLE_EXIT_MIN", raising=False)
    assert DEFAULT_IDLE_EXIT_MIN == 30.0
    monkeypatch.setenv("ORTHOLENS_IDLE_EXIT_MIN", "12.5")
    assert idle_exit_min() == 12.5
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    assert daemon_settings().start_args() == ["--idle-exit-s", "750", "--precision", "auto"]
    monkeypatch.setenv("ORTHOLENS_PRECISION", "FP32")
    assert daemon_settings().start_args()[2:] == ["--precision", "fp32"]
    monkeypatch.setenv("ORTHOLENS_IDLE_EXIT_MIN", "nonsense")
    assert idle_exit_min() == DEFAULT_IDLE_EXIT_MIN
    monkeypatch.setenv("ORTHOLENS_IDLE_EXIT_MIN", "-3")
    assert idle_exit_min() == 0.0
