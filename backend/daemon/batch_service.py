"""Batch jobs inside the daemon: the ``batch``, ``jobs`` and ``resume`` requests.

A :class:`BatchService` belongs to one daemon (``backend.daemon.server``). Batch jobs
have their own queue and **one** thread, so a long batch never blocks the interactive
``detect`` workers. The server runs that thread: it takes jobs with
:meth:`BatchService.next_job`, runs them like any other :class:`~backend.daemon.jobs.Job`
(same ``progress`` / ``result`` / ``error`` / ``cancelled`` events, the job function
being :meth:`BatchService.run`) and reports each end with :meth:`BatchService.job_ended`.
A batch job is not in the server's job table: a client that submits a batch job and goes
away (QGIS closed, ``qgis_process`` interrupted) does not cancel it. ``cancel`` with its
``job_id`` stops it; it stays resumable.

Everything about a job lives in the :class:`~backend.daemon.jobstore.JobStore` (SQLite
under ``--jobs-dir`` / ``ORTHOLENS_JOBS_DIR``), so after a crash ``jobs`` lists the job
as ``interrupted`` and ``resume`` continues it (``python -m backend --resume-jobs``
resumes every interrupted job at start-up). ``backend.daemon.batch_runner`` checks,
records and runs the jobs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import protocol as P
from backend.daemon.access import Access
from backend.daemon.jobs import CANCELLED, DONE, ERROR, QUEUED, RUNNING, Job, take_next
from backend.daemon.jobstore import JobStore
from protocol.params import BatchParams

log = logging.getLogger("ortholens.batch")

#: Most jobs a ``jobs`` reply lists (newest first).
MAX_LISTED_JOBS = 200

Replies = List[Tuple[bytes, Dict[str, Any]]]


class BatchService:
    """Queue and store of a daemon's batch jobs.

    Args:
        access: the daemon's path rules (a resumed job's raster and output are checked
            again).
        stopping: the daemon's stop flag: set once it shuts down.
        jobs_dir: folder of the job store (default ``ORTHOLENS_JOBS_DIR`` or the user's
            data folder, see :func:`backend.daemon.jobstore.default_jobs_dir`).
        resume_interrupted: :meth:`resume_interrupted_jobs` queues every job a killed
            daemon left running.
    """

    def __init__(self, access: Access, stopping: threading.Event,
                 jobs_dir: Optional[str] = None, resume_interrupted: bool = False):
        self.access = access
        self.stopping = stopping
        self.jobs_dir = jobs_dir
        self.resume_interrupted = resume_interrupted
        self._store: Optional[JobStore] = None
        self._queue: Deque[Job] = collections.deque()
        self._live: Dict[str, Job] = {}
        self._cond = threading.Condition()

    @property
    def store(self) -> JobStore:
        """The job store, opened at first use."""
        if self._store is None:
            self._store = JobStore(self.jobs_dir)
        return self._store

    # ------------------------------------------------------------------ the batch thread

    def resume_interrupted_jobs(self) -> None:
        """Queue the jobs a killed daemon left queued or running, when asked to at
        construction; called once the batch thread runs."""
        if not self.resume_interrupted:
            return
        try:
            for job in self.store.list():
                if job["state"] in (QUEUED, RUNNING) and job["job_id"] not in self._live:
                    log.info("resuming interrupted batch job %s", job["job_id"])
                    self._enqueue(b"", None, job["job_id"])
        except Exception:
            log.exception("cannot resume interrupted batch jobs")

    def next_job(self) -> Optional[Job]:
        """The next queued batch job, marked running; blocks while the queue is empty.
        None once the daemon stops: the batch thread then ends."""
        return take_next(self._cond, self._queue, self.stopping)

    def run(self, request: Dict[str, Any], arrays, progress, cancelled) -> Dict[str, Any]:
        """The job function of a batch job (``backend.daemon.jobs.JobFn``): runs or
        resumes the stored job ``request["job_id"]``."""
        from backend.daemon.batch_runner import run_batch  # lazy: rasterio, engines
        return run_batch(self.store, request["job_id"], progress, cancelled)

    def job_ended(self, job: Job) -> None:
        """Forget a job that ended; one cut short by a shutdown is recorded as
        interrupted (resumable), not as cancelled by a user. A job that failed on its
        own (``error``) keeps its error, even when the daemon is stopping by then."""
        with self._cond:
            self._live.pop(job.job_id, None)
        if self.stopping.is_set() and job.state not in (DONE, ERROR):
            try:
                self.store.set_state(job.job_id, RUNNING, "interrupted: the daemon stopped")
            except Exception:
                log.exception("cannot record job %s as interrupted", job.job_id)

    def active_count(self) -> int:
        """How many batch jobs are queued or running here."""
        with self._cond:
            return len(self._live)

    def has(self, job_id: str) -> bool:
        """True while the job is queued or running here."""
        with self._cond:
            return job_id in self._live

    # ------------------------------------------------------------------ requests

    def on_batch(self, identity: bytes, header: Dict[str, Any]) -> Replies:
        """Answer a ``batch`` request, validated and its paths checked (the server's
        ``Access.check_request``): record and queue the job.

        Raises:
            ProtocolError: ``bad_request`` (see ``submit``).
            JobError: ``busy`` while stopping; as ``batch_runner.submit`` (the job is
                not recorded then).
        """
        params = BatchParams.from_header(header)
        self._check_stopping()
        from backend.daemon.batch_runner import submit  # lazy: rasterio, engines
        job_id = submit(self.store, params)
        log.info("batch job %s queued: %s -> %s", job_id, params.detect.source.path,
                 params.out_path)
        self._enqueue(identity, header["id"], job_id)
        return [(identity, P.reply("accepted", header["id"], job_id=job_id))]

    def on_resume(self, identity: bytes, header: Dict[str, Any]) -> Replies:
        """Answer ``resume``: queue a stored job that is not done. Its raster and
        output are checked again as a ``batch`` request's: the daemon that accepted
        it may have had other roots, or none.

        Raises:
            ProtocolError: ``forbidden`` for a stored path outside the allowed roots.
            JobError: ``not_found``, ``invalid_input`` (done), ``busy``.
        """
        job_id = header["job_id"]
        job = self.store.get(job_id)
        if job is None:
            raise P.JobError(f"no batch job {job_id}", P.E_NOT_FOUND)
        self.access.check_request(dict(job["request"], type="batch"))
        if job["state"] == DONE:
            raise P.JobError(f"batch job {job_id} is finished ({job['message']})",
                             P.E_INVALID_INPUT)
        self._check_stopping()
        self._enqueue(identity, header["id"], job_id)
        log.info("batch job %s resumed (%d/%d regions done)", job_id, job["regions_done"],
                 job["n_regions"])
        return [(identity, P.reply("accepted", header["id"], job_id=job_id))]

    def on_jobs(self, identity: bytes, header: Dict[str, Any]) -> Replies:
        """Answer ``jobs``: one stored job, or the newest :data:`MAX_LISTED_JOBS`.

        Raises:
            JobError: ``not_found`` for an unknown ``job_id``.
        """
        if "job_id" in header:
            job = self.store.get(header["job_id"])
            if job is None:
                raise P.JobError(f"no batch job {header['job_id']}", P.E_NOT_FOUND)
            jobs = [job]
        else:
            jobs = self.store.list()[:MAX_LISTED_JOBS]
        if not jobs:  # answered without importing the batch runner (rasterio, scipy)
            return [(identity, P.reply("jobs", header["id"], jobs=[]))]
        with self._cond:
            live = {k: j.public() for k, j in self._live.items()}
        from backend.daemon.batch_runner import job_summary  # lazy: rasterio, engines
        return [(identity, P.reply("jobs", header["id"],
                                   jobs=[job_summary(j, live.get(j["job_id"])) for j in jobs]))]

    def cancel(self, identity: bytes, header: Dict[str, Any]) -> Replies:
        """Answer ``cancel`` of a queued or running batch job (it stays resumable).

        Raises:
            JobError: ``not_found`` when the job is not queued or running here.
        """
        out = []
        job_id = header["job_id"]
        with self._cond:
            job = self._live.get(job_id)
            if job is None:
                raise P.JobError("no such job", P.E_NOT_FOUND)
            job.cancel.set()
            if job in self._queue:
                self._queue.remove(job)
                del self._live[job_id]
                job.state, job.finished = CANCELLED, time.time()
                if job.request_id is not None:
                    out.append((job.identity, P.reply("cancelled", job.request_id,
                                                      job_id=job_id)))
            state = job.state
        if state == CANCELLED:
            self.store.set_state(job_id, CANCELLED, "cancelled before it ran; resumable")
        log.info("batch job %s: cancel requested (%s)", job_id, state)
        return [(identity, P.reply("cancelled", header["id"], job_id=job_id,
                                   state=state))] + out

    # ------------------------------------------------------------------ internals

    def _check_stopping(self) -> None:
        if self.stopping.is_set():
            raise P.JobError("the daemon is shutting down", P.E_BUSY)

    def _enqueue(self, identity: bytes, request_id: Optional[str], job_id: str) -> Job:
        job = Job(job_id, request_id, identity, {"type": "batch", "job_id": job_id}, None)
        with self._cond:
            if job_id in self._live:
                raise P.JobError(f"batch job {job_id} is already queued or running",
                                 P.E_BUSY)
            # stored as queued before the batch thread can take it: written after, it
            # would overwrite the state of a job that already ran
            self.store.set_state(job_id, QUEUED, "queued")
            self._live[job_id] = job
            self._queue.append(job)
            self._cond.notify()
        return job


__all__ = ["BatchService", "MAX_LISTED_JOBS"]
