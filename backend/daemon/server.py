"""The Ortholens daemon: a ZeroMQ ROUTER that answers the requests of ``protocol.schema``.

Threads:

* the **main loop** (:meth:`Server.serve_forever`) owns the ROUTER socket and an inproc
  PULL socket; it decodes and validates every request, answers ``ping``, ``models``,
  ``status`` and ``cancel`` itself (and ``versions`` / ``activate`` / ``rollback`` /
  ``keep`` of the user model versions, ``backend.models.versions``), and queues ``detect`` and
  ``retrain`` jobs (``backend.learning.finetune``: same events, one queue, so a
  detection waits while a retrain job runs on a single worker);
* ``workers`` **worker threads** take jobs from a queue that is served round-robin
  across clients (FIFO within one client, see ``backend.daemon.jobs.FairQueue``), run
  the job function and push the job's events (``progress`` and one terminal ``result``
  / ``error`` / ``cancelled``) through their own inproc PUSH socket to the main loop,
  which forwards them to the client that submitted the job. ZeroMQ sockets are not
  thread-safe, so no socket is ever shared between threads;
* one **batch thread** runs the batch jobs of ``backend.daemon.batch_service`` the same
  way, from that service's own queue.

Security (``backend.daemon.access``): the daemon binds to the loopback interface by
default. Binding any other address needs a token (:class:`ValueError` otherwise), and
then every request must carry ``"token"``; a daemon bound beyond loopback also only
reads raster files that resolve inside ``allowed_roots`` (``ORTHOLENS_ROOTS``).

Pixel uploads (``backend.daemon.uploads``): ``upload`` and ``window`` requests stream an
image the daemon cannot read itself into a file, window by window, and a ``detect``
names it as its source; the file goes when that detection ends.

Clients that go away: the ROUTER socket is ``ROUTER_MANDATORY`` (and sends ZMTP
heartbeats), so a reply or job event for a client that has disconnected fails with
``EHOSTUNREACH``; the daemon then cancels every job of that client (queued ones at once,
the running one at its next batch boundary) so the worker is free for others.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

import protocol as P
from backend import __version__
from backend.daemon.access import Access
from backend.daemon.batch_service import BatchService
from backend.daemon.uploads import DEFAULT_IDLE_S, DEFAULT_MAX_BYTES, UploadStore
from backend.daemon.jobs import (
    CANCELLED,
    DONE,
    ERROR,
    QUEUED,
    RUNNING,
    FairQueue,
    Job,
    JobFn,
    take_next,
)
from protocol.errors import OrtholensError

log = logging.getLogger("ortholens.server")

#: Worker threads (jobs run at once) and most waiting jobs, unless configured.
DEFAULT_WORKERS, DEFAULT_MAX_QUEUE = 1, 256
_MAX_MESSAGE = 500        # longest error / progress message sent, characters
_MAX_FINISHED_JOBS = 10_000
#: ZMTP heartbeat of the ROUTER socket: a peer silent for the timeout is dropped (and
#: its jobs cancelled) even when its TCP connection never closes (cable pulled, frozen VM).
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 5_000, 30_000


def _clip(text: Any, limit: int = _MAX_MESSAGE) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default_detect_fn(request, arrays, progress, cancelled):
    from backend.inference.detect import run_detect  # lazy: imports rasterio and engines
    return run_detect(request, arrays, progress, cancelled)


def _default_retrain_fn(request, arrays, progress, cancelled):
    from backend.inference.predictors import torch_available
    if not torch_available():
        raise P.JobError("this engine was installed for detection only (ONNX Runtime, no "
                         "PyTorch): retraining needs PyTorch. Run 'Set up the engine…' "
                         "again with PyTorch ticked, or pip install the engine with its "
                         "'train' extra.", P.E_NOT_FOUND)
    from backend.learning.retrain import run_retrain  # lazy: imports torch
    return run_retrain(request, arrays, progress, cancelled)


def _probe_device() -> str:
    try:
        from backend.inference.predictors import device_name
        return str(device_name())
    except Exception as exc:  # engines missing or torch broken: the daemon still answers
        log.warning("cannot probe the inference device (%s); reporting cpu", exc)
        return "cpu"


def _probe_device_info() -> Dict[str, Any]:
    """``backend.inference.predictors.device_info()`` (GPU name and memory, or CPU cores;
    the runtime; the PyTorch version or None); ``{"kind": "cpu"}`` when it fails."""
    try:
        from backend.inference.predictors import device_info
        return dict(device_info())
    except Exception as exc:  # the daemon still answers
        log.warning("cannot describe the inference device (%s)", exc)
        return {"kind": "cpu"}


class Server:
    """The daemon. Construct, then :meth:`serve_forever` (blocking) or
    :meth:`start_in_thread`; :meth:`stop` ends it.

    Args:
        host: interface to bind; loopback (default) or, with ``token``, any other.
            IPv6 addresses are accepted with or without brackets.
        port: TCP port; 0 picks a free one (see :attr:`endpoint` after :meth:`bind`).
        token: shared secret every request must carry as ``"token"`` (None: none).
        allowed_roots: folders raster paths must resolve into when paths are restricted
            (default: ``ORTHOLENS_ROOTS``).
        max_queue: most jobs waiting (not running); more get ``E_BUSY``.
        max_queue_bytes: most pixel bytes held by waiting jobs; more get ``E_BUSY``
            (a job is always accepted when no waiting job holds pixels).
        workers: worker threads, i.e. jobs run at the same time (>= 1).
        restrict_paths: check ``source.path`` against ``allowed_roots``; default: only
            when ``host`` is not loopback.
        detect_fn: the ``detect`` job function (``backend.daemon.jobs.JobFn``; default
            ``backend.inference.detect.run_detect``; the engine loads at the first job).
        device: the device string ``pong`` reports; default: probed with
            ``backend.inference.predictors.device_name()`` when serving starts.
        history_s: how long finished jobs stay visible to ``status``, seconds.
        progress_interval_s: least time between two ``progress`` events of one job.
        stop_timeout_s: on stop, how long to wait for running jobs to end.
        jobs_dir: folder of the batch job store (``batch`` / ``jobs`` / ``resume``
            requests, see ``backend.daemon.batch_service``); default
            ``ORTHOLENS_JOBS_DIR`` or the user's data folder.
        resume_jobs: at start, resume the batch jobs a killed daemon left running.
        retrain_fn: the ``retrain`` job function (default
            ``backend.learning.finetune.run_retrain``), same contract as ``detect_fn``.
        upload_dir: folder of the pixel uploads (default: a private temporary folder,
            deleted when the daemon stops).
        max_upload_bytes: most bytes of all open pixel uploads; more get ``E_BUSY``.
        upload_idle_s: a pixel upload nobody sends to for this long is dropped, seconds.

    Raises:
        ValueError: a non-loopback ``host`` without ``token``; ``workers`` or
            ``max_queue`` < 1.
    """

    def __init__(self, host: str = P.DEFAULT_HOST, port: int = P.DEFAULT_PORT,
                 token: Optional[str] = None, allowed_roots: Optional[Sequence[str]] = None,
                 max_queue: int = DEFAULT_MAX_QUEUE, workers: int = DEFAULT_WORKERS, *,
                 restrict_paths: Optional[bool] = None, detect_fn: Optional[JobFn] = None,
                 max_queue_bytes: int = 2 << 30,
                 device: Optional[str] = None, history_s: float = 3600.0,
                 progress_interval_s: float = 0.1, stop_timeout_s: float = 5.0,
                 jobs_dir: Optional[str] = None, resume_jobs: bool = False,
                 retrain_fn: Optional[JobFn] = None, upload_dir: Optional[str] = None,
                 max_upload_bytes: int = DEFAULT_MAX_BYTES,
                 upload_idle_s: float = DEFAULT_IDLE_S):
        self.access = Access.for_bind(host, token, restrict_paths, allowed_roots)
        if workers < 1 or max_queue < 1:
            raise ValueError("workers and max_queue must be >= 1")
        self.host = host.strip().strip("[]")
        self.port = int(port)
        self.max_queue = int(max_queue)
        self.max_queue_bytes = int(max_queue_bytes)
        self.workers = int(workers)
        self.device = device
        #: what ``pong`` says about the device beyond its name (see
        #: ``backend.inference.predictors.device_info``); probed when serving starts.
        self.device_info: Optional[Dict[str, Any]] = None
        self.history_s = float(history_s)
        self.progress_interval_s = float(progress_interval_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.endpoint: Optional[str] = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue = FairQueue()
        self._jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self._stop = threading.Event()
        self._ctx: Optional[zmq.Context] = None
        self._router: Optional[zmq.Socket] = None
        self._pull: Optional[zmq.Socket] = None
        self._events_endpoint = f"inproc://ortholens-events-{uuid.uuid4().hex}"
        self._workers: List[threading.Thread] = []
        self._thread: Optional[threading.Thread] = None
        self._served = False
        #: batch jobs: their own queue, thread and store
        self.batch = BatchService(self.access, self._stop, jobs_dir, resume_jobs)
        #: pixel uploads (``upload`` / ``window`` requests, ``upload`` sources)
        self.uploads = UploadStore(upload_dir, max_upload_bytes, idle_s=upload_idle_s)
        #: the job function of each job kind (``Job.kind``)
        self._job_fns: Dict[str, JobFn] = {
            "detect": detect_fn or _default_detect_fn,
            "retrain": retrain_fn or _default_retrain_fn,
            "batch": self.batch.run}

    @property
    def token(self) -> Optional[str]:
        """The token every request must carry (None: none)."""
        return self.access.token

    @property
    def restrict_paths(self) -> bool:
        """Whether file paths must lie inside :attr:`allowed_roots`."""
        return self.access.restrict_paths

    @property
    def allowed_roots(self) -> List[str]:
        """The folders (resolved) file paths must lie in when restricted."""
        return self.access.allowed_roots

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> str:
        """Create and bind the sockets (idempotent); returns ``tcp://host:port``.

        Raises:
            zmq.ZMQError: the address cannot be bound (``errno`` ``zmq.EADDRINUSE`` when
                the port is taken).
        """
        if self._router is not None:
            return self.endpoint  # type: ignore[return-value]
        ctx = zmq.Context()
        router = pull = None
        try:
            router = ctx.socket(zmq.ROUTER)
            router.linger = 0
            # a peer sending a bigger frame is disconnected before it fills our memory
            router.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME_BYTES)
            # sends to a vanished client fail (EHOSTUNREACH) instead of vanishing: its
            # jobs get cancelled; heartbeats find peers whose TCP link silently died
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            router.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            host = self.host
            if ":" in host:
                router.setsockopt(zmq.IPV6, 1)
                host = f"[{host}]"
            router.bind(f"tcp://{host}:{self.port if self.port else '*'}")
            self.endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
            self.port = int(self.endpoint.rsplit(":", 1)[1])
            pull = ctx.socket(zmq.PULL)
            pull.linger = 0
            pull.bind(self._events_endpoint)
        except Exception:
            for s in (router, pull):
                if s is not None:
                    s.close(0)
            ctx.term()
            raise
        self._ctx, self._router, self._pull = ctx, router, pull
        log.info("bound %s (token %s, paths %s)", self.endpoint,
                 "required" if self.token else "off",
                 f"restricted to {self.allowed_roots}" if self.restrict_paths else "unrestricted")
        return self.endpoint  # type: ignore[return-value]

    def serve_forever(self) -> None:
        """Bind if needed, start the workers and run the main loop until :meth:`stop`.

        Must be called once, from the thread that will own the sockets from then on.
        """
        if self._served:
            raise RuntimeError("serve_forever may run only once per Server")
        self._served = True
        self.bind()
        if self.device is None:
            self.device = _probe_device()
        if self.device_info is None:
            self.device_info = _probe_device_info()
        for n in range(self.workers):
            self._start_job_thread(f"ortholens-worker-{n}", self._next_job)
        self._start_job_thread("ortholens-batch", self.batch.next_job, self.batch.job_ended)
        self.batch.resume_interrupted_jobs()
        router, pull = self._router, self._pull
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        last_prune = time.monotonic()
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if pull in ready:
                    self._forward_events()
                if router in ready:
                    self._serve_requests()
                if time.monotonic() - last_prune > 10.0:
                    last_prune = time.monotonic()
                    with self._lock:
                        self._prune_locked()
                    self.uploads.prune(self._job_active)
            self._shutdown(poller)
        finally:
            self._close()

    def start_in_thread(self) -> threading.Thread:
        """Bind in the caller's thread (so bind errors raise here), then run
        :meth:`serve_forever` in a daemon thread; returns that thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="ortholens-server",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: Optional[float] = None) -> None:
        """Ask the main loop to stop (safe from signal handlers: it only sets a flag).

        Queued jobs end with ``error`` ``E_BUSY``, running ones are asked to cancel
        and get up to ``stop_timeout_s`` to finish. When the server runs in
        :meth:`start_in_thread`'s thread and ``stop`` is called from another thread, it
        waits for that thread (``timeout`` seconds, default ``stop_timeout_s + 2``).
        """
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(self.stop_timeout_s + 2.0 if timeout is None else timeout)

    def __enter__(self) -> "Server":
        self.start_in_thread()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _shutdown(self, poller: zmq.Poller) -> None:
        with self._cond:
            dropped = list(self._queue)
            self._queue.clear()
            now = time.time()
            for job in dropped:
                job.state, job.finished, job.arrays = ERROR, now, None
                job.message = "the daemon shut down before the job ran"
            self._cond.notify_all()
        for job in dropped:
            self._send(job.identity, P.error_reply(job.request_id, P.E_BUSY, job.message,
                                                   job_id=job.job_id))
        # running jobs see cancelled() turn true; forward their last events
        deadline = time.monotonic() + self.stop_timeout_s
        while any(t.is_alive() for t in self._workers) and time.monotonic() < deadline:
            if self._pull in dict(poller.poll(50)):
                self._forward_events()
        self._forward_events()
        log.info("stopped")

    def _close(self) -> None:
        alive = any(t.is_alive() for t in self._workers)
        self.uploads.close()
        for s in (self._pull, self._router):
            if s is not None:
                s.close(linger=0 if s is self._pull else 1000)
        if self._ctx is not None and not alive:
            self._ctx.term()
        elif alive:
            log.warning("a worker did not stop in %.1f s; leaving it behind",
                        self.stop_timeout_s)
        self._router = self._pull = None

    # ------------------------------------------------------------------ main loop

    def _send(self, identity: bytes, header: Dict[str, Any]) -> None:
        try:
            frames = P.encode(header, max_header_bytes=P.MAX_REPLY_HEADER_BYTES)
        except Exception as exc:  # a handler built a reply that is not JSON-safe
            log.exception("cannot encode a %s reply", header.get("type"))
            frames = P.encode(P.error_reply(header.get("id"), P.E_INTERNAL,
                                            f"reply cannot be encoded: {_clip(exc, 200)}"))
        self._router_send([identity] + frames)

    def _router_send(self, frames: List[Any]) -> None:
        try:
            # never blocks the main loop: a full pipe (slow client) raises EAGAIN
            self._router.send_multipart(frames, zmq.NOBLOCK, copy=False)  # type: ignore[union-attr]
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:  # ROUTER_MANDATORY: the client is gone
                self._client_gone(bytes(getattr(frames[0], "bytes", frames[0])))
            else:  # e.g. the client's high-water mark
                log.warning("dropping a reply: %s", exc)

    def _client_gone(self, identity: bytes) -> None:
        """Cancel every queued or running job of a client that disconnected."""
        now = time.time()
        with self._cond:
            active = [j for j in self._jobs.values()
                      if j.identity == identity and j.state in (QUEUED, RUNNING)]
            for job in active:
                job.cancel_reason = "cancelled: the client disconnected"
                job.cancel.set()
                if job.state == QUEUED:
                    self._queue.remove(job)
                    job.state, job.finished, job.arrays = CANCELLED, now, None
                    job.message = job.cancel_reason
        for job in active:
            log.info("job %s: its client disconnected; cancelling it", job.job_id)
        if not active:
            log.debug("dropping a reply to disconnected client %s", identity.hex())

    def _serve_requests(self) -> None:
        for _ in range(100):  # then give the event socket a turn
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)  # type: ignore[union-attr]
            except zmq.Again:
                return
            for identity, header in self.handle(frames):
                self._send(identity, header)

    def _forward_events(self) -> None:
        while True:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)  # type: ignore[union-attr]
            except zmq.Again:
                return
            self._router_send(frames)

    def handle(self, frames: Sequence[Any]) -> List[Tuple[bytes, Dict[str, Any]]]:
        """Answer one ROUTER message; never raises.

        Args:
            frames: ``[identity, header, array frames...]`` (``bytes`` or ``zmq.Frame``).

        Returns:
            ``[(identity, reply header), ...]`` to send, in order: usually one reply;
            none for a message without even an identity frame.
        """
        if not frames:
            return []
        identity = bytes(getattr(frames[0], "bytes", frames[0]))
        request_id: Optional[str] = None
        try:
            try:
                header, arrays = P.decode(list(frames[1:]))
                rid = header.get("id")
                if isinstance(rid, str) and 0 < len(rid) <= 128:
                    request_id = rid
                P.validate_request(header)
                self.access.check_token(header)
                log.debug("%s %s from %s", header["type"], request_id, identity.hex())
                return getattr(self, "_on_" + header["type"])(identity, header, arrays)
            except OrtholensError as exc:
                if exc.code not in P.ERROR_CODES:
                    raise
                return [(identity, P.error_reply(request_id, exc.code, _clip(exc.message),
                                                 field=exc.field))]
        except Exception as exc:
            log.exception("internal error answering request %s", request_id)
            return [(identity, P.error_reply(request_id, P.E_INTERNAL,
                                             f"internal error: {_clip(exc, 200)}"))]

    # ------------------------------------------------------------------ handlers

    def _cards(self) -> list:
        from backend.models.catalog import list_cards
        return list_cards()

    def _on_ping(self, identity, header, arrays):
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.state in (QUEUED, RUNNING))
        try:
            ids = [c.id for c in self._cards()]
        except Exception as exc:
            log.warning("cannot list models: %s", exc)
            ids = []
        return [(identity, P.reply("pong", header["id"], version=__version__,
                                   protocol=P.PROTOCOL_VERSION,
                                   device=self.device or "cpu",
                                   device_info=self.device_info or {"kind": "cpu"},
                                   models=ids, jobs=active))]

    def _on_models(self, identity, header, arrays):
        from backend.models.catalog import default_model_id
        cards = self._cards()
        default = default_model_id(cards, str(self.device or "").startswith("cuda"))
        return [(identity, P.reply("models", header["id"],
                                   models=[dict(c.public(), default=c.id == default)
                                           for c in cards]))]

    def _on_detect(self, identity, header, arrays):
        request = {k: v for k, v in header.items() if k != "token"}
        upload_id = None
        if header["source"].get("kind") == "upload":
            upload_id = header["source"]["upload_id"]  # the daemon's own file: no roots
        else:
            request["source"] = self.access.check_source(header["source"])
        nbytes = sum(a.nbytes for a in arrays)
        with self._lock:  # only this thread adds jobs: the check holds until we do
            if self._stop.is_set():
                raise P.JobError("the daemon is shutting down", P.E_BUSY)
            if len(self._queue) >= self.max_queue:
                raise P.JobError(f"the job queue is full ({len(self._queue)} jobs waiting); "
                                 f"try again later", P.E_BUSY)
            queued_bytes = sum(a.nbytes for j in self._queue for a in (j.arrays or ()))
            if nbytes and queued_bytes and queued_bytes + nbytes > self.max_queue_bytes:
                raise P.JobError(f"the queued jobs already hold {queued_bytes >> 20} MiB of "
                                 f"pixels; try again later", P.E_BUSY)
        job_id = uuid.uuid4().hex
        if upload_id is not None:  # the job reads the upload's file, deleted at its end
            request["source"] = {"kind": "file",
                                 "path": self.uploads.claim(upload_id, job_id)}
        copies = [np.array(a, copy=True) for a in arrays]  # frames get reused
        with self._cond:
            self._prune_locked()
            job = Job(job_id, header["id"], identity, request, copies)
            self._jobs[job.job_id] = job
            self._queue.append(job)
            self._cond.notify()
        log.info("job %s queued: model %s, %s source", job.job_id, request["model"],
                 request["source"].get("kind"))
        # Sent by the main loop before it forwards any event of the job: order holds.
        return [(identity, P.reply("accepted", header["id"], job_id=job.job_id))]

    def _on_status(self, identity, header, arrays):
        with self._lock:
            self._prune_locked()
            if "job_id" in header:
                job = self._jobs.get(header["job_id"])
                if job is None:
                    raise P.JobError("no such job", P.E_NOT_FOUND)
                jobs = [job.public()]
            else:
                jobs = [j.public() for j in self._jobs.values()]
        return [(identity, P.reply("status", header["id"], jobs=jobs))]

    def _on_cancel(self, identity, header, arrays):
        if header["job_id"] not in self._jobs and self.batch.has(header["job_id"]):
            return self.batch.cancel(identity, header)
        if header["job_id"] not in self._jobs and self.uploads.drop(header["job_id"]):
            return [(identity, P.reply("cancelled", header["id"], job_id=header["job_id"],
                                       state=CANCELLED))]
        out = []
        with self._lock:
            job = self._jobs.get(header["job_id"])
            if job is None:
                raise P.JobError("no such job", P.E_NOT_FOUND)
            job.cancel.set()
            if job.state == QUEUED:  # dropped without running
                self._queue.remove(job)
                job.state, job.finished, job.arrays = CANCELLED, time.time(), None
                out.append((job.identity, P.reply("cancelled", job.request_id,
                                                  job_id=job.job_id)))
            state = job.state
        log.info("job %s: cancel requested (%s)", job.job_id, state)
        # reply first, then the job's terminal event (to the submitter)
        return [(identity, P.reply("cancelled", header["id"], job_id=job.job_id,
                                   state=state))] + out

    def _on_retrain(self, identity, header, arrays):
        """Queue a ``retrain`` job (``backend.learning.finetune``) like a detection."""
        reviewed = header.get("reviewed") or []
        checked = [dict(a, source=self.access.check_source(a["source"]))
                   if a.get("source") else a for a in reviewed]
        if reviewed:
            header = dict(header, reviewed=checked)
        return self._on_detect(identity, header, arrays)

    def _versions_reply(self, header, fn):
        d = fn(header["model"])  # VersionError carries its code
        return P.reply("versions", header["id"], **d)

    def _on_versions(self, identity, header, arrays):
        from backend.models.versions import describe
        return [(identity, self._versions_reply(header, describe))]

    def _on_activate(self, identity, header, arrays):
        from backend.models.versions import activate
        reply = self._versions_reply(header, activate)
        log.info("active version of %s: %s", reply["model"], reply["active"])
        return [(identity, reply)]

    def _on_rollback(self, identity, header, arrays):
        from backend.models.versions import rollback
        reply = self._versions_reply(header, rollback)
        log.info("rolled back %s to %s", reply["model"], reply["active"])
        return [(identity, reply)]

    def _on_keep(self, identity, header, arrays):
        """Keep a retrain candidate the rule did not accept (the user's choice)."""
        from backend.models.pending import keep_pending
        reply = self._versions_reply(
            header, lambda m: keep_pending(m, header["pending"], header.get("note")))
        log.info("kept candidate %s of %s as %s", header["pending"], reply["model"],
                 reply["kept"])
        return [(identity, reply)]

    def _on_import_model(self, identity, header, arrays):
        """Import an ONNX file on this computer as a model (``backend.models.imported``);
        the reply ``imported`` carries its card."""
        from backend.models.imported import import_onnx
        from protocol.importing import ImportParams
        params = ImportParams.from_header(header)
        path = self.access.check_path(params.path, field="path", what="model")
        card = import_onnx(path, params.values, params.model)  # errors carry their code
        log.info("imported %s as model %s", path, card.id)
        return [(identity, P.reply("imported", header["id"], card=card.public()))]

    def _on_upload(self, identity, header, arrays):
        """Open a pixel upload (``backend.daemon.uploads``)."""
        self.uploads.prune(self._job_active)
        if self._stop.is_set():
            raise P.JobError("the daemon is shutting down", P.E_BUSY)
        return [(identity, P.reply("upload", header["id"], **self.uploads.open(header)))]

    def _on_window(self, identity, header, arrays):
        """Store one window of a pixel upload."""
        return [(identity, P.reply("upload", header["id"],
                                   **self.uploads.write(header, arrays)))]

    def _job_active(self, job_id: str) -> bool:
        """True while the interactive job ``job_id`` is queued or running."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job is not None and job.finished is None

    def _on_batch(self, identity, header, arrays):
        return self.batch.on_batch(identity, header)

    def _on_jobs(self, identity, header, arrays):
        return self.batch.on_jobs(identity, header)

    def _on_resume(self, identity, header, arrays):
        return self.batch.on_resume(identity, header)

    def _prune_locked(self) -> None:
        cutoff = time.time() - self.history_s
        finished = [j for j in self._jobs.values() if j.finished is not None]
        excess = len(finished) - _MAX_FINISHED_JOBS
        for j in finished:
            if j.finished < cutoff or excess > 0:
                del self._jobs[j.job_id]
                excess -= 1

    # ------------------------------------------------------------------ workers

    def _start_job_thread(self, name: str, next_job: Callable[[], Optional[Job]],
                          job_ended: Optional[Callable[[Job], None]] = None) -> None:
        """Start a thread running jobs from ``next_job`` (see :meth:`_serve_jobs`); the
        server waits for it on stop."""
        t = threading.Thread(target=self._serve_jobs, args=(next_job, job_ended), name=name,
                             daemon=True)
        t.start()
        self._workers.append(t)

    def _next_job(self) -> Optional[Job]:
        """The next job of the interactive queue (see ``jobs.take_next``)."""
        return take_next(self._cond, self._queue, self._stop)

    def _serve_jobs(self, next_job: Callable[[], Optional[Job]],
                    job_ended: Optional[Callable[[Job], None]] = None) -> None:
        """A job thread: run the jobs ``next_job`` hands out until it returns None,
        calling ``job_ended`` after each; events go out through this thread's own PUSH
        socket."""
        push = self._ctx.socket(zmq.PUSH)  # type: ignore[union-attr]
        push.linger = 1000
        push.connect(self._events_endpoint)
        send_lock = threading.Lock()  # progress() may be called from a job's threads
        try:
            while True:
                job = next_job()
                if job is None:
                    return
                try:
                    self._run_job(job, push, send_lock)
                except Exception:  # never lose the thread
                    log.exception("job thread failed on job %s", job.job_id)
                finally:
                    if job_ended is not None:
                        job_ended(job)
        finally:
            push.close()

    def _run_job(self, job: Job, push: zmq.Socket, send_lock: threading.Lock) -> None:
        def emit(frames: List[Any]) -> None:
            with send_lock:
                push.send_multipart([job.identity] + frames)

        last_sent = [0.0]

        def progress(fraction: float, message: str = "") -> None:
            try:
                f = float(fraction)
            except (TypeError, ValueError):
                return
            if not math.isfinite(f):
                return
            f = min(1.0, max(0.0, f))
            msg = _clip(message)
            with self._lock:
                job.fraction, job.message = f, msg
            now = time.monotonic()
            if now - last_sent[0] < self.progress_interval_s:
                return
            last_sent[0] = now
            try:
                emit(P.encode(P.reply("progress", job.request_id, job_id=job.job_id,
                                      fraction=f, message=msg)))
            except Exception:
                log.exception("cannot send progress of job %s", job.job_id)

        def cancelled() -> bool:
            return job.cancel.is_set() or self._stop.is_set()

        log.info("job %s running", job.job_id)
        t0 = time.monotonic()
        try:
            if cancelled():  # cancelled between leaving the queue and starting
                raise P.JobError("cancelled before it started", P.E_BUSY)
            out = self._job_fns[job.kind](job.request, job.arrays, progress, cancelled)
            frames = self._result_frames(job, out)
            state, message = DONE, ""
        except Exception as exc:
            state, message, header = self._failure(job, exc)
            frames = P.encode(header)
        job.arrays = None
        self.uploads.release_job(job.job_id)
        with self._lock:
            job.state, job.finished = state, time.time()
            if state == DONE:
                job.fraction = 1.0
            if message or state != DONE:
                job.message = message
        log.info("job %s %s in %.2f s%s", job.job_id, state, time.monotonic() - t0,
                 f": {message}" if message else "")
        emit(frames)

    def _result_frames(self, job: Job, out: Any) -> List[Any]:
        if (not isinstance(out, dict) or not isinstance(out.get("crs"), str)
                or not isinstance(out.get("features"), list)
                or not isinstance(out.get("stats", {}), dict)):
            raise TypeError("a job function must return {'crs': str, 'features': list, "
                            "'stats': dict}")
        header = P.reply("result", job.request_id, job_id=job.job_id, crs=out["crs"],
                         features=out["features"], stats=out.get("stats", {}))
        if isinstance(out.get("retrain"), dict):  # a retrain job's report
            header["retrain"] = out["retrain"]
        try:
            return P.encode(header, max_header_bytes=P.MAX_REPLY_HEADER_BYTES)
        except P.ProtocolError:
            raise P.JobError(f"the result ({len(out['features'])} polygons) is too large; "
                             f"process a smaller extent", P.E_INVALID_INPUT) from None

    def _failure(self, job: Job, exc: Exception) -> Tuple[str, str, Dict[str, Any]]:
        """``(state, message, terminal event header)`` for a job that raised ``exc``."""
        rid, jid = job.request_id, job.job_id
        if job.cancel.is_set() or (isinstance(exc, P.JobCancelled)
                                   and not self._stop.is_set()):
            return (CANCELLED, job.cancel_reason or "cancelled",
                    P.reply("cancelled", rid, job_id=jid))
        if self._stop.is_set():
            msg = "the daemon shut down before the job finished"
            return ERROR, msg, P.error_reply(rid, P.E_BUSY, msg, job_id=jid)
        if isinstance(exc, OrtholensError) and exc.code in P.ERROR_CODES:
            msg = _clip(exc.message or exc)
            return ERROR, msg, P.error_reply(rid, exc.code, msg, job_id=jid,
                                             field=exc.field)
        log.error("job %s failed", jid, exc_info=exc)
        msg = _clip(f"internal error: {type(exc).__name__}: {exc}", 200)
        return ERROR, msg, P.error_reply(rid, P.E_INTERNAL, msg, job_id=jid)
