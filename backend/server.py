"""The Ortholens daemon: a ZeroMQ ROUTER that answers the requests of ``plugin.protocol``.

Threads:

* the **main loop** (:meth:`Server.serve_forever`) owns the ROUTER socket and an inproc
  PULL socket; it decodes and validates every request, answers ``ping``, ``models``,
  ``status`` and ``cancel`` itself (and ``versions`` / ``activate`` / ``rollback`` of
  the user model versions, ``backend.versions``), and queues ``detect`` and
  ``retrain`` jobs (``backend.retrain``: same events, one queue, so a detection waits
  while a retrain job runs on a single worker);
* ``workers`` **worker threads** take jobs from a queue that is served round-robin
  across clients (FIFO within one client, see :class:`FairQueue`), run the detect function
  and push the job's events (``progress`` and one terminal ``result`` / ``error`` /
  ``cancelled``) through their own inproc PUSH socket to the main loop, which forwards
  them to the client that submitted the job. ZeroMQ sockets are not thread-safe, so no
  socket is ever shared between threads.

Security: the daemon binds to the loopback interface by default. Binding any other
address needs a token (:class:`ValueError` otherwise), and then every request must carry
``"token"``; a daemon bound beyond loopback also only reads raster files that resolve
inside ``allowed_roots`` (``ORTHOLENS_ROOTS``).

Clients that go away: the ROUTER socket is ``ROUTER_MANDATORY`` (and sends ZMTP
heartbeats), so a reply or job event for a client that has disconnected fails with
``EHOSTUNREACH``; the daemon then cancels every job of that client (queued ones at once,
the running one at its next batch boundary) so the worker is free for others.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

from plugin import protocol as P

from . import __version__

log = logging.getLogger("ortholens.server")

#: ``detect_fn(request, arrays, progress, cancelled) -> {"crs", "features", "stats"}``.
DetectFn = Callable[[Dict[str, Any], List[np.ndarray], Callable[[float, str], None],
                     Callable[[], bool]], Dict[str, Any]]

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
_FINISHED = (DONE, ERROR, CANCELLED)
_MAX_MESSAGE = 500        # longest error / progress message sent, characters
_MAX_FINISHED_JOBS = 10_000
#: ZMTP heartbeat of the ROUTER socket: a peer silent for the timeout is dropped (and
#: its jobs cancelled) even when its TCP connection never closes (cable pulled, frozen VM).
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 5_000, 30_000


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def roots_from_env() -> List[str]:
    """Folders of ``ORTHOLENS_ROOTS`` (``os.pathsep``-separated; empty entries dropped)."""
    return [r for r in os.environ.get("ORTHOLENS_ROOTS", "").split(os.pathsep) if r.strip()]


def _clip(text: Any, limit: int = _MAX_MESSAGE) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default_detect_fn(request, arrays, progress, cancelled):
    from .detect import run_detect  # lazy: imports torch / onnxruntime
    return run_detect(request, arrays, progress, cancelled)


def _default_retrain_fn(request, arrays, progress, cancelled):
    from .retrain import run_retrain  # lazy: imports torch
    return run_retrain(request, arrays, progress, cancelled)


def _probe_device() -> str:
    try:
        from .engines import device_name
        return str(device_name())
    except Exception as exc:  # engines missing or torch broken: the daemon still answers
        log.warning("cannot probe the inference device (%s); reporting cpu", exc)
        return "cpu"


@dataclass
class Job:
    """One ``detect`` request and its state.

    Attributes:
        job_id: 32 hex characters.
        request_id: the ``id`` of the detect request; every event of the job carries it.
        identity: ROUTER identity of the submitting client; events go there.
        request: the validated request header (without ``token``).
        arrays: the request's arrays, private copies; dropped when the job ends.
        state: ``queued``, ``running``, ``done``, ``error`` or ``cancelled``.
        fraction: progress 0..1; message: last progress or error text.
        cancel: set to ask a running job to stop at its next batch boundary.
        created, finished: ``time.time()`` stamps (``finished`` None while active).
    """

    job_id: str
    request_id: str
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

    def __iter__(self):
        for jobs in list(self._clients.values()):
            yield from list(jobs)

    def append(self, job: Job) -> None:
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
        self._clients.clear()
        self._n = 0


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
        detect_fn: the job function (default ``backend.detect.run_detect``, imported when
            the first job runs). It is called as ``detect_fn(request, arrays, progress,
            cancelled)``; it raises an exception with string attributes ``code`` (an
            ``E_*`` code) and ``message`` for bad input, and ``JobCancelled`` (matched by
            class name) once ``cancelled()`` is true.
        device: the device string ``pong`` reports; default: probed with
            ``backend.engines.device_name()`` when serving starts.
        history_s: how long finished jobs stay visible to ``status``, seconds.
        progress_interval_s: least time between two ``progress`` events of one job.
        stop_timeout_s: on stop, how long to wait for running jobs to end.
        jobs_dir: folder of the batch job store (``batch`` / ``jobs`` / ``resume``
            requests, see ``backend/batch_service.py``); default ``ORTHOLENS_JOBS_DIR``
            or the user's data folder.
        resume_jobs: at start, resume the batch jobs a killed daemon left running.

    Raises:
        ValueError: a non-loopback ``host`` without ``token``; ``workers`` or
            ``max_queue`` < 1.
    """

    def __init__(self, host: str = P.DEFAULT_HOST, port: int = P.DEFAULT_PORT,
                 token: Optional[str] = None, allowed_roots: Optional[Sequence[str]] = None,
                 max_queue: int = 256, workers: int = 1, *,
                 restrict_paths: Optional[bool] = None, detect_fn: Optional[DetectFn] = None,
                 max_queue_bytes: int = 2 << 30,
                 device: Optional[str] = None, history_s: float = 3600.0,
                 progress_interval_s: float = 0.1, stop_timeout_s: float = 5.0,
                 jobs_dir: Optional[str] = None, resume_jobs: bool = False,
                 retrain_fn: Optional[DetectFn] = None):
        loopback = is_loopback(host)
        if not loopback and not token:
            raise ValueError(f"binding {host!r} (not loopback) requires a token "
                             f"(--token or ORTHOLENS_TOKEN)")
        if workers < 1 or max_queue < 1:
            raise ValueError("workers and max_queue must be >= 1")
        self.host = host.strip().strip("[]")
        self.port = int(port)
        self.token = token or None
        self.restrict_paths = (not loopback) if restrict_paths is None else bool(restrict_paths)
        roots = roots_from_env() if allowed_roots is None else list(allowed_roots)
        self.allowed_roots = [os.path.normcase(os.path.realpath(r)) for r in roots]
        self.max_queue = int(max_queue)
        self.max_queue_bytes = int(max_queue_bytes)
        self.workers = int(workers)
        self.device = device
        self.history_s = float(history_s)
        self.progress_interval_s = float(progress_interval_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.endpoint: Optional[str] = None
        self._detect_fn = detect_fn or _default_detect_fn
        #: the ``retrain`` job function (``backend.retrain.run_retrain``), same signature
        self._retrain_fn = retrain_fn or _default_retrain_fn
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
        from .batch_service import BatchService  # batch jobs: own queue, thread, store
        self.batch = BatchService(self, jobs_dir, resume_jobs)

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
        for n in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"ortholens-worker-{n}",
                                 daemon=True)
            t.start()
            self._workers.append(t)
        self.batch.start()
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
                self._check_token(header)
                log.debug("%s %s from %s", header["type"], request_id, identity.hex())
                return getattr(self, "_on_" + header["type"])(identity, header, arrays)
            except P.ProtocolError as exc:
                return [(identity, P.error_reply(request_id, exc.code, _clip(exc.message)))]
        except Exception as exc:
            log.exception("internal error answering request %s", request_id)
            return [(identity, P.error_reply(request_id, P.E_INTERNAL,
                                             f"internal error: {_clip(exc, 200)}"))]

    def _check_token(self, header: Dict[str, Any]) -> None:
        if self.token is None:
            return
        given = header.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(
                given.encode("utf-8", "surrogatepass"),
                self.token.encode("utf-8", "surrogatepass")):
            raise P.ProtocolError(P.E_FORBIDDEN, "missing or wrong token")

    def _check_path(self, source: Dict[str, Any]) -> Dict[str, Any]:
        """Return ``source`` with its path resolved; E_FORBIDDEN outside the roots."""
        if not self.restrict_paths or source.get("kind") != "file":
            return source
        real = os.path.normcase(os.path.realpath(source["path"]))
        for root in self.allowed_roots:
            prefix = root if root.endswith(os.sep) else root + os.sep
            if real == root or real.startswith(prefix):
                return dict(source, path=real)
        raise P.ProtocolError(P.E_FORBIDDEN, "the raster path is outside the folders this "
                                             "daemon may read (ORTHOLENS_ROOTS)")

    # ------------------------------------------------------------------ handlers

    def _cards(self) -> list:
        from .registry import list_cards
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
                                   device=self.device or "cpu", models=ids, jobs=active))]

    def _on_models(self, identity, header, arrays):
        from .registry import default_model_id
        cards = self._cards()
        default = default_model_id(cards, str(self.device or "").startswith("cuda"))
        return [(identity, P.reply("models", header["id"],
                                   models=[dict(c.public(), default=c.id == default)
                                           for c in cards]))]

    def _on_detect(self, identity, header, arrays):
        request = {k: v for k, v in header.items() if k != "token"}
        request["source"] = self._check_path(header["source"])
        nbytes = sum(a.nbytes for a in arrays)
        with self._lock:  # only this thread adds jobs: the check holds until we do
            if self._stop.is_set():
                raise P.ProtocolError(P.E_BUSY, "the daemon is shutting down")
            if len(self._queue) >= self.max_queue:
                raise P.ProtocolError(P.E_BUSY, f"the job queue is full ({len(self._queue)}"
                                                f" jobs waiting); try again later")
            queued_bytes = sum(a.nbytes for j in self._queue for a in (j.arrays or ()))
            if nbytes and queued_bytes and queued_bytes + nbytes > self.max_queue_bytes:
                raise P.ProtocolError(P.E_BUSY, f"the queued jobs already hold "
                                                f"{queued_bytes >> 20} MiB of pixels; try "
                                                f"again later")
        copies = [np.array(a, copy=True) for a in arrays]  # frames get reused
        with self._cond:
            self._prune_locked()
            job = Job(uuid.uuid4().hex, header["id"], identity, request, copies)
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
                    raise P.ProtocolError(P.E_NOT_FOUND, "no such job")
                jobs = [job.public()]
            else:
                jobs = [j.public() for j in self._jobs.values()]
        return [(identity, P.reply("status", header["id"], jobs=jobs))]

    def _on_cancel(self, identity, header, arrays):
        if header["job_id"] not in self._jobs and self.batch.has(header["job_id"]):
            return self.batch.cancel(identity, header)
        out = []
        with self._lock:
            job = self._jobs.get(header["job_id"])
            if job is None:
                raise P.ProtocolError(P.E_NOT_FOUND, "no such job")
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
        """Queue a ``retrain`` job (``backend.retrain``) like a detection."""
        reviewed = header.get("reviewed") or []
        checked = [dict(a, source=self._check_path(a["source"])) if a.get("source") else a
                   for a in reviewed]
        if reviewed:
            header = dict(header, reviewed=checked)
        return self._on_detect(identity, header, arrays)

    def _versions_reply(self, header, fn):
        from . import versions as V
        from .registry import ModelNotFound
        try:
            d = fn(header["model"])
        except V.VersionError as exc:
            code = P.E_INVALID_INPUT if "roll back" in str(exc) else P.E_NOT_FOUND
            raise P.ProtocolError(code, str(exc)) from None
        except ModelNotFound as exc:
            raise P.ProtocolError(P.E_NOT_FOUND, str(exc)) from None
        return P.reply("versions", header["id"], **d)

    def _on_versions(self, identity, header, arrays):
        from .versions import describe
        return [(identity, self._versions_reply(header, describe))]

    def _on_activate(self, identity, header, arrays):
        from .versions import activate
        reply = self._versions_reply(header, activate)
        log.info("active version of %s: %s", reply["model"], reply["active"])
        return [(identity, reply)]

    def _on_rollback(self, identity, header, arrays):
        from .versions import rollback
        reply = self._versions_reply(header, rollback)
        log.info("rolled back %s to %s", reply["model"], reply["active"])
        return [(identity, reply)]

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

    def _worker(self) -> None:
        push = self._ctx.socket(zmq.PUSH)  # type: ignore[union-attr]
        push.linger = 1000
        push.connect(self._events_endpoint)
        send_lock = threading.Lock()  # progress() may be called from detect's threads
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait(0.5)
                    if not self._queue:
                        return
                    job = self._queue.popleft()
                    job.state = RUNNING
                try:
                    self._run_job(job, push, send_lock)
                except Exception:  # never lose the worker thread
                    log.exception("worker failed on job %s", job.job_id)
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
                raise _Failure(P.E_BUSY, "cancelled before it started")
            fn = self.batch.run if job.request.get("type") == "batch" else self._detect_fn
            if job.request.get("type") == "retrain":
                fn = self._retrain_fn
            out = fn(job.request, job.arrays, progress, cancelled)
            frames = self._result_frames(job, out)
            state, message = DONE, ""
        except Exception as exc:
            state, message, header = self._failure(job, exc)
            frames = P.encode(header)
        job.arrays = None
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
            raise TypeError("detect_fn must return {'crs': str, 'features': list, "
                            "'stats': dict}")
        header = P.reply("result", job.request_id, job_id=job.job_id, crs=out["crs"],
                         features=out["features"], stats=out.get("stats", {}))
        if isinstance(out.get("retrain"), dict):  # a retrain job's report
            header["retrain"] = out["retrain"]
        try:
            return P.encode(header, max_header_bytes=P.MAX_REPLY_HEADER_BYTES)
        except P.ProtocolError:
            raise _Failure(P.E_INVALID_INPUT, f"the result ({len(out['features'])} "
                                              f"polygons) is too large; process a smaller "
                                              f"extent") from None

    def _failure(self, job: Job, exc: Exception) -> Tuple[str, str, Dict[str, Any]]:
        """``(state, message, terminal event header)`` for a job that raised ``exc``."""
        rid, jid = job.request_id, job.job_id
        if job.cancel.is_set() or (type(exc).__name__ == "JobCancelled"
                                   and not self._stop.is_set()):
            return (CANCELLED, job.cancel_reason or "cancelled",
                    P.reply("cancelled", rid, job_id=jid))
        if self._stop.is_set():
            msg = "the daemon shut down before the job finished"
            return ERROR, msg, P.error_reply(rid, P.E_BUSY, msg, job_id=jid)
        code, message = getattr(exc, "code", None), getattr(exc, "message", None)
        if isinstance(code, str) and code in P.ERROR_CODES:
            msg = _clip(message if isinstance(message, str) and message else exc)
            return ERROR, msg, P.error_reply(rid, code, msg, job_id=jid)
        log.error("job %s failed", jid, exc_info=exc)
        msg = _clip(f"internal error: {type(exc).__name__}: {exc}", 200)
        return ERROR, msg, P.error_reply(rid, P.E_INTERNAL, msg, job_id=jid)


class _Failure(Exception):
    """A job failure with a protocol error code, raised inside the server."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message
