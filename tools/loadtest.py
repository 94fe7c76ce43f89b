"""Load scenario of the daemon: many small detections from several clients at once.

``python -m tools.loadtest [--requests 100] [--clients 5] [--endpoint tcp://H:P]
[--model ID] [--out out/load.json]`` (``python3 build.py load`` runs it). Without
``--endpoint`` it starts its own daemon (``python -m backend`` on a free port, one
worker) and stops it afterwards. The model is the catalog's CPU default unless named.

Scenario: 20 m x 20 m extents of real rasters (the centres of five pv01 held-out tiles
with panels, 0.1 m, and one of the Vienna orthophoto, 0.3 m, resampled); a reference run
detects each extent once; then ``clients`` threads, each with its own
:class:`~protocol.client.OrtholensClient` (own connection), send ``requests`` detections
in total (request ``i`` is extent ``i mod 6``), each thread one after the other.
Latency is measured from sending a request to its result. An answer counts as correct
when its features equal the reference run's for that extent.

Prints ``requests``, ``clients``, ``errors``, ``mismatches``, p50/p99 latency and
throughput, and writes them as JSON. Exit code 0 when every request was answered
correctly, else 1.

Then (unless ``--no-faults``) the wall-clock seconds of the faults the tests check on a
clock they move (``tools.fault_times``, ``faults`` in the JSON): a killed daemon
reported, a cancelled detection and a disconnected client's job stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from backend.config import pv01_dir, vienna_scene
from backend.models.catalog import cpu_default_model_id
from protocol.client import OrtholensClient
from protocol.launcher import repo_dir
from protocol.params import DetectParams, FileSource
from tools.common import local_daemon

#: Side of every extent, metres.
SIZE_M = 20.0
#: pv01 held-out tiles with panels (the extents are their centres).
HELDOUT_TILES = ("PV01_325190_1204243", "PV01_325190_1204246", "PV01_325192_1204246",
                 "PV01_325192_1204249", "PV01_325246_1203821")
#: a built-up part of the Vienna scene (EPSG:31256)
VIENNA_CENTRE = (-1600.0, 338500.0)


def scenario_extents() -> List[Tuple[str, List[float]]]:
    """``[(raster path, [xmin, ymin, xmax, ymax] in its CRS)]`` of the scenario."""
    import rasterio

    h = SIZE_M / 2
    cases = []
    for name in HELDOUT_TILES:
        path = pv01_dir() / "heldout" / f"{name}.tif"
        with rasterio.open(path) as ds:
            b = ds.bounds
        cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
        cases.append((str(path), [cx - h, cy - h, cx + h, cy + h]))
    cx, cy = VIENNA_CENTRE
    cases.append((str(vienna_scene()), [cx - h, cy - h, cx + h, cy + h]))
    return cases


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))]


def _detect(client: OrtholensClient, params: DetectParams) -> List[Dict[str, Any]]:
    return client.detect(params, job_timeout_s=120)["features"]


def run_load(endpoint: str, requests: int = 100, clients: int = 5,
             timeout_s: float = 30.0, model: Optional[str] = None) -> Dict[str, Any]:
    """Run the scenario against the daemon at ``endpoint``; returns the figures.

    Args:
        endpoint: the daemon, ``tcp://host:port``.
        requests: detections in total.
        clients: concurrent clients, each with its own connection.
        timeout_s: the clients' reply timeout, seconds.
        model: the model id (default :func:`~backend.models.catalog.cpu_default_model_id`).

    Returns:
        ``{requests, clients, answered, errors, mismatches, p50_ms, p99_ms, mean_ms,
        max_ms, wall_s, throughput_rps, extent_m, extents, device, model,
        error_messages}``.
    """
    model = model or cpu_default_model_id()
    cases = [DetectParams(FileSource(path), model, extent=extent)
             for path, extent in scenario_extents()]
    with OrtholensClient(endpoint, timeout_s=timeout_s) as c:
        device = c.ping()["device"]
        reference = [_detect(c, case) for case in cases]
    latencies: List[float] = []
    errors: List[str] = []
    mismatches: List[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            client = OrtholensClient(endpoint, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - counted
            with lock:
                errors.extend([f"client {k}: {exc!r}"] * len(range(k, requests, clients)))
            return
        with client:
            for i in range(k, requests, clients):
                t0 = time.perf_counter()
                try:
                    feats = _detect(client, cases[i % len(cases)])
                except Exception as exc:  # noqa: BLE001 - counted
                    with lock:
                        errors.append(f"request {i}: {exc!r}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if feats != reference[i % len(cases)]:
                        mismatches.append(i)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,), name=f"load-client-{k}")
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = [v * 1000 for v in latencies]
    return {
        "requests": requests, "clients": clients, "answered": len(latencies),
        "errors": len(errors), "mismatches": len(mismatches),
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "wall_s": round(wall, 2), "throughput_rps": round(len(ms) / wall, 2),
        "extent_m": SIZE_M, "extents": len(cases), "device": device, "model": model,
        "reference_features": [len(r) for r in reference],
        "error_messages": errors[:5],
    }


def summary(r: Dict[str, Any]) -> str:
    """One line of the figures, as printed."""
    return (f"load: requests={r['requests']} clients={r['clients']} "
            f"answered={r['answered']} errors={r['errors']} mismatches={r['mismatches']} "
            f"p50={r['p50_ms']} ms p99={r['p99_ms']} ms mean={r['mean_ms']} ms "
            f"max={r['max_ms']} ms throughput={r['throughput_rps']} req/s "
            f"wall={r['wall_s']} s ({r['extent_m']:g} m extents, device {r['device']})")


def write_json(r: Dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2) + "\n", "utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--endpoint", default=None,
                    help="a running daemon (default: start one on a free port)")
    ap.add_argument("--model", default=None,
                    help="model id (default: the catalog's CPU default model)")
    ap.add_argument("--out", default=str(repo_dir() / "out" / "load.json"))
    ap.add_argument("--no-faults", action="store_true",
                    help="skip the fault timings (tools.fault_times)")
    args = ap.parse_args(argv)
    if args.endpoint is not None:
        r = run_load(args.endpoint, args.requests, args.clients, model=args.model)
    else:
        out_dir = Path(args.out).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        with local_daemon(str(out_dir / "load-daemon.log"), stop_wait_s=15) as (_, endpoint):
            r = run_load(endpoint, args.requests, args.clients, model=args.model)
    r["command"] = "python3 build.py load"
    print(summary(r), flush=True)
    for msg in r["error_messages"]:
        print(f"  error: {msg}")
    if not args.no_faults:
        from tools import fault_times
        r["faults"] = fault_times.measure(args.model, log_dir=Path(args.out).parent)
        print(fault_times.summary(r["faults"]), flush=True)
    write_json(r, Path(args.out))
    print(f"wrote {args.out}")
    return 0 if r["errors"] == 0 and r["mismatches"] == 0 and r["answered"] == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
