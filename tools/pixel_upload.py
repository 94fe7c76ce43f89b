"""Memory and time of sending an extent's pixels: one whole render vs the windows the
plugin streams to an engine that cannot read the file (``OrtholensClient.upload``).

``.venv/qgis/bin/python -m tools.pixel_upload [--raster R] [--gsd 0.1] [--window-px N]
[--out out/pixel_upload.json]`` (QGIS's Python: it renders with the plugin's code).

Each mode runs in a fresh process, which prints its figures as JSON: ``whole`` renders
the raster's whole extent at ``gsd`` metres a pixel in one block
(``plugin.detect.render.render_pixels``, what a single-message request holds);
``stream`` starts a daemon (``python -m backend`` of ``.venv/backend`` on a free
loopback port) and streams the same grid window by window
(``render_window`` + ``OrtholensClient.upload``). Reported per mode: the grid in pixels,
the image size in MiB, seconds (render, and for ``stream`` also sending and the
daemon's writes), and the process's peak resident memory above its level after QGIS
started, MiB (``ru_maxrss``). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

REPO = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(mode: str, raster: str, gsd: float, window_px: int) -> Dict[str, Any]:
    """Run one mode in this process (see the module docstring); returns its figures."""
    from qgis.core import QgsApplication, QgsRasterLayer

    app = QgsApplication([], False)
    app.initQgis()
    from plugin.detect.plan import prepare_detect
    from plugin.detect.render import render_grid, render_pixels, render_window, upload_spec

    layer = QgsRasterLayer(raster, "raster", "gdal")
    if not layer.isValid():
        raise SystemExit(f"cannot open {raster}")
    plan = prepare_detect(layer, layer.extent(), layer.crs()).fallback
    grid = render_grid(plan, gsd)
    base = _rss_mib()
    t0 = time.perf_counter()
    if mode == "whole":
        render_pixels(plan, gsd)
    else:
        import dataclasses

        from protocol.client import OrtholensClient
        from protocol.launcher import start_daemon
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_daemon(str(REPO / ".venv" / "backend" / "bin" / "python"), port,
                            str(REPO), wait_s=120)
        try:
            t0 = time.perf_counter()
            spec = dataclasses.replace(upload_spec(plan, grid), window_px=window_px)
            with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=30) as client:
                client.upload(spec, lambda window: render_window(plan, grid, window))
        finally:
            proc.terminate()
            proc.wait(15)
    seconds = time.perf_counter() - t0
    return {"mode": mode, "width": grid.width, "height": grid.height,
            "image_mib": round(grid.width * grid.height * 3 / 2 ** 20, 1),
            "seconds": round(seconds, 2), "peak_rss_above_start_mib": round(_rss_mib() - base, 1),
            "window_px": window_px if mode == "stream" else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.pixel_upload", description=__doc__)
    ap.add_argument("--raster", default=None, help="default: the Vienna orthophoto")
    ap.add_argument("--gsd", type=float, default=0.1, help="metres a pixel (the model's)")
    ap.add_argument("--window-px", type=int, default=1024)
    ap.add_argument("--out", default=str(REPO / "out" / "pixel_upload.json"))
    ap.add_argument("--mode", choices=["whole", "stream"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.raster is None:
        from backend.config import vienna_scene
        args.raster = str(vienna_scene())
    if args.mode:  # a child: one mode, JSON on stdout
        print(json.dumps(measure(args.mode, args.raster, args.gsd, args.window_px)),
              flush=True)
        os._exit(0)  # no QGIS teardown: its order at interpreter exit can crash
    rows = []
    for mode in ("whole", "stream"):
        out = subprocess.run([sys.executable, "-m", "tools.pixel_upload", "--mode", mode,
                              "--raster", args.raster, "--gsd", str(args.gsd),
                              "--window-px", str(args.window_px)], cwd=REPO, check=True,
                             capture_output=True, text=True, env=dict(os.environ)).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| mode | grid | image | seconds | peak RSS above start |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['width']} x {r['height']} | {r['image_mib']} MiB | "
              f"{r['seconds']} | {r['peak_rss_above_start_mib']} MiB |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
