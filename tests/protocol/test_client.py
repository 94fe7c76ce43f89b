"""protocol.client against a daemon: its answers, cancellation from a callback, time-outs
and stale replies, and a daemon that dies, restarts or stays silent.

The daemon is ``backend.daemon.server`` in a thread with the fake detect function of
``tests.support``, a bare ROUTER that answers as told (:class:`_FakeDaemon`), or a
real ``python -m backend`` process killed mid-detection. The time-outs run on a
:class:`~tests.support.ManualClock` the test moves, never on the machine's speed; how
long they take in seconds is measured by ``python3 build.py load``
(``tools/fault_times.py``).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import zmq

import protocol as P
from protocol.client import OrtholensClient
from protocol.errors import DaemonUnavailable, JobCancelled
from protocol.params import DetectParams
from tests.support import (DEFAULT_MODEL, FILE, VIENNA, ManualClock, in_thread, job_state,
                           running_server as running, start_engine, wait_for)


# ----------------------------------------------------------------------------- cancel, time-outs

def test_client_detect_cancelled_by_callback():
    flag = threading.Event()
    progress = []

    def on_progress(f, m):
        progress.append(f)
        if len(progress) >= 2:
            flag.set()

    with running() as (server, fake), OrtholensClient(server.endpoint) as c:
        with pytest.raises(JobCancelled) as e:
            c.detect(DetectParams(source=FILE, model="loop"), on_progress=on_progress,
                     is_cancelled=flag.is_set)
        wait_for(lambda: job_state(server, e.value.job_id) == "cancelled")
        assert len(fake.cancelled) == 1
        assert c.ping()["type"] == "pong"  # the client is still usable


def test_client_times_out_recreates_socket_and_skips_stale_replies(port):
    """A fake daemon ignores the first request, then answers each with a stale reply
    first and the right one second."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(f"tcp://127.0.0.1:{port}")
    identities = []
    stop = threading.Event()

    def fake_daemon():
        while not stop.is_set():
            if not router.poll(50):
                continue
            ident, raw = router.recv_multipart()
            identities.append(ident)
            req = P.decode([raw])[0]
            if len(identities) == 1:
                continue
            for rid in ("stale-" + req["id"], req["id"]):
                router.send_multipart([ident] + P.encode(P.reply(
                    "pong", rid, version="x", protocol=1, device="cpu", models=[], jobs=0)))

    t = threading.Thread(target=fake_daemon)
    t.start()
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=0.3) as c:
            with pytest.raises(DaemonUnavailable):
                c.ping()
            pong = c.ping(timeout_s=5)
            assert pong["version"] == "x" and not pong["id"].startswith("stale-")
            assert c.ping()["type"] == "pong"
    finally:
        stop.set()
        t.join()
        router.close()
        ctx.term()
    assert len(identities) == 3
    assert identities[0] != identities[1] == identities[2]  # new socket after a timeout


def test_client_unavailable_when_nothing_listens(port):
    """Nothing listens: a request waits for its answer until the client's clock has
    passed ``timeout_s``, not a moment less, and then raises DaemonUnavailable."""
    clock = ManualClock()
    with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=5, clock=clock) as c:
        for call in (c.ping, lambda: c.detect(DetectParams(source=FILE, model="echo"))):
            with in_thread(clock, call) as pending:
                clock.wait_reads(1)  # the request is sent: its wait started
                clock.advance(4.9)
                clock.wait_reads(5, unless=pending.done)
                assert not pending.done()
                clock.advance(0.2)
                with pytest.raises(DaemonUnavailable, match="within 5 s"):
                    pending.result(timeout=60)


def test_client_job_timeout_when_daemon_goes_silent():
    """A running job that sends nothing: the daemon answers the status checks, so the
    client waits until its clock has passed ``job_timeout_s``, then gives up with "no
    news" and cancels the job."""
    clock = ManualClock()
    with running() as (server, fake), OrtholensClient(server.endpoint, clock=clock) as c, \
            in_thread(clock, c.detect, DetectParams(source=FILE, model="block"),
                      job_timeout_s=30) as pending:
        wait_for(lambda: fake.started, 60)
        clock.wait_reads(20)  # the client follows the job
        clock.advance(29)  # status checks after 2 s of silence: answered
        clock.wait_reads(20, unless=pending.done)
        assert not pending.done()
        clock.advance(2)
        with pytest.raises(DaemonUnavailable, match="no news of job .* for 30 s"):
            pending.result(timeout=60)
        # the client cancelled the job it gave up on
        wait_for(lambda: fake.cancelled, 60)


