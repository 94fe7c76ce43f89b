"""``python -m backend``: run the Ortholens inference daemon.

Options: ``--host H`` (default 127.0.0.1), ``--port P`` (default 5591), ``--token T``
(default: env ``ORTHOLENS_TOKEN``; required when H is not loopback), ``--workers N``,
``--max-queue N``, ``--restrict-paths`` (read rasters only below ``ORTHOLENS_ROOTS``
even on loopback), ``--log-level LEVEL``, ``--jobs-dir DIR`` (batch job store),
``--resume-jobs`` (resume batch jobs left unfinished by a killed daemon),
``--idle-exit-s S`` (stop after S seconds without work; default: env
``ORTHOLENS_IDLE_EXIT_S``, else never: the plugin and ``qgis_process`` pass their
setting, 30 minutes by default, when they start the engine), ``--precision auto|fp32``
(default: env ``ORTHOLENS_PRECISION``, else ``auto``: a card's INT8 graph on the CPU for
the layers it serves; ``fp32``: the fp32 graphs only; ``backend.config.precision``).

Once bound it prints exactly one line to stdout, ``ortholens daemon listening on
tcp://H:P``, and nothing else; logs go to stderr. SIGINT / SIGTERM stop it gracefully.
Exit codes: 0 after a stop, 2 when it cannot start (port in use, bad options).

Installed as a package (``pyproject.toml``) the same command is ``ortholens-daemon``.
Once bound, a model of the model folder that has weights but no ``model.onnx`` is
exported to ONNX in the background (:func:`export_missing_onnx`; needs PyTorch, which
an engine installed for detection only lacks; its package ships the ONNX files).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    import protocol as P
    from backend.daemon.server import DEFAULT_MAX_QUEUE, DEFAULT_WORKERS
    ap = argparse.ArgumentParser(prog="python -m backend",
                                 description="Ortholens inference daemon (ZeroMQ).")
    ap.add_argument("--host", default=P.DEFAULT_HOST,
                    help="interface to bind (default %(default)s; others need a token)")
    ap.add_argument("--port", type=int, default=P.DEFAULT_PORT,
                    help="TCP port (default %(default)s; 0 = any free port)")
    ap.add_argument("--token", default=os.environ.get("ORTHOLENS_TOKEN") or None,
                    help="shared secret every request must carry (default: env "
                         "ORTHOLENS_TOKEN; prefer the variable, argv is visible to ps)")
    ap.add_argument("--restrict-paths", action="store_true",
                    help="read rasters only below ORTHOLENS_ROOTS also when bound to "
                         "loopback (always so on other addresses); clients send the "
                         "pixels of other rasters")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                    help="jobs run at once (default %(default)s)")
    ap.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                    help="most jobs waiting before requests get 'busy' (default %(default)s)")
    ap.add_argument("--jobs-dir", default=None,
                    help="folder of the batch job store (default: env ORTHOLENS_JOBS_DIR, "
                         "else ~/.local/share/ortholens/jobs)")
    ap.add_argument("--resume-jobs", action="store_true",
                    help="resume the batch jobs a killed daemon left unfinished")
    ap.add_argument("--idle-exit-s", type=float,
                    default=float(os.environ.get("ORTHOLENS_IDLE_EXIT_S") or 0),
                    help="stop after this many seconds with no request, no job and no "
                         "upload (0: never)")
    ap.add_argument("--precision", type=str.lower, choices=["auto", "fp32"],
                    default=(os.environ.get("ORTHOLENS_PRECISION") or "auto").lower(),
                    help="auto: a model's INT8 graph on the CPU where its card keeps one "
                         "for the layer; fp32: the fp32 graphs only (default: env "
                         "ORTHOLENS_PRECISION, else auto)")
    ap.add_argument("--log-level", default="INFO",
                    choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    return ap


def export_missing_onnx() -> List[str]:
    """Export every model of the model folder that has weights but no ``model.onnx``.

    Runs in a background thread of a started daemon. Never raises: a model that cannot
    be exported is logged and served as it is (PyTorch on the CPU).

    Returns:
        The ids of the models exported.
    """
    log = logging.getLogger("ortholens.daemon")
    done: List[str] = []
    try:
        from backend.config import models_dir
        from backend.inference.predictors import torch_available
        from backend.models.catalog import list_cards
        cards = [c for c in list_cards(models_dir()) if not c.is_ensemble
                 and c.weights_path.is_file() and not c.onnx_path.is_file()]
        if cards and not torch_available():
            log.warning("models without an ONNX file (%s) cannot be exported: this engine "
                        "has no PyTorch", ", ".join(c.id for c in cards))
            return done
        if cards:
            from backend.models.export import export_onnx
        for card in cards:
            try:
                export_onnx(card)
                done.append(card.id)
                log.info("exported %s to %s", card.id, card.onnx_path)
            except Exception as exc:  # noqa: BLE001 - the model still runs with PyTorch
                log.warning("cannot export %s to ONNX: %s", card.id, exc)
    except Exception as exc:  # noqa: BLE001 - an unreadable model folder: serve anyway
        log.warning("cannot look for models to export: %s", exc)
    return done


def main(argv: Optional[List[str]] = None) -> int:
    """Run the daemon; returns the process exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import zmq

    from backend.daemon.server import Server

    def fail(msg: str) -> int:
        print(f"ortholens daemon: {msg}", file=sys.stderr, flush=True)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port} is not a TCP port")
    os.environ["ORTHOLENS_PRECISION"] = args.precision  # read by every model card
    try:
        server = Server(args.host, args.port, token=args.token, workers=args.workers,
                        max_queue=args.max_queue, jobs_dir=args.jobs_dir,
                        resume_jobs=args.resume_jobs,
                        restrict_paths=True if args.restrict_paths else None,
                        idle_exit_s=max(0.0, args.idle_exit_s))
    except ValueError as exc:
        return fail(str(exc))
    try:
        endpoint = server.bind()
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            return fail(f"cannot listen on tcp://{args.host}:{args.port}: the port is "
                        f"already in use (another daemon running? pick one with --port)")
        return fail(f"cannot listen on tcp://{args.host}:{args.port}: {exc}")

    def on_signal(signum, frame):  # only sets a flag: safe in a signal handler
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"ortholens daemon listening on {endpoint}", flush=True)
    import threading
    threading.Thread(target=export_missing_onnx, name="ortholens-export",
                     daemon=True).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
