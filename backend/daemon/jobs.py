"""What the daemon queues and runs: :class:`Job` (any job: ``detect``, ``retrain`` or
``batch``), the job function contract :data:`JobFn`, the job states, and
:class:`FairQueue`, the round-robin queue of the interactive workers.

The server (``backend.daemon.server``) and the batch service
(``backend.daemon.batch_service``) both build :class:`Job` objects; the server runs
them and forwards their events.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import numpy as np

#: Job states. A batch job's stored state (``backend.daemon.jobstore``) uses the same
#: names.
QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)

#: ``fn(request, arrays, progress, cancelled) -> {"crs", "features", "stats"}``: what a
#: job runs. ``request`` is the validated request header (without ``token``), ``arrays``
#: its array frames, ``progress(fraction 0..1, message)`` reports progress and
#: ``cancelled()`` turns true when the job should stop. It raises an
#: ``protocol.errors.OrtholensError`` whose ``code`` the client gets, and
#: ``protocol.errors.JobCancelled`` once ``cancelled()`` is true.
JobFn = Callable[[Dict[str, Any], List[np.ndarray], Callable[[float, str], None],
                  Callable[[], bool]], Dict[str, Any]]


@dataclass
class Job:
    """Any queued job, ``detect``, ``retrain`` or ``batch``, and its state.

    Attributes:
        job_id: 32 hex characters.
        request_id: the ``id`` of the request that submitted (or resumed) the job; every
            event of the job carries it. None for a batch job resumed at start-up: no
            client waits for its events.
        identity: ROUTER identity of the submitting client; events go there (``b""``
            when nobody waits).
        request: the validated request header (without ``token``); a batch job's is
            ``{"type": "batch", "job_id": ...}``, its parameters are in the job store.
        arrays: the request's arrays, private copies; dropped when the job ends.
        state: one of :data:`QUEUED`, :data:`RUNNING`, :data:`DONE`, :data:`ERROR`,
            :data:`CANCELLED`.
        fraction: progress 0..1; message: last progress or error text.
        cancel: set to ask a running job to stop at its next batch boundary.
        created, finished: ``time.time()`` stamps (``finished`` None while active).
        cancel_reason: the message a cancelled job ends with, when not the user's.
    """

    job_id: str
    request_id: Optional[str]
    identity: bytes
    request: Dict[str, Any]
    arrays: Optional[List[np.ndarray]]
    state: str = QUEUED
    fraction: float = 0.0
    message: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    finished: Optional[float] = None
    cancel_reason: str = ""

    @property
    def kind(self) -> str:
        """The request type: ``detect``, ``retrain`` or ``batch``."""
        return str(self.request.get("type", "detect"))

    def public(self) -> Dict[str, Any]:
        """``{job_id, state, fraction, message}`` as sent in a ``status`` reply."""
        return {"job_id": self.job_id, "state": self.state,
                "fraction": round(float(self.fraction), 4), "message": self.message}


class FairQueue:
    """Jobs waiting for a worker, served round-robin across clients.

    Each client (ROUTER identity, i.e. one client connection) has its own FIFO; the
    clients take turns: after one of a client's jobs is taken, that client goes to the
    back of the line. A client with one job therefore waits for at most one job of each
    other waiting client, however many jobs they queued. Not thread-safe: the server
    uses it under its lock.
    """

    def __init__(self) -> None:
        self._clients: "collections.OrderedDict[bytes, Deque[Job]]" = collections.OrderedDict()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[Job]:
        for jobs in list(self._clients.values()):
            yield from list(jobs)

    def append(self, job: Job) -> None:
        """Queue ``job`` at the end of its client's line."""
        self._clients.setdefault(job.identity, collections.deque()).append(job)
        self._n += 1

    def popleft(self) -> Job:
        """The next job in round-robin order. Raises IndexError when empty."""
        if not self._clients:
            raise IndexError("pop from an empty FairQueue")
        identity, jobs = next(iter(self._clients.items()))
        job = jobs.popleft()
        del self._clients[identity]
        if jobs:
            self._clients[identity] = jobs  # to the back of the line
        self._n -= 1
        return job

    def remove(self, job: Job) -> None:
        """Remove a waiting job. Raises ValueError when it is not queued."""
        jobs = self._clients.get(job.identity)
        if jobs is None:
            raise ValueError("job not queued")
        jobs.remove(job)
        if not jobs:
            del self._clients[job.identity]
        self._n -= 1

    def clear(self) -> None:
        """Drop every waiting job."""
        self._clients.clear()
        self._n = 0


def take_next(cond: threading.Condition, queue: Any, stopping: threading.Event
              ) -> Optional[Job]:
    """The next job of ``queue`` (a :class:`FairQueue` or a deque of jobs), marked
    running; waits on ``cond`` (which guards ``queue``) while the queue is empty.

    Returns:
        The job, or None once ``stopping`` is set: the calling job thread then ends, and
        the daemon's shutdown deals with the jobs still queued.
    """
    with cond:
        while not queue and not stopping.is_set():
            cond.wait(0.5)
        if stopping.is_set() or not queue:
            return None
        job = queue.popleft()
        job.state = RUNNING
        return job


__all__ = ["QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED", "FINISHED", "JobFn", "Job",
           "FairQueue", "take_next"]
