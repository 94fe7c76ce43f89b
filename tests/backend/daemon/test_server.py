"""backend.daemon.server in a thread, with a fake detect function: the requests it
answers, queue, cancel, security, concurrency and heartbeats (the client's side of it:
tests/protocol/test_client.py)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import zmq

import protocol as P
from protocol.framing import is_loopback
from backend.daemon.server import Server
from protocol.client import OrtholensClient
from protocol.errors import DaemonError
from protocol.params import DetectParams
from tests.support import (DEFAULT_MODEL, FILE, PIX, REPO, FakeDetect, ManualClock, raw_dealer,
                           recv, running_server as running, send_detect, wait_for)


# ----------------------------------------------------------------------------- basics

def test_ping_models_status_through_client(monkeypatch):
    with running() as (server, _), OrtholensClient(server.endpoint) as c:
        pong = c.ping()
        assert pong["type"] == "pong" and pong["protocol"] == P.PROTOCOL_VERSION
        assert pong["version"] == "0.1.0" and pong["device"] == "test"
        assert isinstance(pong["models"], list) and pong["jobs"] == 0
        assert isinstance(c.models(), list)
        assert c.status() == []
        res = c.detect(DetectParams(source=FILE, model="echo"))
        assert res["type"] == "result" and res["crs"] == "EPSG:2056"
        assert res["features"][0]["model"] == "echo"
        jobs = c.status()
        assert [j["state"] for j in jobs] == ["done"] and jobs[0]["fraction"] == 1.0
        assert c.status(res["job_id"]) == jobs
        with pytest.raises(DaemonError) as e:
            c.status("f" * 32)
        assert e.value.code == P.E_NOT_FOUND
        with pytest.raises(DaemonError) as e:
            c.cancel("f" * 32)
        assert e.value.code == P.E_NOT_FOUND


def test_handle_never_raises_on_bare_frames():
    server = Server(port=0, device="test", detect_fn=FakeDetect())  # not even bound
    assert server.handle([]) == []
    for frames in ([b"peer"], [b"peer", b""], [b"peer", b"\x00" * 10],
                   [zmq.Frame(b"peer"), zmq.Frame(b'{"v":1,"id":7}')]):
        (identity, reply), = server.handle(frames)
        assert identity == b"peer"
        assert reply["type"] == "error"
        assert reply["code"] in (P.E_BAD_REQUEST, P.E_UNKNOWN_TYPE)
        assert reply["id"] is None


def test_internal_error_in_handler_is_answered(monkeypatch):
    from backend.daemon import handlers
    server = Server(port=0, device="test", detect_fn=FakeDetect())
    monkeypatch.setattr(handlers, "_cards", lambda: 1 / 0)
    (_, reply), = server.handle([b"p", P.encode(P.request("models", id="m1"))[0]])
    assert reply["type"] == "error" and reply["code"] == P.E_INTERNAL
    assert reply["id"] == "m1"
    (_, pong), = server.handle([b"p", P.encode(P.request("ping", id="p1"))[0]])
    assert pong["type"] == "pong" and pong["models"] == []


def test_detect_errors_reach_the_client():
    with running() as (server, _), OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as e:
            c.detect(DetectParams(source=FILE, model="fail"))
        assert e.value.code == P.E_INVALID_INPUT and "no CRS" in e.value.message
        assert e.value.job_id
        with pytest.raises(DaemonError) as e:
            c.detect(DetectParams(source=FILE, model="crash"))
        assert e.value.code == P.E_INTERNAL and "boom" in e.value.message
        with pytest.raises(DaemonError) as e:
            c.detect(DetectParams(source=FILE, model="badresult"))
        assert e.value.code == P.E_INTERNAL
        assert c.ping()["jobs"] == 0
        assert [j["state"] for j in c.status()] == ["error"] * 3


def test_pixels_are_copied_and_token_not_passed_on():
    pixels = np.arange(3 * 40 * 50, dtype=np.uint16).reshape(3, 40, 50)
    with running(token="t0ken") as (server, _), \
            OrtholensClient(server.endpoint, token="t0ken") as c:
        stats = c.detect(DetectParams(source=PIX, model="echo"), pixels=pixels)["stats"]
    assert stats["sum"] == int(pixels.sum())
    assert stats["writeable"] and stats["owndata"]
    assert stats["token"] is None


def test_progress_is_throttled():
    """A job's progress goes out at most once per ``progress_interval_s`` of the
    server's clock, the first call always: calls while the clock stands still send
    nothing more, then 400 calls 1/32 s apart send one event per 1/8 s."""
    clock = ManualClock()

    def job(request, arrays, progress, cancelled):
        for i in range(40):
            progress(i / 1000, "still")
        for i in range(400):
            clock.advance(1 / 32)
            progress((40 + i) / 1000, f"tile {i}")
        return {"crs": "EPSG:2056", "features": [], "stats": {}}

    seen = []
    with running(detect_fn=job, clock=clock, progress_interval_s=1 / 8) as (server, _), \
            OrtholensClient(server.endpoint) as c:
        c.detect(DetectParams(source=FILE, model="echo"),
                 on_progress=lambda f, m: seen.append((f, m)))
    # sent: the first call, then every 4th tick of 1/32 s (ticks 4, 8, ... 400)
    assert [m for _, m in seen] == ["still"] + [f"tile {i}" for i in range(3, 400, 4)]
    assert [f for f, _ in seen] == [0.0] + [(40 + i) / 1000 for i in range(3, 400, 4)]


# ----------------------------------------------------------------------------- queue

def test_queue_is_fifo():
    with running(workers=1) as (server, fake), raw_dealer(server.endpoint) as s:
        send_detect(s, "block", "r0")
        assert recv(s)["type"] == "accepted"
        wait_for(lambda: fake.started == ["r0"])
        ids = [f"r{i}" for i in range(1, 6)]
        for rid in ids:
            send_detect(s, "echo", rid)
            assert recv(s)["type"] == "accepted"
        fake.gate.set()
        results = [recv(s) for _ in range(6)]
    assert [r["type"] for r in results] == ["result"] * 6
    assert [r["id"] for r in results] == ["r0"] + ids
    assert fake.started == ["r0"] + ids


def test_cancel_running_job():
    with running() as (server, fake), raw_dealer(server.endpoint) as s, \
            OrtholensClient(server.endpoint) as other:
        send_detect(s, "loop", "d1")
        job_id = recv(s)["job_id"]
        ev = recv(s)
        assert ev["type"] == "progress" and ev["id"] == "d1" and ev["job_id"] == job_id
        ack = other.cancel(job_id)  # from another client
        assert ack["type"] == "cancelled" and ack["job_id"] == job_id
        assert ack["state"] == "running"
        events = []
        while not events or events[-1]["type"] == "progress":
            events.append(recv(s))
        assert events[-1]["type"] == "cancelled" and events[-1]["id"] == "d1"
        assert events[-1]["job_id"] == job_id
        assert not s.poll(300), "nothing may follow the terminal event"
        assert fake.cancelled == ["d1"]
        assert other.status(job_id)[0]["state"] == "cancelled"


def test_cancel_queued_job_never_runs():
    with running(workers=1) as (server, fake), raw_dealer(server.endpoint) as s, \
            OrtholensClient(server.endpoint) as other:
        send_detect(s, "block", "a")
        recv(s)
        wait_for(lambda: fake.started == ["a"])
        send_detect(s, "echo", "b")
        job_b = recv(s)["job_id"]
        assert other.status(job_b)[0]["state"] == "queued"
        ack = other.cancel(job_b)
        assert ack["state"] == "cancelled"
        ev = recv(s)
        assert (ev["type"], ev["id"], ev["job_id"]) == ("cancelled", "b", job_b)
        fake.gate.set()
        ev = recv(s)
        assert (ev["type"], ev["id"]) == ("result", "a")
        assert not s.poll(300)
    assert fake.started == ["a"]


def test_busy_when_queue_full():
    with running(workers=1, max_queue=2) as (server, fake), raw_dealer(server.endpoint) as s:
        send_detect(s, "block", "a")
        recv(s)
        wait_for(lambda: fake.started == ["a"])
        for rid in ("b", "c"):
            send_detect(s, "echo", rid)
            assert recv(s)["type"] == "accepted"
        send_detect(s, "echo", "d")
        rep = recv(s)
        assert (rep["type"], rep["code"], rep["id"]) == ("error", P.E_BUSY, "d")
        fake.gate.set()
        assert sorted(recv(s)["id"] for _ in range(3)) == ["a", "b", "c"]
        send_detect(s, "echo", "e")  # room again
        assert recv(s)["type"] == "accepted"


def test_busy_when_queued_pixels_too_big():
    px = np.zeros((3, 100, 100), np.uint8)  # 30000 bytes
    with running(workers=1, max_queue_bytes=50_000) as (server, fake), \
            raw_dealer(server.endpoint) as s:
        send_detect(s, "block", "a")
        recv(s)
        wait_for(lambda: fake.started == ["a"])  # running jobs do not count
        s.send_multipart(P.encode(P.request("detect", id="b", source=PIX, model="echo"), [px]))
        assert recv(s)["type"] == "accepted"
        s.send_multipart(P.encode(P.request("detect", id="c", source=PIX, model="echo"), [px]))
        rep = recv(s)
        assert (rep["type"], rep["code"], rep["id"]) == ("error", P.E_BUSY, "c")
        send_detect(s, "echo", "d")  # no pixels: still fine
        assert recv(s)["type"] == "accepted"


def test_stop_ends_queued_and_running_jobs():
    with running(workers=1) as (server, fake), raw_dealer(server.endpoint) as s:
        send_detect(s, "block", "a")
        recv(s)
        wait_for(lambda: fake.started == ["a"])
        send_detect(s, "echo", "b")
        recv(s)
        server.stop()
        got = {r["id"]: r for r in (recv(s), recv(s))}
    assert got["a"]["type"] == got["b"]["type"] == "error"
    assert got["a"]["code"] == got["b"]["code"] == P.E_BUSY
    assert fake.started == ["a"]


# ----------------------------------------------------------------------------- security

def test_token_required_and_checked():
    with running(token="s3cret") as (server, fake):
        for token in (None, "wrong", "s3cre", "s3cret\u00e9"):
            with OrtholensClient(server.endpoint, token=token) as c:
                for call in (c.ping, lambda: c.detect(DetectParams(source=FILE, model="echo"))):
                    with pytest.raises(DaemonError) as e:
                        call()
                    assert e.value.code == P.E_FORBIDDEN
        with raw_dealer(server.endpoint) as s:  # a lone surrogate must not crash it
            s.send_multipart([b'{"v":1,"type":"ping","id":"x","token":"\\ud800"}'])
            assert recv(s)["code"] == P.E_FORBIDDEN
        with OrtholensClient(server.endpoint, token="s3cret") as c:
            assert c.ping()["type"] == "pong"
            assert c.detect(DetectParams(source=FILE, model="echo"))["type"] == "result"
    assert len(fake.started) == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "example.org", ""])
def test_non_loopback_bind_needs_token(host):
    with pytest.raises(ValueError, match="token"):
        Server(host=host, port=0)
    s = Server(host=host, port=0, token="t")  # constructed, never bound
    assert s.restrict_paths


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_token(host):
    assert is_loopback(host)
    assert not Server(host=host, port=0).restrict_paths


def test_ipv6_loopback_bind():
    with running(host="::1") as (server, _), OrtholensClient(server.endpoint) as c:
        assert server.endpoint.startswith("tcp://[::1]:")
        assert c.ping()["type"] == "pong"


def test_paths_outside_allowed_roots_are_forbidden(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "root2").mkdir()
    (tmp_path / "secret.tif").write_bytes(b"x")
    inside = root / "sub" / "a.tif"
    inside.write_bytes(b"x")
    os.symlink(tmp_path / "secret.tif", root / "link.tif")
    os.symlink(inside, tmp_path / "outside_link.tif")
    forbidden = ["/etc/passwd", str(tmp_path / "secret.tif"), str(root / "link.tif"),
                 str(root / ".." / "secret.tif"), str(tmp_path / "root2" / "a.tif"),
                 str(tmp_path / "root")[:-1] + "t.tif"]
    allowed = [str(inside), str(root / "sub" / ".." / "sub" / "a.tif"),
               str(tmp_path / "outside_link.tif"), str(root / "missing.tif")]
    with running(restrict_paths=True, allowed_roots=[str(root)]) as (server, fake), \
            OrtholensClient(server.endpoint) as c:
        for path in forbidden:
            with pytest.raises(DaemonError) as e:
                c.detect(DetectParams(source={"kind": "file", "path": path}, model="echo"))
            assert e.value.code == P.E_FORBIDDEN, path
        for path in allowed:
            res = c.detect(DetectParams(source={"kind": "file", "path": path}, model="echo"))
            # the job sees the resolved path, so a later symlink swap cannot escape
            assert res["stats"]["path"] == os.path.realpath(path)
        assert c.detect(DetectParams(source=PIX, model="echo"),
                        pixels=np.zeros((3, 4, 4), np.uint8))["type"] == "result"
    assert len(fake.started) == len(allowed) + 1


def test_paths_unrestricted_on_loopback_by_default(tmp_path):
    with running(allowed_roots=[str(tmp_path)]) as (server, _), \
            OrtholensClient(server.endpoint) as c:
        res = c.detect(DetectParams(source={"kind": "file", "path": "/etc/passwd"},
                                    model="echo"))
        assert res["type"] == "result"


def test_no_roots_means_no_files(monkeypatch):
    monkeypatch.delenv("ORTHOLENS_ROOTS", raising=False)
    with running(restrict_paths=True) as (server, _), OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as e:
            c.detect(DetectParams(source=FILE, model="echo"))
        assert e.value.code == P.E_FORBIDDEN


# ----------------------------------------------------------------------------- clients

def test_twenty_concurrent_clients():
    errors = []

    def client_thread(n):
        try:
            with OrtholensClient(server.endpoint, timeout_s=10) as c:
                for k in range(5):
                    if (n + k) % 2:
                        assert c.ping()["type"] == "pong"
                    else:
                        px = np.full((3, 8, 8), n * 10 + k, np.uint8)
                        res = c.detect(DetectParams(source=PIX, model=f"echo-{n}-{k}"), pixels=px)
                        assert res["features"][0]["model"] == f"echo-{n}-{k}"
                        assert res["stats"]["sum"] == int(px.sum())
        except Exception as exc:  # collected: assertion errors in threads are lost
            errors.append((n, repr(exc)))

    with running(workers=2) as (server, fake):
        threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert len(fake.started) == sum(1 for n in range(20) for k in range(5) if not (n + k) % 2)


def test_models_reply_marks_the_default_model(monkeypatch):
    """The models reply flags the model a new user should get (which one:
    tests/backend/models/test_catalog.py): the fast single model on a CPU daemon."""
    monkeypatch.delenv("ORTHOLENS_DEFAULT_MODEL", raising=False)
    with running() as (server, _), OrtholensClient(server.endpoint) as c:
        flagged = [m["id"] for m in c.models() if m.get("default")]
    assert flagged == [DEFAULT_MODEL]


_FROZEN_CLIENT = """
import sys, zmq
import protocol as P
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
s.send_multipart(P.encode(P.request("detect", id="frozen", model="spin",
                                    source={"kind": "file", "path": sys.argv[2]})))
