"""Wall-clock seconds of the faults the tests check on a clock they move by hand: how long
until a killed daemon is reported, and how long a cancel, or a client that goes away,
takes to stop a running detection.

``python -m tools.fault_times [--repeat 3] [--model ID] [--out out/faults.json]``;
``python3 build.py load`` runs it after its load scenario (``tools.loadtest``,
``--no-faults`` skips it). It starts its own daemons (``python -m backend`` on free
ports, one worker) and detects a 200 m x 200 m extent of the real Vienna scene at the
model's GSD (0.1 m: a job of many seconds on a CPU) with the catalog's CPU default model.

Figures, seconds (``time.perf_counter``), the median and the largest of ``repeat``
runs, each measured from the job's first progress event:

* ``dead_daemon_s``: the daemon is SIGKILLed → the client raises ``DaemonUnavailable``.
  The client runs with its defaults: a status check after ``liveness_s`` (2 s) of
  silence, answered within ``timeout_s`` (5 s), so by design at most about 7 s.
* ``cancel_client_s``: ``is_cancelled()`` turns true → the client raises
  ``JobCancelled`` (the daemon answered the cancel request).
* ``cancel_stopped_s``: the same cancel → the daemon's ``status`` says ``cancelled``
  (the job stopped at its next batch of tiles).
* ``disconnect_stopped_s``: a client closes its connection mid-job → the daemon's
  ``status`` says ``cancelled`` (its next progress event to that client failed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import protocol as P
from backend.config import vienna_scene
from backend.models.catalog import cpu_default_model_id
from protocol.client import OrtholensClient
from protocol.errors import DaemonUnavailable, JobCancelled
from protocol.launcher import repo_dir
from protocol.params import DetectParams, FileSource
from tools.common import local_daemon

#: The detected extent of the Vienna scene (EPSG:31256), metres.
EXTENT = (-1700.0, 338300.0, -1500.0, 338500.0)
#: Longest wait for a job to leave ``running`` once it should stop, seconds.
STOP_WAIT_S = 300.0


def _params(model: str) -> DetectParams:
    return DetectParams(FileSource(str(vienna_scene())), model, extent=EXTENT)


def _stopped_at(client: OrtholensClient, job_id: str) -> float:
    """``time.perf_counter()`` when ``job_id`` had left ``running`` (polled every 20 ms).

    Raises:
        RuntimeError: it ended otherwise than ``cancelled``, or ran on for
            :data:`STOP_WAIT_S`.
    """
    end = time.perf_counter() + STOP_WAIT_S
    while time.perf_counter() < end:
        state = client.status(job_id)[0]["state"]
        if state != "running":
            if state != "cancelled":
                raise RuntimeError(f"job {job_id} ended {state}, not cancelled")
            return time.perf_counter()
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} still runs {STOP_WAIT_S:g} s after it should stop")


def dead_daemon_s(model: str, log_path: str) -> float:
    """Seconds from SIGKILL of a daemon, at its job's first progress event, to the
    client's ``DaemonUnavailable`` (a fresh daemon; the client's default liveness).

    Raises:
        RuntimeError: the detection ended although its daemon was killed.
    """
    with local_daemon(log_path) as (proc, endpoint), OrtholensClient(endpoint) as c:
        killed: List[float] = []

        def on_progress(fraction: float, message: str) -> None:
            if not killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                killed.append(time.perf_counter())

        try:
            c.detect(_params(model), on_progress=on_progress)
        except DaemonUnavailable:
            return time.perf_counter() - killed[0]
    raise RuntimeError("the detection ended although its daemon was killed")


def cancel_s(endpoint: str, model: str) -> Dict[str, float]:
    """``{cancel_client_s, cancel_stopped_s}`` of a detection cancelled at its first
    progress event (module docstring)."""
    asked: List[float] = []
    flag = threading.Event()

    def on_progress(fraction: float, message: str) -> None:
        if not flag.is_set():
            asked.append(time.perf_counter())
            flag.set()

    with OrtholensClient(endpoint, timeout_s=30) as c:
        try:
            c.detect(_params(model), on_progress=on_progress, is_cancelled=flag.is_set)
        except JobCancelled as exc:
            client_s = time.perf_counter() - asked[0]
            stopped = _stopped_at(c, str(exc.job_id))
        else:
            raise RuntimeError("the detection ended before it was cancelled")
    return {"cancel_client_s": client_s, "cancel_stopped_s": stopped - asked[0]}


def disconnect_s(endpoint: str, model: str) -> float:
    """Seconds from a client closing its connection, after its job's first progress
    event, to the daemon's status saying the job was cancelled."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(P.encode(_params(model).to_header()))
        job_id = None
        while True:
            if not sock.poll(int(STOP_WAIT_S * 1000)):
                raise RuntimeError("no progress from the daemon")
            event = P.decode(sock.recv_multipart(), P.MAX_REPLY_HEADER_BYTES)[0]
            if event["type"] == "accepted":
                job_id = event["job_id"]
            elif event["type"] == "progress":
                break
            else:
                raise RuntimeError(f"unexpected {event['type']} before any progress")
    finally:
        sock.close()
        gone = time.perf_counter()
        ctx.term()
    with OrtholensClient(endpoint, timeout_s=30) as c:
        return _stopped_at(c, str(job_id)) - gone


