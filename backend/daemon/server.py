"""The Ortholens daemon: a ZeroMQ ROUTER that answers the requests of ``protocol.schema``.

Threads:

* the **main loop** (:meth:`Server.serve_forever`) owns the ROUTER socket and an inproc
  PULL socket; it decodes and validates every request and answers it with the handler
  of its type (``backend.daemon.handlers``): ``ping``, ``models``, ``status`` and
  ``cancel`` itself (and ``versions`` / ``activate`` / ``rollback`` / ``keep`` of the
  user model versions, ``backend.models.versions``, and ``import_model``,
  ``backend.models.imported``), and queues ``detect``, ``retrain``
  (``backend.learning.retrain``) and ``inventory`` (``backend.reports``) jobs: same
  events, one queue, so a detection waits while a retrain job runs on a single
  worker;
* ``workers`` **worker threads** (``backend.daemon.job_runner``) take jobs from a queue
  that is served round-robin across clients (FIFO within one client, see
  ``backend.daemon.jobs.FairQueue``), run the job function and push the job's events
  (``progress`` and one terminal ``result`` / ``error`` / ``cancelled``) through their
  own inproc PUSH socket to the main loop, which forwards them to the client that
  submitted the job. ZeroMQ sockets are not thread-safe, so no socket is ever shared
  between threads;
* one **batch thread** runs the batch jobs of ``backend.daemon.batch_service`` the same
  way, from that service's own queue.

Security (``backend.daemon.access``): the daemon binds to the loopback interface by
default. Binding any other address needs a token (:class:`ValueError` otherwise), and
then every request must carry ``"token"``; a daemon bound beyond loopback also only
reads and writes files that resolve inside ``allowed_roots`` (``ORTHOLENS_ROOTS``):
:meth:`Server.handle` checks every path a request names
(``backend.daemon.access.REQUEST_PATHS``) before its handler runs, and the handler gets
the resolved paths.

Pixel uploads (``backend.daemon.uploads``): ``upload`` and ``window`` requests stream an
image the daemon cannot read itself into a file, window by window, and a ``detect``
names it as its source; the file goes when that detection ends.

Clients that go away: the ROUTER socket is ``ROUTER_MANDATORY`` (and sends ZMTP
heartbeats), so a reply or job event for a client that has disconnected fails with
``EHOSTUNREACH``; the daemon then cancels every job of that client (queued ones at once,
the running one at its next batch boundary) so the worker is free for others.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import zmq

import protocol as P
from backend.daemon.access import Access
from backend.daemon.batch_service import BatchService
from backend.daemon.handlers import HANDLERS
from backend.daemon.job_runner import (JobRunner, clip, default_detect_fn,
                                       default_inventory_fn, default_region_fn,
                                       default_retrain_fn)
from backend.daemon.jobs import JobFn, JobTable
from backend.daemon.uploads import DEFAULT_IDLE_S, DEFAULT_MAX_BYTES, UploadStore
from protocol.errors import OrtholensError

log = logging.getLogger("ortholens.server")

#: Worker threads (jobs run at once) and most waiting jobs, unless configured.
DEFAULT_WORKERS, DEFAULT_MAX_QUEUE = 1, 256
#: ZMTP heartbeat of the ROUTER socket: a peer silent for the timeout is dropped (and
#: its jobs cancelled) even when its TCP connection never closes (cable pulled, frozen VM).
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 5_000, 30_000


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
        restrict_paths: check every path a request names against ``allowed_roots``
            (``backend.daemon.access.REQUEST_PATHS``); default: only when ``host`` is
            not loopback.
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
            ``backend.learning.retrain.run_retrain``), same contract as ``detect_fn``.
        upload_dir: folder of the pixel uploads (default: a private temporary folder,
            deleted when the daemon stops).
        max_upload_bytes: most bytes of all open pixel uploads; more get ``E_BUSY``.
        upload_idle_s: a pixel upload nobody sends to for this long is dropped, seconds.
        idle_exit_s: stop after this many seconds with no request, no job queued or
            running and no pixel upload open (0: never). The plugin and ``qgis_process``
            start their engine with it, so that it does not stay in memory once they are
            gone; an engine started by hand stays until stopped.
        clock: the monotonic clock, seconds, of the idle time and of
            ``progress_interval_s`` (tests drive it).

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
                 upload_idle_s: float = DEFAULT_IDLE_S, idle_exit_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
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
        self.idle_exit_s = float(idle_exit_s)
        self._clock = clock
        self._last_busy = clock()
        #: the interactive jobs: their queue, and those ``status`` shows
        self.table = JobTable(history_s)
        self._stop = threading.Event()
        self._ctx: Optional[zmq.Context] = None
        self._router: Optional[zmq.Socket] = None
        self._pull: Optional[zmq.Socket] = None
        self._events_endpoint = f"inproc://ortholens-events-{uuid.uuid4().hex}"
        self._thread: Optional[threading.Thread] = None
        self._served = False
        #: batch jobs: their own queue, thread and store
        self.batch = BatchService(self.access, self._stop, jobs_dir, resume_jobs)
        #: pixel uploads (``upload`` / ``window`` requests, ``upload`` sources)
        self.uploads = UploadStore(upload_dir, max_upload_bytes, idle_s=upload_idle_s)
        #: the job threads, with the job function of each job kind (``Job.kind``)
        self.runner = JobRunner({"detect": detect_fn or default_detect_fn,
                                 "retrain": retrain_fn or default_retrain_fn,
                                 "inventory": default_inventory_fn,
                                 "region": default_region_fn,
                                 "batch": self.batch.run},
                                self.table.lock, self._stop, self.uploads.release_job,
                                progress_interval_s, clock)

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

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

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
            self.runner.start(self._ctx, self._events_endpoint, f"ortholens-worker-{n}",
                              lambda: self.table.next_job(self._stop))
        self.runner.start(self._ctx, self._events_endpoint, "ortholens-batch",
                          self.batch.next_job, self.batch.job_ended)
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
                if self._idle_too_long(bool(ready)):
                    log.info("no work for %.0f s: stopping (idle exit)", self.idle_exit_s)
                    self._stop.set()
                if time.monotonic() - last_prune > 10.0:
                    last_prune = time.monotonic()
                    with self.table.lock:
                        self.table.prune_locked()
                    self.uploads.prune(self.table.is_active)
            self._shutdown(poller)
        finally:
            self._close()

    def _idle_too_long(self, traffic: bool) -> bool:
        """Whether the idle exit is due: ``idle_exit_s`` seconds have passed since the
        last request, job or open upload (``traffic``: a message arrived just now)."""
        if self.idle_exit_s <= 0:
            return False
        now = self._clock()
        if (traffic or self.table.active_count() or self.batch.active_count()
                or len(self.uploads)):
            self._last_busy = now
            return False
        return now - self._last_busy >= self.idle_exit_s

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
        dropped = self.table.drop_queued("the daemon shut down before the job ran")
        for job in dropped:
            self._send(job.identity, P.error_reply(job.request_id, P.E_BUSY, job.message,
                                                   job_id=job.job_id))
        # running jobs see cancelled() turn true; forward their last events
        deadline = time.monotonic() + self.stop_timeout_s
        while self.runner.alive() and time.monotonic() < deadline:
            if self._pull in dict(poller.poll(50)):
                self._forward_events()
        self._forward_events()
        log.info("stopped")

    def _close(self) -> None:
        alive = self.runner.alive()
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
                                            f"reply cannot be encoded: {clip(exc, 200)}"))
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
        active = self.table.client_gone(identity, "cancelled: the client disconnected")
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
                header = self.access.check_request(header)  # every path, one rule
                log.debug("%s %s from %s", header["type"], request_id, identity.hex())
                return HANDLERS[header["type"]](self, identity, header, arrays)
            except OrtholensError as exc:
                if exc.code not in P.ERROR_CODES:
                    raise
                return [(identity, P.error_reply(request_id, exc.code, clip(exc.message),
                                                 field=exc.field))]
        except Exception as exc:
            log.exception("internal error answering request %s", request_id)
            return [(identity, P.error_reply(request_id, P.E_INTERNAL,
                                             f"internal error: {clip(exc, 200)}"))]
