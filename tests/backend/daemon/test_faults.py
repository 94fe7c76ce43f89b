"""Faults of the clients a daemon serves: a client that goes away mid-job, and fair
queueing across clients (the server in a thread with the fake detect function of
``tests.support``; a daemon that dies: tests/protocol/test_client.py).
"""

from __future__ import annotations

from protocol.client import OrtholensClient
from protocol.params import DetectParams
from tests.support import (FILE, job_state, raw_dealer, recv, running_server as running,
                           send_detect, wait_for)


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
        wait_for(lambda: job_state(server, run_id) != "running", 60)  # a hang guard
        assert job_state(server, run_id) == "cancelled"
        assert fake.cancelled == ["run"]
        assert job_state(server, queued_id) == "cancelled"
        with OrtholensClient(server.endpoint) as c:
            st = {j["job_id"]: j for j in c.status()}
            assert "client disconnected" in st[run_id]["message"]
            assert "client disconnected" in st[queued_id]["message"]
            res = c.detect(DetectParams(source=FILE, model="echo"))
            assert res["type"] == "result"
    assert fake.started == ["run", res["features"][0]["request"]]  # "queued" never ran


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
