"""Engines of the tests' own: a ``python -m backend`` process, or the server in a thread
with a fake detect function, and bare sockets to talk to it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from tests.support.common import REPO, free_port


# ----------------------------------------------------------------------------- engine

#: The one line an engine bound to 127.0.0.1 prints on stdout (``.format(port)``).
LISTENING = "ortholens daemon listening on tcp://127.0.0.1:{}"


def start_engine(log_path: Path, port: Optional[int] = None, host: str = "127.0.0.1",
                 python: str = sys.executable, cwd: Path = REPO, wait_s: float = 120.0,
                 **options: Any) -> Tuple[str, subprocess.Popen]:
    """Start an engine process (``python -m backend``) on ``host`` and wait until it
    answers; stop it with :func:`stop_engine`.

    Args:
        log_path: its stdout and stderr.
        port: its port (default: a free one on ``host``).
        host: the address it binds.
        python: its interpreter (default: this one).
        cwd: its working folder.
        wait_s: how long to wait for its first answer, seconds.
        **options: further :func:`protocol.launcher.start_daemon` arguments (``env``,
            ``token``, ``args``).

    Returns:
        ``(endpoint, process)``, the endpoint ``tcp://<loopback>:<port>`` (``127.0.0.1``
        when it binds every interface).
    """
    from protocol.launcher import start_daemon

    port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
    proc = start_daemon(str(python), port, str(cwd), host=host, wait_s=wait_s,
                        log_path=str(log_path), **options)
    ping_host = "127.0.0.1" if host == "0.0.0.0" else host
    return f"tcp://{ping_host}:{port}", proc


def stop_engine(proc: subprocess.Popen, wait_s: float = 15.0) -> None:
    """SIGTERM an engine process, SIGKILL it if it has not exited after ``wait_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running_engine(log_path: Path, **kw: Any) -> Iterator[Tuple[str, subprocess.Popen]]:
    """:func:`start_engine` for a ``with`` block; the engine stops at its end."""
    endpoint, proc = start_engine(log_path, **kw)
    try:
        yield endpoint, proc
    finally:
        stop_engine(proc)


# ----------------------------------------------------------------------------- server

#: A file source (never read by :class:`FakeDetect`) and a pixels source.
FILE = {"kind": "file", "path": "/data/ortho.tif"}
PIX = {"kind": "pixels", "crs": "EPSG:2056", "transform": [0.1, 0, 2600000, 0, -0.1, 1200000]}


class FakeDetect:
    """A detect job function (``backend.daemon.jobs.JobFn``) whose behaviour is chosen
    by the request's ``model``.

    ``echo`` (any other id too): returns at once, echoing the request; ``block``: waits
    for :attr:`gate` (or cancellation); ``loop``: reports progress until cancelled
    (2000 steps of 5 ms); ``spin``: reports progress every 5 ms until cancelled (or
    :attr:`gate`), with no end of its own; ``fail``: a JobError; ``crash``:
    RuntimeError; ``badresult``: a result that is not JSON-safe.

    Attributes:
        started, cancelled: request ids of the jobs that started / saw cancellation.
        gate: set to let ``block`` jobs end.
    """

    def __init__(self):
        import threading
        self.started: List[str] = []
        self.cancelled: List[str] = []
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, request, arrays, progress, cancelled):
        import numpy as np
        import protocol as P
        with self.lock:
            self.started.append(request["id"])
        model = request["model"]
        if model == "block":
            while not self.gate.wait(0.01):
                self._stop_if(cancelled, request)
        elif model == "loop":
            for i in range(2000):
                progress(i / 2000, f"batch {i}")
                self._stop_if(cancelled, request)
                time.sleep(0.005)
        elif model == "spin":
            i = 0
            while not self.gate.wait(0.005):
                progress(min(i / 10000, 0.99), f"batch {i}")
                self._stop_if(cancelled, request)
                i += 1
        elif model == "fail":
            raise P.JobError("the raster has no CRS", P.E_INVALID_INPUT)
        elif model == "crash":
            raise RuntimeError("boom")
        elif model == "badresult":
            return {"crs": "EPSG:2056", "features": [{"score": np.float32(0.5)}], "stats": {}}
        a = arrays[0] if arrays else None
        return {"crs": "EPSG:2056",
                "features": [{"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))", "class": "photovoltaic",
                              "class_id": 1, "score": 0.9, "area_m2": 0.5, "model": model,
                              "model_version": "1", "request": request["id"]}],
                "stats": {"path": request["source"].get("path"),
                          "token": request.get("token"),
                          "sum": None if a is None else int(a.sum()),
                          "writeable": None if a is None else bool(a.flags.writeable),
                          "owndata": None if a is None else bool(a.flags.owndata)}}

    def _stop_if(self, cancelled, request) -> None:
        from protocol.errors import JobCancelled
        if cancelled():
            self.cancelled.append(request["id"])
            raise JobCancelled()


@contextlib.contextmanager
def running_server(**kw: Any):
    """A ``backend.daemon.server.Server`` on a free port in a thread, its detect
    function ``kw["detect_fn"]`` or a :class:`FakeDetect`; yields ``(server, detect
    function)`` once it answers a ``ping`` (it probes its device first, which imports
    PyTorch: seconds on a loaded machine) and stops the server at the end (opening the
    fake's gate first)."""
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    fake = kw.pop("detect_fn", None) or FakeDetect()
    server = Server(port=0, device=kw.pop("device", "test"), detect_fn=fake, **kw)
    server.start_in_thread()
    try:
        with OrtholensClient(server.endpoint, token=kw.get("token"), timeout_s=120) as c:
            c.ping()
        yield server, fake
    finally:
        if isinstance(fake, FakeDetect):
            fake.gate.set()
        server.stop()


@contextlib.contextmanager
def raw_dealer(endpoint: str):
    """A bare ZeroMQ DEALER socket connected to ``endpoint``."""
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    try:
        yield s
    finally:
        s.close()
        ctx.term()


def recv(sock, timeout_s: float = 60.0) -> Dict[str, Any]:
    """The header of the next message on ``sock``.

    Raises:
        AssertionError: none within ``timeout_s`` (a hang guard).
    """
    import protocol as P
    assert sock.poll(int(timeout_s * 1000)), "no reply in time"
    return P.decode(sock.recv_multipart(), P.MAX_REPLY_HEADER_BYTES)[0]


def ask(sock, header: Dict[str, Any], arrays: Sequence[Any] = ()) -> Dict[str, Any]:
    """Send ``header`` (and ``arrays``) on ``sock``; the header of the answer."""
    import protocol as P
    sock.send_multipart(P.encode(header, arrays))
    return recv(sock)


def send_detect(sock, model: str, rid: str, source: Dict[str, Any] = FILE, **kw: Any) -> None:
    """Send a ``detect`` request with id ``rid`` for ``model`` on ``sock``."""
    import protocol as P
    sock.send_multipart(P.encode(P.request("detect", id=rid, source=source, model=model,
                                           **kw)))


def job_state(server, job_id: str) -> str:
    """The state of the interactive job ``job_id`` of ``server``."""
    with server.table.lock:
        return server.table.jobs[job_id].state

