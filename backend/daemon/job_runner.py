"""The job threads of the daemon: they run jobs and send the jobs' events.

A :class:`JobRunner` starts the threads of one daemon (``backend.daemon.server``): the
interactive workers and the batch thread. Each thread takes jobs from its own source
(``next_job``), runs the job function of the job's kind (``backend.daemon.jobs.JobFn``)
and pushes the job's events (``progress`` and one terminal ``result`` / ``error`` /
``cancelled``) through its own inproc PUSH socket to the server's main loop, which
forwards them to the client that submitted the job. ZeroMQ sockets are not
thread-safe, so no socket is shared between threads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import zmq

import protocol as P
from backend.daemon.jobs import CANCELLED, DONE, ERROR, Job, JobFn
from protocol.errors import OrtholensError

log = logging.getLogger("ortholens.server")

#: Longest error or progress message sent, characters.
MAX_MESSAGE = 500


def clip(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``str(text)``, cut to ``limit`` characters (ending in ``...`` when cut)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def default_detect_fn(request, arrays, progress, cancelled):
    """The ``detect`` job function: ``backend.inference.detect.run_detect``."""
    from backend.inference.detect import run_detect  # lazy: imports rasterio and engines
    return run_detect(request, arrays, progress, cancelled)


def default_region_fn(request, arrays, progress, cancelled):
    """The ``region`` job function: ``backend.inference.region.run_region``."""
    from backend.inference.region import run_region  # lazy: imports rasterio and engines
    return run_region(request, arrays, progress, cancelled)


def default_inventory_fn(request, arrays, progress, cancelled):
    """The ``inventory`` job function: ``backend.reports.job.run_inventory``."""
    from backend.reports.job import run_inventory  # lazy: shapely, pyproj, matplotlib
    return run_inventory(request, arrays, progress, cancelled)


def default_retrain_fn(request, arrays, progress, cancelled):
    """The ``retrain`` job function: ``backend.learning.retrain.run_retrain``.

    Raises:
        protocol.errors.JobError: ``not_found`` on an engine without PyTorch.
    """
    from backend.inference.predictors import torch_available
    if not torch_available():
        raise P.JobError("this engine was installed for detection only (ONNX Runtime, no "
                         "PyTorch): retraining needs PyTorch. Run 'Set up the engine…' "
                         "again with PyTorch ticked, or pip install the engine with its "
                         "'train' extra.", P.E_NOT_FOUND)
    from backend.learning.retrain import run_retrain  # lazy: imports torch
    return run_retrain(request, arrays, progress, cancelled)


def result_frames(job: Job, out: Any) -> List[Any]:
    """The frames of the ``result`` event of ``job``, whose function returned ``out``.

    Raises:
        TypeError: ``out`` is not ``{"crs": str, "features": list, "stats": dict}``.
        protocol.errors.JobError: ``invalid_input`` when the result is too large to send.
    """
    if (not isinstance(out, dict) or not isinstance(out.get("crs"), str)
            or not isinstance(out.get("features"), list)
            or not isinstance(out.get("stats", {}), dict)):
        raise TypeError("a job function must return {'crs': str, 'features': list, "
                        "'stats': dict}")
    header = P.reply("result", job.request_id, job_id=job.job_id, crs=out["crs"],
                     features=out["features"], stats=out.get("stats", {}))
    if isinstance(out.get("retrain"), dict):  # a retrain job's report
        header["retrain"] = out["retrain"]
    if isinstance(out.get("candidates"), list):  # a detection's candidate misses
        header["candidates"] = out["candidates"]
    try:
        return P.encode(header, max_header_bytes=P.MAX_REPLY_HEADER_BYTES)
    except P.ProtocolError:
        raise P.JobError(f"the result ({len(out['features'])} polygons) is too large; "
                         f"process a smaller extent", P.E_INVALID_INPUT) from None


def failure(job: Job, exc: Exception, stopping: bool) -> Tuple[str, str, Dict[str, Any]]:
    """``(state, message, terminal event header)`` for a job that raised ``exc``;
    ``stopping``: the daemon is shutting down."""
    rid, jid = job.request_id, job.job_id
    if job.cancel.is_set() or (isinstance(exc, P.JobCancelled) and not stopping):
        return (CANCELLED, job.cancel_reason or "cancelled",
                P.reply("cancelled", rid, job_id=jid))
    if stopping:
        msg = "the daemon shut down before the job finished"
        return ERROR, msg, P.error_reply(rid, P.E_BUSY, msg, job_id=jid)
    if isinstance(exc, OrtholensError) and exc.code in P.ERROR_CODES:
        msg = clip(exc.message or exc)
        return ERROR, msg, P.error_reply(rid, exc.code, msg, job_id=jid, field=exc.field)
    log.error("job %s failed", jid, exc_info=exc)
    msg = clip(f"internal error: {type(exc).__name__}: {exc}", 200)
    return ERROR, msg, P.error_reply(rid, P.E_INTERNAL, msg, job_id=jid)


class JobRunner:
    """The job threads of one daemon.

    Args:
        job_fns: the job function of each job kind (``Job.kind``).
        lock: guards a job's ``state``, ``fraction`` and ``message`` (the server's job
            table lock: ``status`` reads them).
        stopping: the daemon's stop flag; a job sees ``cancelled()`` once it is set.
        job_done: called with each job id once its job ended (the server drops the
            job's pixel upload).
        progress_interval_s: least time between two ``progress`` events of one job.
        clock: the monotonic clock, seconds, ``progress_interval_s`` is measured with
            (tests pass a clock they move by hand).
    """

    def __init__(self, job_fns: Dict[str, JobFn], lock: threading.Lock,
                 stopping: threading.Event, job_done: Callable[[str], None],
                 progress_interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.job_fns = job_fns
        self.lock = lock
        self.stopping = stopping
        self.job_done = job_done
        self.progress_interval_s = float(progress_interval_s)
        self.clock = clock
        self.threads: List[threading.Thread] = []

    def alive(self) -> bool:
        """True while a job thread still runs."""
        return any(t.is_alive() for t in self.threads)

    def start(self, ctx: zmq.Context, events_endpoint: str, name: str,
              next_job: Callable[[], Optional[Job]],
              job_ended: Optional[Callable[[Job], None]] = None) -> None:
        """Start a thread running jobs from ``next_job`` (see :meth:`serve`) whose
        events go to the PULL socket bound at ``events_endpoint`` of ``ctx``."""
        t = threading.Thread(target=self.serve, args=(ctx, events_endpoint, next_job,
                                                      job_ended), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def serve(self, ctx: zmq.Context, events_endpoint: str,
              next_job: Callable[[], Optional[Job]],
              job_ended: Optional[Callable[[Job], None]] = None) -> None:
        """A job thread: run the jobs ``next_job`` hands out until it returns None,
        calling ``job_ended`` after each; events go out through this thread's own PUSH
        socket."""
        push = ctx.socket(zmq.PUSH)
        push.linger = 1000
        push.connect(events_endpoint)
        send_lock = threading.Lock()  # progress() may be called from a job's threads
        try:
            while True:
                job = next_job()
                if job is None:
                    return
                try:
                    self.run(job, push, send_lock)
                except Exception:  # never lose the thread
                    log.exception("job thread failed on job %s", job.job_id)
                finally:
                    if job_ended is not None:
                        job_ended(job)
        finally:
            push.close()

    def run(self, job: Job, push: zmq.Socket, send_lock: threading.Lock) -> None:
        """Run ``job``'s function and send its events; records the job's end state."""
        def emit(frames: List[Any]) -> None:
            with send_lock:
                push.send_multipart([job.identity] + frames)

        def cancelled() -> bool:
            return job.cancel.is_set() or self.stopping.is_set()

        log.info("job %s running", job.job_id)
        t0 = time.monotonic()
        try:
            if cancelled():  # cancelled between leaving the queue and starting
                raise P.JobError("cancelled before it started", P.E_BUSY)
            out = self.job_fns[job.kind](job.request, job.arrays,
                                         self._progress(job, emit), cancelled)
            frames = result_frames(job, out)
            state, message = DONE, ""
        except Exception as exc:
            state, message, header = failure(job, exc, self.stopping.is_set())
            frames = P.encode(header)
        job.arrays = None
        self.job_done(job.job_id)
        with self.lock:
            job.state, job.finished = state, time.time()
            if state == DONE:
                job.fraction = 1.0
            if message or state != DONE:
                job.message = message
        log.info("job %s %s in %.2f s%s", job.job_id, state, time.monotonic() - t0,
                 f": {message}" if message else "")
        emit(frames)

    def _progress(self, job: Job, emit: Callable[[List[Any]], None]
                  ) -> Callable[[float, str], None]:
        """The ``progress(fraction, message)`` callback of ``job``: records the
        progress and sends it at most every ``progress_interval_s`` (the first call
        always)."""
        last_sent: List[Optional[float]] = [None]

        def progress(fraction: float, message: str = "") -> None:
            try:
                f = float(fraction)
            except (TypeError, ValueError):
                return
            if not math.isfinite(f):
                return
            f = min(1.0, max(0.0, f))
            msg = clip(message)
            with self.lock:
                job.fraction, job.message = f, msg
            now = self.clock()
            if last_sent[0] is not None and now - last_sent[0] < self.progress_interval_s:
                return
            last_sent[0] = now
            try:
                emit(P.encode(P.reply("progress", job.request_id, job_id=job.job_id,
                                      fraction=f, message=msg)))
            except Exception:
                log.exception("cannot send progress of job %s", job.job_id)

        return progress


__all__ = ["MAX_MESSAGE", "clip", "default_detect_fn", "default_region_fn", "default_retrain_fn",
           "result_frames", "failure", "JobRunner"]