assert s.poll(10000)
print(P.decode(s.recv_multipart(), P.MAX_REPLY_HEADER_BYTES)[0]["type"], flush=True)
import time
time.sleep(600)
"""


def test_heartbeats_cancel_the_jobs_of_a_frozen_client(monkeypatch):
    """A client that stops answering without closing its TCP connection (a frozen VM, a
    pulled cable: here SIGSTOP) is dropped by the ZMTP heartbeat and its running job
    cancelled: a job with no end of its own, so the heartbeat is the only way it ends
    (the test shortens the heartbeat; how long it takes is not asserted)."""
    import signal
    import subprocess
    import sys
    from backend.daemon import server as S
    monkeypatch.setattr(S, "HEARTBEAT_IVL_MS", 100)
    monkeypatch.setattr(S, "HEARTBEAT_TIMEOUT_MS", 500)
    with running() as (server, fake):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        child = subprocess.Popen([sys.executable, "-c", _FROZEN_CLIENT, server.endpoint,
                                  FILE["path"]], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert child.stdout.readline().strip() == "accepted"
            wait_for(lambda: "frozen" in fake.started)
            child.send_signal(signal.SIGSTOP)  # alive, connection open, silent
            wait_for(lambda: "frozen" in fake.cancelled, timeout_s=120)  # a hang guard
        finally:
            child.kill()
            child.wait(10)


def _still_serving(server) -> bool:
    """True when the server's loop still runs after several of its 0.1 s polls."""
    import time
    time.sleep(0.5)
    return server._thread.is_alive()


class _Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_idle_exit_waits_for_the_jobs_then_stops_the_engine():
    """An engine with an idle exit stops once it has had no request, no job and no
    upload for that long on its clock, and never while a job runs."""
    clock = _Clock()
    with running(idle_exit_s=60, clock=clock) as (server, fake), \
            raw_dealer(server.endpoint) as s:
        send_detect(s, "block", "b1")
        assert recv(s)["type"] == "accepted"
        assert wait_for(lambda: fake.started == ["b1"])
        clock.t += 3600                      # an hour of a running job: no exit
        assert _still_serving(server)
        fake.gate.set()
        assert wait_for(lambda: server.table.active_count() == 0)
        clock.t += 59                        # idle, but not long enough
        assert _still_serving(server)
        clock.t += 2
        assert wait_for(lambda: not server._thread.is_alive(), timeout_s=5)


def test_no_idle_exit_by_default():
    clock = _Clock()
    with running(clock=clock) as (server, _):
        assert server.idle_exit_s == 0
        clock.t += 10 ** 6
        assert _still_serving(server)
