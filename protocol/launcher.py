"""Starting the Ortholens daemon (the engine) on this computer, and finding its parts.

:func:`start_daemon` starts ``<python> -m backend`` detached from the caller and waits
until it answers; :func:`ensure_daemon` pings an endpoint and starts a daemon only when
nothing answers there and the endpoint is on this computer.
:func:`default_backend_python`, :func:`repo_dir` and :func:`log_dir` say which
interpreter, folder and log folder a daemon gets by default in a development checkout;
:func:`port_open` whether anything listens on a port.

Needs the standard library and pyzmq (through :class:`~protocol.client.OrtholensClient`,
which pings the daemon).
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from .client import OrtholensClient
from .errors import DaemonError, DaemonUnavailable
from .framing import DEFAULT_ENDPOINT, DEFAULT_HOST, DEFAULT_PORT, is_loopback, parse_endpoint

log = logging.getLogger("ortholens.launcher")


def repo_dir() -> Path:
    """The repository root in a development checkout (the folder holding
    ``protocol/`` and ``backend/``); meaningless inside the plugin zip, where callers
    pass the engine's interpreter and folder explicitly."""
    return Path(__file__).resolve().parent.parent


def default_backend_python() -> str:
    """``ORTHOLENS_BACKEND_PYTHON``, else the repo's ``.venv/backend`` interpreter."""
    env = os.environ.get("ORTHOLENS_BACKEND_PYTHON")
    if env:
        return env
    venv = repo_dir() / ".venv" / "backend"
    if sys.platform == "win32":
        return str(venv / "Scripts" / "python.exe")
    return str(venv / "bin" / "python")


def log_dir() -> Path:
    """Folder of the daemon logs: ``ORTHOLENS_LOG_DIR``, else ``<tmp>/ortholens-<user>``."""
    env = os.environ.get("ORTHOLENS_LOG_DIR")
    if env:
        return Path(env)
    try:
        user = getpass.getuser()
    except Exception:
        user = "user"
    return Path(tempfile.gettempdir()) / f"ortholens-{user}"


def _tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log as text (undecodable bytes replaced), or why it
    cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace").strip()
    except OSError as exc:
        return f"(no log: {exc})"


def _child_env(env: Optional[Mapping[str, str]], token: Optional[str]) -> Dict[str, str]:
    """The daemon's environment: this process's without ``PYTHONHOME`` and
    ``PYTHONPATH`` (QGIS points them at its own Python; the backend environment must not
    inherit them), plus ``env``, the token as ``ORTHOLENS_TOKEN`` and unbuffered output."""
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    if env:
        out.update(env)
    if token:
        out["ORTHOLENS_TOKEN"] = token  # not on the command line, where ps shows it
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def start_daemon(python: Optional[str] = None, port: int = DEFAULT_PORT,
                 cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 wait_s: float = 60.0, *, host: str = DEFAULT_HOST,
                 token: Optional[str] = None,
                 log_path: Optional[str] = None,
                 args: Sequence[str] = ()) -> subprocess.Popen:
    """Start ``<python> -m backend --host H --port P`` detached and wait until it answers.

    Args:
        python: interpreter of the backend environment (default
            :func:`default_backend_python`).
        port: TCP port for the daemon.
        cwd: working directory, the repository root (default :func:`repo_dir`).
        env: variables added to the inherited environment (``PYTHONHOME`` and
            ``PYTHONPATH`` are not inherited).
        wait_s: how long to wait for the first ``pong``, seconds.
        host: interface to bind (loopback default).
        token: passed as ``ORTHOLENS_TOKEN`` and used for the ping.
        log_path: daemon stdout+stderr (default ``log_dir()/daemon-<port>.log``,
            truncated).
        args: further command-line options of the daemon (e.g.
            ``["--restrict-paths"]``).

    Returns:
        The running process (its own session / process group; the caller may leave it).

    Raises:
        DaemonUnavailable: the process exited or did not answer within ``wait_s``
            (the message ends with the tail of its log); it is killed in the latter case.
    """
    python = python or default_backend_python()
    if log_path is None:
        folder = log_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_file = folder / f"daemon-{port}.log"
    else:
        log_file = Path(log_path)
    cmd = [python, "-m", "backend", "--host", host, "--port", str(port), *args]
    proc = _spawn(cmd, cwd or str(repo_dir()), _child_env(env, token), log_file)
    ping_host = f"[{host}]" if ":" in host else host
    with OrtholensClient(f"tcp://{ping_host}:{port}", token=token, timeout_s=1.0) as client:
        _wait_until_answering(proc, client, wait_s, log_file)
    log.info("daemon started: pid %d, port %d, log %s", proc.pid, port, log_file)
    return proc