def _spread(values: List[float]) -> Dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def measure(model: Optional[str] = None, repeat: int = 3,
            log_dir: Optional[Path] = None,
            say: Callable[[str], None] = print) -> Dict[str, Any]:
    """Every figure of the module docstring, ``repeat`` times each.

    Args:
        model: the model id (default: the catalog's CPU default).
        repeat: runs of each figure.
        log_dir: where the daemons' logs go (default ``out/``).
        say: receives one line per run.

    Returns:
        ``{model, extent, repeat, dead_daemon_s, cancel_client_s, cancel_stopped_s,
        disconnect_stopped_s}``, each figure ``{median, max}`` seconds.
    """
    model = model or cpu_default_model_id()
    log_dir = Path(log_dir or repo_dir() / "out")
    log_dir.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, List[float]] = {"dead_daemon_s": [], "cancel_client_s": [],
                                    "cancel_stopped_s": [], "disconnect_stopped_s": []}
    for _ in range(repeat):
        runs["dead_daemon_s"].append(dead_daemon_s(model, str(log_dir / "faults-dead.log")))
        say(f"faults: daemon killed, reported after {runs['dead_daemon_s'][-1]:.2f} s")
    with local_daemon(str(log_dir / "faults-daemon.log")) as (_, endpoint):
        for _ in range(repeat):
            for key, value in cancel_s(endpoint, model).items():
                runs[key].append(value)
            runs["disconnect_stopped_s"].append(disconnect_s(endpoint, model))
            say(f"faults: cancel answered after {runs['cancel_client_s'][-1]:.2f} s, job "
                f"stopped after {runs['cancel_stopped_s'][-1]:.2f} s; client gone, job "
                f"stopped after {runs['disconnect_stopped_s'][-1]:.2f} s")
    out: Dict[str, Any] = {"model": model, "extent": list(EXTENT), "repeat": repeat}
    out.update({key: _spread(values) for key, values in runs.items()})
    return out


def summary(r: Dict[str, Any]) -> str:
    """One line of the figures, as printed."""
    return ("faults: " + " ".join(f"{k}={r[k]['median']} (max {r[k]['max']})"
                                  for k in ("dead_daemon_s", "cancel_client_s",
                                            "cancel_stopped_s", "disconnect_stopped_s"))
            + f" over {r['repeat']} runs")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fault_times",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default=None,
                    help="model id (default: the catalog's CPU default model)")
    ap.add_argument("--out", default=str(repo_dir() / "out" / "faults.json"))
    args = ap.parse_args(argv)
    r = measure(args.model, args.repeat, Path(args.out).parent)
    print(summary(r), flush=True)
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n", "utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
