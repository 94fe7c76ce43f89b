"""Helpers of the tests that run the real engine process (``python -m backend``; not a
test module): start it, read its first line, stop it."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, IO, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
#: The engine's first line on stdout once it listens.
LISTENING = "ortholens daemon listening on tcp://127.0.0.1:{}"


def start_engine(port: int, log: IO[bytes], args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """``python -m backend --port PORT ARGS`` from the repository, in its own session,
    stderr to ``log``, stdout a text pipe (read its first line with :func:`read_line`)."""
    return subprocess.Popen([sys.executable, "-m", "backend", "--port", str(port), *args],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)


def read_line(stream, timeout_s: float) -> str:
    """One line of ``stream``, or "" when none comes within ``timeout_s`` seconds."""
    q: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: q.put(stream.readline()), daemon=True).start()
    try:
        return q.get(timeout=timeout_s)
    except queue.Empty:
        return ""


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a daemon process, SIGKILL it if it has not exited after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
