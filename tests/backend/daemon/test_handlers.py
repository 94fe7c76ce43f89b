"""backend.daemon.handlers: one handler for every request type the protocol defines,
and the answers of those that need no job, called directly (their work through the
socket: tests/backend/daemon/test_server.py)."""

from __future__ import annotations

import pytest

import protocol as P
from backend import __version__
from backend.daemon.handlers import HANDLERS
from backend.daemon.jobs import QUEUED, Job
from backend.daemon.server import Server
from tests.support import DEFAULT_MODEL, FILE


def test_every_request_type_has_a_handler():
    assert set(HANDLERS) == set(P.REQUEST_TYPES)
    assert all(callable(h) for h in HANDLERS.values())


@pytest.fixture
def server():
    """A server that is never bound: its handlers are called directly."""
    return Server(port=0, device="cpu", detect_fn=lambda *a: {}, max_queue=2)


def _ask(server, mtype, identity=b"me", **fields):
    header = P.validate_request(P.request(mtype, id="q1", **fields))
    return HANDLERS[mtype](server, identity, header, [])


def test_ping_and_models_describe_the_daemon(server, monkeypatch):
    monkeypatch.delenv("ORTHOLENS_DEFAULT_MODEL", raising=False)
    (who, pong), = _ask(server, "ping")
    assert who == b"me" and (pong["type"], pong["id"]) == ("pong", "q1")
    assert (pong["version"], pong["protocol"], pong["device"]) == (
        __version__, P.PROTOCOL_VERSION, "cpu")
    assert DEFAULT_MODEL in pong["models"] and pong["jobs"] == 0
    assert pong["device_info"] == {"kind": "cpu"}  # not probed: the server never ran
    (_, models), = _ask(server, "models")
    assert [m["id"] for m in models["models"] if m["default"]] == [DEFAULT_MODEL]


def test_detect_queues_a_job_until_the_queue_is_full(server):
    (who, acc), = _ask(server, "detect", source=FILE, model="m")
    assert acc["type"] == "accepted" and len(acc["job_id"]) == 32
    job = server.table.jobs[acc["job_id"]]
    assert (job.state, job.identity, job.request_id) == (QUEUED, b"me", "q1")
    assert job.request["source"] == FILE and "token" not in job.request
    (_, st), = _ask(server, "status", job_id=acc["job_id"])
    assert st["jobs"] == [job.public()]
    _ask(server, "detect", source=FILE, model="m")
    with pytest.raises(P.JobError) as e:
        _ask(server, "detect", source=FILE, model="m")
    assert e.value.code == P.E_BUSY and "the job queue is full (2 jobs waiting)" in str(e.value)


def test_cancel_answers_first_then_tells_the_submitter(server):
    (_, acc), = _ask(server, "detect", identity=b"submitter", source=FILE, model="m")
    (who, ack), (to, ev) = _ask(server, "cancel", job_id=acc["job_id"])
    assert (who, ack["type"], ack["state"], ack["id"]) == (b"me", "cancelled", "cancelled", "q1")
    assert (to, ev["type"], ev["id"]) == (b"submitter", "cancelled", "q1")
    assert len(server.table.queue) == 0
    with pytest.raises(P.JobError) as e:
        _ask(server, "cancel", job_id="0" * 32)
    assert e.value.code == P.E_NOT_FOUND
    assert isinstance(server.table.jobs[acc["job_id"]], Job)
