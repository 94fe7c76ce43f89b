"""Batch jobs inside the daemon: the ``batch``, ``jobs`` and ``resume`` requests.

A :class:`BatchService` belongs to one :class:`backend.server.Server`. Batch jobs have
their own queue and **one** thread, so a long batch never blocks the interactive
``detect`` workers. A running batch job is an ordinary server :class:`~.server.Job`
(same ``progress`` / ``result`` / ``error`` / ``cancelled`` events, run by
``Server._run_job``), but it is not in the server's job table: a client that submits a
batch job and goes away (QGIS closed, ``qgis_process`` interrupted) does not cancel it.
``cancel`` with its ``job_id`` stops it; it stays resumable.

Everything about a job lives in the :class:`~backend.jobstore.JobStore` (SQLite under
``--jobs-dir`` / ``ORTHOLENS_JOBS_DIR``), so after a crash ``jobs`` lists the job as
``interrupted`` and ``resume`` continues it (``python -m backend --resume-jobs`` resumes
every interrupted job at start-up).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Deque, Dict, List, Optional

import zmq

from plugin import protocol as P

from .jobstore import CANCELLED, DONE, QUEUED, RUNNING, JobStore
from .server import Job

log = logging.getLogger("ortholens.batch")

#: Most jobs a ``jobs`` reply lists (newest first).
MAX_LISTED_JOBS = 200


class BatchService:
    """Queue, thread and store of a daemon's batch jobs.

    Args:
        server: the owning server (its event socket, path checks and ``_run_job``).
        jobs_dir: folder of the job store (default ``ORTHOLENS_JOBS_DIR`` or the user's
            data folder, see :func:`backend.jobstore.default_jobs_dir`).
        resume_interrupted: at start, queue every job a killed daemon left running.
    """

    def __init__(self, server, jobs_dir: Optional[str] = None,
                 resume_interrupted: bool = False):
        self.server = server
        self.jobs_dir = jobs_dir
        self.resume_interrupted = resume_interrupted
        self._store: Optional[JobStore] = None
        self._queue: Deque[Job] = collections.deque()
        self._live: Dict[str, Job] = {}
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(self.jobs_dir)
        return self._store

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the batch thread (the server waits for it on stop)."""
        t = threading.Thread(target=self._loop, name="ortholens-batch", daemon=True)
        t.start()
        self._thread = t
        self.server._workers.append(t)
        if self.resume_interrupted:
            try:
                for job in self.store.list():
                    if job["state"] in (QUEUED, RUNNING) and job["job_id"] not in self._live:
                        log.info("resuming interrupted batch job %s", job["job_id"])
                        self._enqueue(b"", None, job["job_id"])
            except Exception:
                log.exception("cannot resume interrupted batch jobs")

    def has(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._live

    # ------------------------------------------------------------------ requests

    def on_batch(self, identity: bytes, header: Dict[str, Any]):
        request = {k: v for k, v in header.items()
                   if k not in ("token", "v", "id", "type", "arrays")}
        request["source"] = self.server._check_path(header["source"])
        out = self.server._check_path({"kind": "file", "path": header["out_path"]})["path"]
        request["out_path"] = os.path.abspath(out)
        if os.path.exists(request["out_path"]) and not request.get("overwrite"):
            raise P.ProtocolError(P.E_INVALID_INPUT, f"{request['out_path']} exists: "
                                                     f"choose a new file or set overwrite")
        parent = os.path.dirname(request["out_path"])
        if not os.path.isdir(parent):
            raise P.ProtocolError(P.E_NOT_FOUND, f"the output folder {parent} does not exist")
        if not os.path.isfile(request["source"]["path"]):
            raise P.ProtocolError(P.E_NOT_FOUND,
                                  f"raster file not found: {request['source']['path']}")
        self._check_model(request["model"])
        self._check_stopping()
        import uuid
        job_id = uuid.uuid4().hex
        self.store.create(job_id, request)
        log.info("batch job %s queued: %s -> %s", job_id, request["source"]["path"],
                 request["out_path"])
        self._enqueue(identity, header["id"], job_id)
        return [(identity, P.reply("accepted", header["id"], job_id=job_id))]

    def on_resume(self, identity: bytes, header: Dict[str, Any]):
        job_id = header["job_id"]
        job = self.store.get(job_id)
        if job is None:
            raise P.ProtocolError(P.E_NOT_FOUND, f"no batch job {job_id}")
        if job["state"] == DONE:
            raise P.ProtocolError(P.E_INVALID_INPUT, f"batch job {job_id} is finished "
                                                     f"({job['message']})")
        self._check_stopping()
        self._enqueue(identity, header["id"], job_id)
        log.info("batch job %s resumed (%d/%d chunks done)", job_id, job["chunks_done"],
                 job["n_chunks"])
        return [(identity, P.reply("accepted", header["id"], job_id=job_id))]

    def on_jobs(self, identity: bytes, header: Dict[str, Any]):
        from .batch import job_summary
        if "job_id" in header:
            job = self.store.get(header["job_id"])
            if job is None:
                raise P.ProtocolError(P.E_NOT_FOUND, f"no batch job {header['job_id']}")
            jobs = [job]
        else:
            jobs = self.store.list()[:MAX_LISTED_JOBS]
        with self._cond:
            live = {k: j.public() for k, j in self._live.items()}
        return [(identity, P.reply("jobs", header["id"],
                                   jobs=[job_summary(j, live.get(j["job_id"])) for j in jobs]))]

    def cancel(self, identity: bytes, header: Dict[str, Any]):
        out = []
        job_id = header["job_id"]
        with self._cond:
            job = self._live.get(job_id)
            if job is None:
                raise P.ProtocolError(P.E_NOT_FOUND, "no such job")
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

    def _check_model(self, model: str) -> None:
        from .registry import ModelCorrupt, ModelNotFound, load_card
        try:
            load_card(model)
        except ModelNotFound as exc:
            raise P.ProtocolError(P.E_NOT_FOUND, str(exc)) from None
        except ModelCorrupt as exc:
            raise P.ProtocolError(P.E_INVALID_INPUT, str(exc)) from None

    def _check_stopping(self) -> None:
        if self.server._stop.is_set():
            raise P.ProtocolError(P.E_BUSY, "the daemon is shutting down")

    def _enqueue(self, identity: bytes, request_id: Optional[str], job_id: str) -> Job:
        job = Job(job_id, request_id, identity, {"type": "batch", "job_id": job_id}, None)
        with self._cond:
            if job_id in self._live:
                raise P.ProtocolError(P.E_BUSY, f"batch job {job_id} is already queued or "
                                                f"running")
            self._live[job_id] = job
            self._queue.append(job)
            self._cond.notify()
        self.store.set_state(job_id, QUEUED, "queued")
        return job

    def run(self, request, arrays, progress, cancelled) -> Dict[str, Any]:
        """The job function ``Server._run_job`` calls for a batch job."""
        from .batch import run_batch
        return run_batch(self.store, request["job_id"], progress, cancelled)

    def _loop(self) -> None:
        server = self.server
        push = server._ctx.socket(zmq.PUSH)
        push.linger = 1000
        push.connect(server._events_endpoint)
        send_lock = threading.Lock()
        try:
            while True:
                with self._cond:
                    while not self._queue and not server._stop.is_set():
                        self._cond.wait(0.5)
                    if server._stop.is_set() or not self._queue:
                        return
                    job = self._queue.popleft()
                    job.state = "running"
                try:
                    server._run_job(job, push, send_lock)
                except Exception:  # never lose the thread
                    log.exception("batch thread failed on job %s", job.job_id)
                finally:
                    with self._cond:
                        self._live.pop(job.job_id, None)
                    if server._stop.is_set() and job.state != "done":
                        # a shutdown, not a user's cancel: resumable as interrupted
                        try:
                            self.store.set_state(job.job_id, RUNNING,
                                                 "interrupted: the daemon stopped")
                        except Exception:
                            log.exception("cannot record job %s as interrupted", job.job_id)
        finally:
            push.close()


__all__ = ["BatchService", "MAX_LISTED_JOBS"]
