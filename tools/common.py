"""What the measuring tools share: a daemon of their own on a free port, and the
peak memory of a process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, Tuple

from protocol.launcher import repo_dir, start_daemon


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid: Optional[int], key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (Linux), e.g. ``VmHWM`` (peak resident
    memory); ``pid`` None: this process.

    Raises:
        OSError: no such process. KeyError: no such field.
    """
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_rss_mb(pid: Optional[int] = None) -> float:
    """Peak resident memory (``VmHWM``) of a process, MiB; NaN where it cannot be read."""
    try:
        return status_kb(pid, "VmHWM") / 1024.0
    except (OSError, KeyError, ValueError):
        return float("nan")


@contextmanager
def local_daemon(log_path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 stop_wait_s: float = 30.0
                 ) -> Iterator[Tuple[subprocess.Popen, str]]:
    """A daemon of this interpreter (``python -m backend``) on a free loopback port,
    stopped (SIGTERM, then SIGKILL after ``stop_wait_s``) on exit.

    Args:
        log_path: its stdout+stderr (default: the client's log folder).
        env: variables added to its environment.
        stop_wait_s: how long to wait for it to stop, seconds.

    Yields:
        ``(process, endpoint)``, the endpoint as ``tcp://127.0.0.1:<port>``.

    Raises:
        protocol.errors.DaemonUnavailable: it did not start within two minutes.
    """
    port = free_port()
    proc = start_daemon(sys.executable, port, str(repo_dir()), env=env, wait_s=120,
                        log_path=log_path)
    try:
        yield proc, f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(stop_wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