# ----------------------------------------------------------------------------- daemon dies

def test_client_notices_a_killed_daemon_within_seconds(tmp_path):
    """SIGKILL during a real detection: DaemonUnavailable once a status check went
    unanswered, ``liveness_s + timeout_s`` after the kill on the client's clock, not
    after the job timeout. The clock stands still until the kill (the engine's speed
    does not matter) and then moves 0.25 s at each reading."""
    endpoint, proc = start_engine(tmp_path / "d.log", wait_s=60)
    clock = ManualClock()
    killed = []

    def on_progress(fraction, message):
        if not killed:  # the job runs: kill the daemon outright
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            killed.append(clock.now())
            clock.tick(0.25)

    try:
        with OrtholensClient(endpoint, timeout_s=3, clock=clock) as c:
            with pytest.raises(DaemonUnavailable, match="stopped answering") as ei:
                # 200 m x 200 m at 0.1 m: a job of many seconds on a CPU
                c.detect(DetectParams(source={"kind": "file", "path": str(VIENNA)},
                                      model=DEFAULT_MODEL,
                                      extent=[-1700, 338300, -1500, 338500]),
                         on_progress=on_progress, job_timeout_s=60, liveness_s=1.0)
            took = clock.now() - killed[0]
        assert "crashed or was killed" in str(ei.value)
        assert took <= 1.0 + 3 + 0.5, f"noticed only {took:.2f} s after the kill"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class _FakeDaemon:
    """A ROUTER that accepts one detect, then answers status checks as told:
    ``mode`` "silent" (never), "running" (job running), "unknown" (not_found).

    Attributes:
        accepted: the detect was answered; statuses, answered: status checks
            received / answered."""

    def __init__(self, port: int, mode: str):
        self.mode, self.statuses, self.answered = mode, 0, 0
        self.accepted = False
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
            self.accepted = True
            self.answered += req["type"] == "status"

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.router.close()
        self.ctx.term()


@pytest.mark.parametrize("mode, error", [("silent", "stopped answering"),
                                         ("unknown", "no longer knows job")])
def test_dead_or_restarted_daemon_is_reported(mode, error, port):
    """A silent job: once the client's clock has passed ``liveness_s`` it asks for the
    job's status; no answer within ``timeout_s`` (a dead daemon) or a daemon that no
    longer knows the job (restarted) is reported then, long before the job timeout."""
    fake = _FakeDaemon(port, mode)
    clock = ManualClock()
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=5, clock=clock) as c, \
                in_thread(clock, c.detect, DetectParams(source=FILE, model="m"),
                          liveness_s=2, job_timeout_s=600) as pending:
            wait_for(lambda: fake.accepted, 60)
            clock.wait_reads(20)  # the client follows the job
            assert fake.statuses == 0  # no status check before 2 s of silence
            clock.advance(2.1)
            wait_for(lambda: fake.statuses == 1, 60)
            if mode == "silent":
                clock.advance(4.8)
                clock.wait_reads(5, unless=pending.done)
                assert not pending.done()  # the status check has 5 s to be answered
                clock.advance(0.3)
            with pytest.raises(DaemonUnavailable, match=error):
                pending.result(timeout=60)
    finally:
        fake.close()
    assert fake.statuses == 1


def test_a_live_daemon_answering_status_keeps_the_job_waiting(port):
    """A busy job that sends no events is not mistaken for a dead daemon: it runs into
    the job timeout only, after several answered status checks."""
    fake = _FakeDaemon(port, "running")
    clock = ManualClock()
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=5, clock=clock) as c, \
                in_thread(clock, c.detect, DetectParams(source=FILE, model="m"),
                          liveness_s=2, job_timeout_s=10) as pending:
            wait_for(lambda: fake.accepted, 60)
            clock.wait_reads(20)  # the client follows the job
            for n in (1, 2, 3, 4):  # 8.4 s of silence, each status check answered
                clock.advance(2.1)
                wait_for(lambda: fake.answered == n, 60)
                clock.wait_reads(10, unless=pending.done)  # the answer is read
                assert not pending.done()
            clock.advance(2.0)  # 10.4 s without news of the job
            with pytest.raises(DaemonUnavailable, match="no news of job"):
                pending.result(timeout=60)
    finally:
        fake.close()
    assert fake.statuses == 4
