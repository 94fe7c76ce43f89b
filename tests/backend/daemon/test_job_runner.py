"""backend.daemon.job_runner: the events a job sends (progress, then one result, error
or cancelled), what a job function may return, and how a failure reads; a job thread
running real jobs into an inproc socket (through the server:
tests/backend/daemon/test_server.py)."""

from __future__ import annotations

import threading

import pytest
import zmq

import protocol as P
from backend.daemon.job_runner import JobRunner, clip, failure, result_frames
from backend.daemon.jobs import CANCELLED, DONE, ERROR, Job
from protocol.errors import InputError, JobCancelled, JobError


def _job(**kw) -> Job:
    return Job("j" * 32, "r1", b"client", {"type": "detect"}, None, **kw)


def _header(frames) -> dict:
    return P.decode(frames, P.MAX_REPLY_HEADER_BYTES)[0]


def test_clip_keeps_short_texts_and_ends_long_ones():
    assert clip("short") == "short" and clip(42) == "42"
    long = "x" * 600
    assert clip(long) == "x" * 497 + "..." and len(clip(long)) == 500
    assert clip("abcdef", 5) == "ab..." and clip("abcde", 5) == "abcde"


def test_a_result_event_carries_the_job_s_answer():
    out = {"crs": "EPSG:2056", "features": [{"wkt": "POINT (1 2)"}], "stats": {"tiles": 3}}
    h = _header(result_frames(_job(), out))
    assert (h["type"], h["id"], h["job_id"]) == ("result", "r1", "j" * 32)
    assert (h["crs"], h["features"], h["stats"]) == (out["crs"], out["features"], out["stats"])
    assert "retrain" not in h
    h = _header(result_frames(_job(), {"crs": "c", "features": [], "retrain": {"ok": 1}}))
    assert h["stats"] == {} and h["retrain"] == {"ok": 1}


@pytest.mark.parametrize("out", [None, [], {"features": []}, {"crs": 1, "features": []},
                                 {"crs": "c", "features": {}},
                                 {"crs": "c", "features": [], "stats": []}])
def test_a_job_function_must_return_crs_features_and_stats(out):
    with pytest.raises(TypeError, match="must return"):
        result_frames(_job(), out)


def test_a_result_too_large_to_send_is_the_user_s_extent(monkeypatch):
    monkeypatch.setattr(P, "MAX_REPLY_HEADER_BYTES", 2000)
    with pytest.raises(JobError) as e:
        result_frames(_job(), {"crs": "c", "features": [{"wkt": "x" * 100}] * 30})
    assert e.value.code == P.E_INVALID_INPUT
    assert e.value.message == ("the result (30 polygons) is too large; process a smaller "
                               "extent")


def test_how_a_failure_reads():
    state, msg, h = failure(_job(), JobCancelled(), stopping=False)
    assert (state, msg, h["type"], h["id"]) == (CANCELLED, "cancelled", "cancelled", "r1")
    job = _job(cancel_reason="cancelled: the client disconnected")
    job.cancel.set()
    state, msg, _ = failure(job, RuntimeError("any"), stopping=True)
    assert (state, msg) == (CANCELLED, "cancelled: the client disconnected")
    state, msg, h = failure(_job(), JobCancelled(), stopping=True)
    assert (state, h["code"]) == (ERROR, P.E_BUSY)
    assert msg == h["message"] == "the daemon shut down before the job finished"
    state, msg, h = failure(_job(), InputError("x" * 700, field="source"), stopping=False)
    assert (state, h["code"], h["field"], h["job_id"]) == (ERROR, P.E_INVALID_INPUT,
                                                           "source", "j" * 32)
    assert msg == h["message"] == "x" * 497 + "..."
    state, msg, h = failure(_job(), RuntimeError("boom"), stopping=False)
    assert (state, h["code"], msg) == (ERROR, P.E_INTERNAL, "internal error: RuntimeError: boom")


def test_a_job_thread_runs_its_jobs_and_sends_their_events():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    endpoint = "inproc://test-job-runner"
    pull.bind(endpoint)

    def fn(request, arrays, progress, cancelled):
        if request["type"] == "fail":
            raise InputError("no CRS")
        for f in (0.25, float("nan"), "x", 2.0):
            progress(f, "step")
        return {"crs": "c", "features": [], "stats": {"n": len(arrays)}}

    jobs = [Job("a" * 32, "ra", b"c1", {"type": "detect"}, [1, 2]),
            Job("b" * 32, "rb", b"c2", {"type": "fail"}, None),
            Job("c" * 32, "rc", b"c1", {"type": "detect"}, None)]
    jobs[2].cancel.set()  # cancelled before it started
    todo, ended, done = list(jobs), [], []
    lock, stopping = threading.Lock(), threading.Event()
    runner = JobRunner({"detect": fn, "fail": fn}, lock, stopping, done.append, 0.0)
    runner.start(ctx, endpoint, "test-worker", lambda: todo.pop(0) if todo else None,
                 ended.append)
    events = []
    while len([e for e in events if e[1]["type"] != "progress"]) < 3:
        assert pull.poll(10_000), events
        frames = pull.recv_multipart()
        events.append((frames[0], _header(frames[1:])))
    runner.threads[0].join(5)
    assert not runner.alive()
    pull.close()
    ctx.term()
    # invalid fractions are dropped, the others clipped to 0..1
    assert [(who, e["type"], e.get("fraction")) for who, e in events] == [
        (b"c1", "progress", 0.25), (b"c1", "progress", 1.0), (b"c1", "result", None),
        (b"c2", "error", None), (b"c1", "cancelled", None)]
    assert events[2][1]["stats"] == {"n": 2} and events[3][1]["code"] == P.E_INVALID_INPUT
    assert [j.state for j in jobs] == [DONE, ERROR, CANCELLED]
    assert jobs[0].fraction == 1.0 and jobs[0].message == "step"  # the last progress note
    assert jobs[1].message == "no CRS"
    assert all(j.arrays is None and j.finished is not None for j in jobs)
    assert ended == jobs and done == [j.job_id for j in jobs]