def _spawn(cmd: Sequence[str], cwd: str, env: Dict[str, str], log_file: Path
           ) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group on Windows, without a console),
    its stdout and stderr going to ``log_file`` (truncated).

    Raises:
        DaemonUnavailable: it cannot be started (no such interpreter...).
    """
    kwargs: Dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
                                   | subprocess.CREATE_NO_WINDOW)  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    try:
        with open(log_file, "wb") as out:
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, close_fds=True,
                                    **kwargs)
    except OSError as exc:
        raise DaemonUnavailable(f"cannot start {cmd[0]!r} -m backend: {exc}") from None


def _wait_until_answering(proc: subprocess.Popen, client: OrtholensClient, wait_s: float,
                          log_file: Path) -> None:
    """Ping the daemon ``proc`` started through ``client`` until it answers; a ``pong``
    while ``proc`` has exited came from another daemon on that port and does not count.

    Raises:
        DaemonUnavailable: ``proc`` exited, or nothing answered within ``wait_s``
            seconds (``proc`` is killed then); the message ends with the log's tail.
        DaemonError: a daemon answered with an error (``proc`` is killed).
    """
    deadline = time.monotonic() + wait_s
    try:
        while True:
            if proc.poll() is not None:
                raise DaemonUnavailable(f"the daemon exited with code {proc.returncode} "
                                        f"(log {log_file}):\n{_tail(log_file)}")
            try:
                client.ping()
            except DaemonUnavailable:
                pass
            else:
                time.sleep(0.05)
                if proc.poll() is not None:  # another daemon answered on that port
                    continue
                return
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(5)
                raise DaemonUnavailable(f"the daemon did not answer within {wait_s:g} s "
                                        f"(log {log_file}):\n{_tail(log_file)}")
            time.sleep(0.2)
    except DaemonError:
        proc.kill()
        raise


def ensure_daemon(endpoint: str = DEFAULT_ENDPOINT, python: Optional[str] = None,
                  cwd: Optional[str] = None, *, token: Optional[str] = None,
                  timeout_s: float = 5.0, wait_s: float = 60.0,
                  args: Sequence[str] = ()) -> OrtholensClient:
    """A client of a daemon that answers: pings ``endpoint`` and, if nothing answers
    and the endpoint is on this computer, starts one with :func:`start_daemon` (with
    the daemon options ``args``, e.g. ``["--idle-exit-s", "1800"]``).

    Returns:
        A connected :class:`OrtholensClient` (``timeout_s``, ``token``); its
        ``process`` is the started daemon's ``Popen``, or None when one was running.

    Raises:
        DaemonUnavailable: nothing answers and a daemon cannot be started (or the
            endpoint is not loopback).
        DaemonError: a daemon answers but refuses (e.g. ``forbidden``: wrong token).
    """
    host, port = parse_endpoint(endpoint)
    client = OrtholensClient(endpoint, token=token, timeout_s=timeout_s)
    try:
        local = is_loopback(host)
        if not local or port_open(host, port):  # refused: nothing to wait for
            try:
                client.ping(timeout_s=min(2.0, timeout_s))
                return client
            except DaemonUnavailable:
                pass
        if not local:
            raise DaemonUnavailable(f"no daemon answers at {endpoint}; only a daemon on "
                                    f"this computer is started automatically")
        try:
            client.process = start_daemon(python, port, cwd, wait_s=wait_s, host=host,
                                          token=token, args=args)
        except DaemonUnavailable as exc:
            try:
                client.ping()  # a slow daemon may hold the port after all
            except DaemonUnavailable:
                raise exc from None
        return client
    except BaseException:
        client.close()
        raise


def port_open(host: str, port: int) -> bool:
    """True when a TCP connection to ``host:port`` succeeds within 0.5 s."""
    import socket
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


__all__ = ["repo_dir", "default_backend_python", "log_dir", "start_daemon", "ensure_daemon",
           "port_open"]
