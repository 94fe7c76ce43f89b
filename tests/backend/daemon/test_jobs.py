"""backend.daemon.jobs: a job's public state, the round-robin queue, taking the next
job, and the table of the interactive jobs (through the server:
tests/backend/daemon/test_server.py and test_faults.py)."""

from __future__ import annotations

import threading
import time

import pytest

from backend.daemon import jobs as J
from backend.daemon.jobs import (CANCELLED, DONE, ERROR, QUEUED, RUNNING, FairQueue, Job,
                                 JobTable, take_next)


def _job(client: bytes, n: int, **kw) -> Job:
    return Job(f"{client.decode()}{n}", f"r-{client.decode()}{n}", client,
               {"type": "detect"}, None, **kw)


def test_a_job_shows_its_kind_and_public_state():
    job = Job("j1", "r1", b"c", {"type": "retrain"}, None, fraction=0.123456,
              message="tile 3")
    assert job.kind == "retrain" and Job("j", "r", b"", {}, None).kind == "detect"
    assert job.public() == {"job_id": "j1", "state": QUEUED, "fraction": 0.1235,
                            "message": "tile 3"}
    assert job.finished is None and not job.cancel.is_set()


def test_the_queue_takes_turns_across_clients_and_is_fifo_within_one():
    q = FairQueue()
    for job in [_job(b"a", i) for i in range(3)] + [_job(b"b", i) for i in range(2)] + \
            [_job(b"c", 0)]:
        q.append(job)
    assert len(q) == 6 and q
    assert [j.job_id for j in q] == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert [q.popleft().job_id for _ in range(6)] == ["a0", "b0", "c0", "a1", "b1", "a2"]
    assert len(q) == 0 and not q
    with pytest.raises(IndexError):
        q.popleft()


def test_removing_and_clearing_queued_jobs():
    q = FairQueue()
    a0, a1, b0 = _job(b"a", 0), _job(b"a", 1), _job(b"b", 0)
    for job in (a0, a1, b0):
        q.append(job)
    q.remove(a0)
    assert [j.job_id for j in q] == ["a1", "b0"] and len(q) == 2
    q.remove(b0)
    with pytest.raises(ValueError):
        q.remove(b0)  # its client has no line any more
    with pytest.raises(ValueError):
        q.remove(_job(b"a", 9))  # not queued
    q.clear()
    assert len(q) == 0 and list(q) == []


def test_take_next_marks_the_job_running_and_ends_once_stopping():
    cond, stopping = threading.Condition(), threading.Event()
    q = FairQueue()
    job = _job(b"a", 0)
    q.append(job)
    assert take_next(cond, q, stopping) is job and job.state == RUNNING
    got = []
    t = threading.Thread(target=lambda: got.append(take_next(cond, q, stopping)))
    t.start()
    time.sleep(0.05)
    with cond:  # a job queued while the worker waits
        q.append(_job(b"b", 0))
        cond.notify()
    t.join(5)
    assert [j.job_id for j in got] == ["b0"]
    q.append(_job(b"c", 0))
    stopping.set()
    assert take_next(cond, q, stopping) is None and len(q) == 1  # left for the shutdown


def test_the_table_forgets_old_finished_jobs(monkeypatch):
    table = JobTable(history_s=100.0)
    old, recent, running = _job(b"a", 0), _job(b"a", 1), _job(b"a", 2)
    for job in (old, recent, running):
        table.add(job)
    assert table.active_count() == 3 and table.is_active("a0")
    now = time.time()
    old.state, old.finished = DONE, now - 101
    recent.state, recent.finished = DONE, now - 90  # 10 s of slack for a slow machine
    running.state = RUNNING
    assert table.active_count() == 1
    assert not table.is_active("a0") and table.is_active("a2") and not table.is_active("x")
    with table.lock:
        table.prune_locked()
    assert list(table.jobs) == ["a1", "a2"]
    monkeypatch.setattr(J, "MAX_FINISHED_JOBS", 0)  # beyond the most kept: the oldest go
    with table.lock:
        table.prune_locked()
    assert list(table.jobs) == ["a2"]


def test_the_table_cancels_the_jobs_of_a_client_that_went_away():
    table = JobTable(history_s=60.0)
    a_run, a_wait, b_wait = _job(b"a", 0), _job(b"a", 1), _job(b"b", 0)
    for job in (a_run, a_wait, b_wait):
        table.add(job)
    assert table.next_job(threading.Event()) is a_run
    gone = table.client_gone(b"a", "cancelled: the client disconnected")
    assert gone == [a_run, a_wait]
    assert a_run.cancel.is_set() and a_run.state == RUNNING  # stops at its next batch
    assert (a_wait.state, a_wait.message, a_wait.arrays) == (
        CANCELLED, "cancelled: the client disconnected", None)
    assert a_wait.finished is not None and a_run.cancel_reason == a_wait.message
    assert [j.job_id for j in table.queue] == ["b0"] and not b_wait.cancel.is_set()
    assert table.client_gone(b"nobody", "x") == []


def test_the_table_drops_the_waiting_jobs_when_the_daemon_stops():
    table = JobTable(history_s=60.0)
    first, second = _job(b"a", 0), _job(b"b", 0)
    table.add(first)
    table.add(second)
    assert table.next_job(threading.Event()) is first
    assert table.drop_queued("the daemon shut down before the job ran") == [second]
    assert (second.state, second.message) == (ERROR, "the daemon shut down before the "
                                                     "job ran")
    assert first.state == RUNNING and len(table.queue) == 0
    assert table.jobs["b0"] is second  # still visible to status


def test_a_queued_job_cancelled_leaves_the_queue():
    table = JobTable(history_s=60.0)
    job, other = _job(b"a", 0, message="waiting"), _job(b"a", 1)
    table.add(job)
    table.add(other)
    with table.lock:
        table.cancel_queued_locked(job)
        table.cancel_queued_locked(other, "dropped")
    assert (job.state, job.message, other.state, other.message) == (
        CANCELLED, "waiting", CANCELLED, "dropped")
    assert job.finished is not None and len(table.queue) == 0
    assert table.active_count() == 0 and list(table.jobs) == ["a0", "a1"]
