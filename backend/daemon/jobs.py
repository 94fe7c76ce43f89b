"""What the daemon queues and runs: :class:`Job` (any job: ``detect``, ``retrain`` or
``batch``), the job function contract :data:`JobFn`, the job states,
:class:`FairQueue`, the round-robin queue of the interactive workers, and
:class:`JobTable`, the interactive jobs of one daemon under one lock.

The request handlers (``backend.daemon.handlers``) and the batch service
(``backend.daemon.batch_service``) both build :class:`Job` objects; the job threads
(``backend.daemon.job_runner``) run them and the server forwards their events.
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
#: Most finished jobs a :class:`JobTable` keeps visible to ``status``.
MAX_FINISHED_JOBS = 10_000

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


class JobTable:
    """The interactive jobs (``detect`` and ``retrain``) of one daemon: the
    :class:`FairQueue` of those waiting and every job ``status`` still shows, guarded by
    :attr:`lock` (:attr:`cond` wakes the workers).

    Finished jobs stay visible for ``history_s`` seconds, and at most
    :data:`MAX_FINISHED_JOBS` of them; :meth:`prune_locked` drops the others.

    Args:
        history_s: how long a finished job stays visible, seconds.
    """

    def __init__(self, history_s: float):
        self.history_s = float(history_s)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue = FairQueue()
        self.jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()

    def prune_locked(self) -> None:
        """Drop the finished jobs older than ``history_s`` and the oldest beyond
        :data:`MAX_FINISHED_JOBS`; the caller holds :attr:`lock`."""
        cutoff = time.time() - self.history_s
        finished = [j for j in self.jobs.values() if j.finished is not None]
        excess = len(finished) - MAX_FINISHED_JOBS
        for j in finished:
            if j.finished < cutoff or excess > 0:
                del self.jobs[j.job_id]
                excess -= 1

    def add(self, job: Job) -> None:
        """Record ``job`` and queue it at the end of its client's line; wakes a worker."""
        with self.cond:
            self.prune_locked()
            self.jobs[job.job_id] = job
            self.queue.append(job)
            self.cond.notify()

    def next_job(self, stopping: threading.Event) -> Optional[Job]:
        """The next queued job in round-robin order, marked running (see
        :func:`take_next`); None once ``stopping`` is set."""
        return take_next(self.cond, self.queue, stopping)

    def active_count(self) -> int:
        """How many jobs are queued or running."""
        with self.lock:
            return sum(1 for j in self.jobs.values() if j.state in (QUEUED, RUNNING))

    def is_active(self, job_id: str) -> bool:
        """True while the job ``job_id`` is queued or running."""
        with self.lock:
            job = self.jobs.get(job_id)
            return job is not None and job.finished is None

    def cancel_queued_locked(self, job: Job, message: str = "") -> None:
        """Take a queued ``job`` out of the queue, ended as cancelled (with ``message``
        when given); the caller holds :attr:`lock`."""
        self.queue.remove(job)
        job.state, job.finished, job.arrays = CANCELLED, time.time(), None
        if message:
            job.message = message

    def client_gone(self, identity: bytes, reason: str) -> List[Job]:
        """Ask every queued or running job of the client ``identity`` to stop, the
        queued ones ended at once with ``reason``; returns those jobs."""
        with self.cond:
            active = [j for j in self.jobs.values()
                      if j.identity == identity and j.state in (QUEUED, RUNNING)]
            for job in active:
                job.cancel_reason = reason
                job.cancel.set()
                if job.state == QUEUED:
                    self.cancel_queued_locked(job, reason)
        return active

    def drop_queued(self, message: str) -> List[Job]:
        """End every waiting job with state ``error`` and ``message`` (the daemon stops)
        and wake every worker; returns the jobs dropped."""
        with self.cond:
            dropped = list(self.queue)
            self.queue.clear()
            now = time.time()
            for job in dropped:
                job.state, job.finished, job.arrays = ERROR, now, None
                job.message = message
            self.cond.notify_all()
        return dropped


__all__ = ["QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED", "FINISHED", "JobFn", "Job",
           "FairQueue", "take_next", "JobTable", "MAX_FINISHED_JOBS"]
