"""Faults: a daemon that dies mid-job, a client that goes away mid-job, and fair
queueing across clients.

The dead-daemon test kills a real ``python -m backend`` process (SIGKILL) while it
detects on the Vienna orthophoto; the others use the server in a thread with the fake
detect function of ``test_server.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from backend.config import data_dir
import protocol as P
from protocol.client import OrtholensClient
from protocol.launcher import start_daemon
from protocol.errors import DaemonUnavailable
from protocol.params import DetectParams
from test_server import FILE, job_state, raw_dealer, recv, running, send_detect, wait_for

REPO = Path(__file__).resolve().parents[3]
VIENNA = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"


# ----------------------------------------------------------------------------- daemon dies

def test_client_notices_a_killed_daemon_within_seconds(tmp_path, get_free_port):
    """SIGKILL during a real detection: DaemonUnavailable a few seconds later (status
    checks go unanswered), not after the 600 s job timeout."""
    port = get_free_port()
    proc = start_daemon(sys.executable, port, str(REPO), wait_s=60,
                        log_path=str(tmp_path / "d.log"))
    killed = []

    def on_progress(fraction, message):
        if not killed:  # the job runs: kill the daemon outright
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed.append(time.monotonic())

    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=3) as c:
            with pytest.raises(DaemonUnavailable, match="stopped answering") as ei:
                # 200 m x 200 m at 0.1 m: a job of many seconds on a CPU
                c.detect(DetectParams(source={"kind": "file", "path": str(VIENNA)},
                                      model="pv-unet-efl0",
                                      extent=[-1700, 338300, -1500, 338500]),
                         on_progress=on_progress, job_timeout_s=600, liveness_s=1.0)
            took = time.monotonic() - killed[0]
        assert "crashed or was killed" in str(ei.value)
        print(f"daemon killed: DaemonUnavailable after {took:.1f} s")
        assert took < 1.0 + 3 + 3, f"noticed only after {took:.1f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class _FakeDaemon:
    """A ROUTER that accepts one detect, then answers status checks as told:
    ``mode`` "silent" (never), "running" (job running), "unknown" (not_found)."""

    def __init__(self, port: int, mode: str):
        self.mode, self.statuses = mode, 0
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(f"tcp://127.0.0.1:{port}")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            if not self.router.poll(20):
                continue
            ident, *frames = self.router.recv_multipart()
            req = P.decode(frames)[0]
            if req["type"] == "detect":
                out = P.reply("accepted", req["id"], job_id="j" * 32)
            elif req["type"] == "status":
                self.statuses += 1
                if self.mode == "silent":
                    continue
                if self.mode == "unknown":
                    out = P.error_reply(req["id"], P.E_NOT_FOUND, "no such job")
                else:
                    out = P.reply("status", req["id"], jobs=[
                        {"job_id": "j" * 32, "state": "running", "fraction": 0.5,
                         "message": ""}])
            else:
                out = P.reply("cancelled", req["id"], job_id="j" * 32, state="cancelled")
            self.router.send_multipart([ident] + P.encode(out))

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.router.close()
        self.ctx.term()


@pytest.mark.parametrize("mode, error", [("silent", "stopped answering"),
                                         ("unknown", "no longer knows job")])
def test_dead_or_restarted_daemon_is_reported(mode, error, port):
    fake = _FakeDaemon(port, mode)
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=0.5) as c:
            t0 = time.monotonic()
            with pytest.raises(DaemonUnavailable, match=error):
                c.detect(DetectParams(source=FILE, model="m"), liveness_s=0.3, job_timeout_s=600)
            assert time.monotonic() - t0 < 3
    finally:
        fake.close()
    assert fake.statuses == 1


def test_a_live_daemon_answering_status_keeps_the_job_waiting(port):
    """A busy job that sends no events is not mistaken for a dead daemon: it runs into
    the job timeout only, after several answered status checks."""
    fake = _FakeDaemon(port, "running")
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=0.5) as c:
            with pytest.raises(DaemonUnavailable, match="no news of job"):
                c.detect(DetectParams(source=FILE, model="m"), liveness_s=0.2, job_timeout_s=1.5)
    finally:
        fake.close()
    assert fake.statuses >= 3


# ----------------------------------------------------------------------------- client dies

def test_disconnected_client_gets_its_jobs_cancelled():
    """A client that disconnects mid-job: its running job is cancelled at the next
    progress event (ROUTER_MANDATORY send failure) and its queued job never runs, so
    the worker is free for the next client at once."""
    with running(workers=1, progress_interval_s=0.05) as (server, fake):
        with raw_dealer(server.endpoint) as gone:
            send_detect(gone, "loop", "run")
            run_id = recv(gone)["job_id"]
            assert recv(gone)["type"] == "progress"
            send_detect(gone, "echo", "queued")
            queued_id = recv(gone)["job_id"]
        # the socket is closed: nobody will read these jobs' results
        wait_for(lambda: job_state(server, run_id) == "cancelled", 5)
        assert fake.cancelled == ["run"]
        assert job_state(server, queued_id) == "cancelled"
        with OrtholensClient(server.endpoint) as c:
            st = {j["job_id"]: j for j in c.status()}
            assert "client disconnected" in st[run_id]["message"]
            assert "client disconnected" in st[queued_id]["message"]
            t0 = time.monotonic()
            res = c.detect(DetectParams(source=FILE, model="echo"))
            assert res["type"] == "result" and time.monotonic() - t0 < 2
    assert len(fake.started) == 2 and fake.started[0] == "run"  # "queued" never ran


# ----------------------------------------------------------------------------- fairness

def test_queue_is_round_robin_across_clients():
    """One request of client B is not stuck behind 50 queued jobs of client A."""
    with running(workers=1) as (server, fake), raw_dealer(server.endpoint) as a, \
            raw_dealer(server.endpoint) as b:
        send_detect(a, "block", "a0")
        assert recv(a)["type"] == "accepted"
        wait_for(lambda: fake.started == ["a0"])
        for i in range(1, 51):
            send_detect(a, "echo", f"a{i}")
        assert all(recv(a)["type"] == "accepted" for _ in range(50))
        send_detect(b, "echo", "b1")
        assert recv(b)["type"] == "accepted"
        fake.gate.set()
        assert recv(b)["type"] == "result"
        results = [recv(a) for _ in range(51)]
    assert [r["id"] for r in results] == [f"a{i}" for i in range(51)]  # FIFO per client
    assert fake.started.index("b1") == 2  # after a0 (running) and a1 only
