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
