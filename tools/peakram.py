"""Peak RAM of the daemon running a batch job: a small extent vs a 100x larger one.

``python -m tools.peakram [--raster R] [--mosaic 2] [--small-m 64] [--scale 100]
[--region-px 512] [--model ID] [--out out/peakram.json]``
(``python3 build.py peakram``; the model is the catalog's CPU default unless named).

The input is a VRT mosaic of ``mosaic`` x ``mosaic`` copies of the raster side by side
(default: the Vienna scene, 2 x 2 = 1 km x 1 km, 10000 x 10000 px at the model's
0.1 m), a multi-file-style input as large as needed. For each extent it starts a fresh
daemon (``python -m backend`` on a free port, its own job store), submits one ``batch``
job over a square extent centred on the mosaic (``small-m`` metres a side, then
``sqrt(scale)`` times that, i.e. ``scale`` times the area), waits for the result and
reads the daemon's peak resident memory, ``VmHWM`` of ``/proc/<pid>/status``, before
stopping it. Both runs use the same region size and the small one already fills a model
batch (64 m = 4 tiles of 512 px), so a bounded pipeline peaks at about the same RSS for
both. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from backend.config import REPO, vienna_scene
from backend.models.catalog import cpu_default_model_id
from protocol.client import OrtholensClient
from protocol.params import BatchParams, DetectParams, FileSource
from tools.common import local_daemon, status_kb


def mosaic_vrt(src: str, n: int, path: Path) -> Path:
    """A VRT of ``n`` x ``n`` copies of ``src`` side by side (same CRS, north-up)."""
    import rasterio
    from xml.sax.saxutils import escape
    with rasterio.open(src) as ds:
        w, h, t, count = ds.width, ds.height, ds.transform, ds.count
        dtype = {"uint8": "Byte"}.get(ds.dtypes[0], "Byte")
        wkt = ds.crs.to_wkt()
        ci = [c.name.capitalize() for c in ds.colorinterp]
    gt = f"{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}"
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{escape(str(src))}"
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{w}\" ySize=\"{h}\"/>"
            f"<DstRect xOff=\"{i * w}\" yOff=\"{j * h}\" xSize=\"{w}\" ySize=\"{h}\"/>"
            f"</SimpleSource>" for j in range(n) for i in range(n))
        bands.append(f"<VRTRasterBand dataType=\"{dtype}\" band=\"{b}\"><ColorInterp>"
                     f"{ci[b - 1]}</ColorInterp>{sources}</VRTRasterBand>")
    path.write_text(f"<VRTDataset rasterXSize=\"{n * w}\" rasterYSize=\"{n * h}\"><SRS>"
                    f"{escape(wkt)}</SRS><GeoTransform>{gt}</GeoTransform>{''.join(bands)}"
                    f"</VRTDataset>")
    return path


def measure(raster: str, extent, region_px: int, model: str, workdir: Path) -> Dict[str, Any]:
    """One batch job in a fresh daemon (its own job store); returns its stats and the
    daemon's peak RSS."""
    run = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    with local_daemon(str(run / "daemon.log"), env={"ORTHOLENS_JOBS_DIR": str(run / "jobs")}
                      ) as (proc, endpoint):
        idle_kb = status_kb(proc.pid, "VmHWM")
        t0 = time.monotonic()
        trace = {}  # peak RSS so far when a quarter, half... of the job is done

        def on_progress(fraction: float, message: str) -> None:
            for q in (0.25, 0.5, 0.75):
                if fraction >= q and q not in trace:
                    trace[q] = round(status_kb(proc.pid, "VmHWM") / 1024, 1)

        params = BatchParams(DetectParams(FileSource(raster), model, extent=tuple(extent)),
                             str(run / "out.gpkg"), region_px=region_px)
        with OrtholensClient(endpoint, timeout_s=30) as c:
            res = c.batch(params, on_progress=on_progress, job_timeout_s=1800)
        seconds = time.monotonic() - t0
        peak_kb = status_kb(proc.pid, "VmHWM")
    st = res["stats"]
    return {"extent": list(extent), "side_m": extent[2] - extent[0],
            "grid_px": [st["width"], st["height"]], "mpx": round(st["width"] * st["height"] / 1e6, 2),
            "regions": st["regions"], "region_px": st["region_px"], "tiles_run": st["tiles_run"],
            "polygons": st["count"], "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1), "idle_rss_mb": round(idle_kb / 1024, 1),
            "peak_rss_mb_at": {f"{int(q * 100)}%": v for q, v in sorted(trace.items())}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.peakram", description=__doc__)
    ap.add_argument("--raster", default=str(vienna_scene()))
    ap.add_argument("--mosaic", type=int, default=2, help="copies a side in the VRT")
    ap.add_argument("--small-m", type=float, default=64.0, help="small extent side, m")
    ap.add_argument("--scale", type=float, default=100.0, help="area ratio large/small")
    ap.add_argument("--region-px", type=int, default=512)
    ap.add_argument("--model", default=None,
                    help="model id (default: the catalog's CPU default model)")
    ap.add_argument("--out", default=str(REPO / "out" / "peakram.json"))
    args = ap.parse_args(argv)
    model = args.model or cpu_default_model_id()
    import rasterio
    runs = []
    with tempfile.TemporaryDirectory(prefix="ortholens-peakram-") as tmp:
        raster = str(mosaic_vrt(args.raster, args.mosaic, Path(tmp) / "mosaic.vrt"))
        with rasterio.open(raster) as ds:
            b = ds.bounds
        cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
        for side in (args.small_m, args.small_m * math.sqrt(args.scale)):
            h = side / 2
            ext = (max(b.left, cx - h), max(b.bottom, cy - h), min(b.right, cx + h),
                   min(b.top, cy + h))
            print(f"[peakram] batch job over {ext[2] - ext[0]:.0f} x {ext[3] - ext[1]:.0f} m "
                  f"of a {args.mosaic}x{args.mosaic} VRT mosaic of {Path(args.raster).name} "
                  f"(regions of {args.region_px} px)...", flush=True)
            runs.append(measure(raster, ext, args.region_px, model, Path(tmp)))
    small, large = runs
    ratio_area = large["mpx"] / max(small["mpx"], 1e-9)
    print(f"{'extent':>14} {'grid px':>13} {'Mpx':>7} {'regions':>6} {'s':>7} "
          f"{'peak RSS MB':>12} {'idle RSS MB':>12}")
    for r in runs:
        print(f"{r['side_m']:>12.0f} m {r['grid_px'][0]:>6}x{r['grid_px'][1]:<6} "
              f"{r['mpx']:>7.2f} {r['regions']:>6} {r['seconds']:>7.1f} "
              f"{r['peak_rss_mb']:>12.1f} {r['idle_rss_mb']:>12.1f}")
    growth = large["peak_rss_mb"] / max(small["peak_rss_mb"], 1e-9)
    at = ", ".join(f"{k} {v:.0f} MB" for k, v in large["peak_rss_mb_at"].items())
    print(f"large job, peak RSS so far at {at}, 100% {large['peak_rss_mb']:.0f} MB "
          f"(flat once the tile cache and buffers are full)")
    print(f"area x{ratio_area:.0f}: daemon peak RSS x{growth:.2f} "
          f"({small['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MB)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"raster": args.raster, "mosaic": args.mosaic,
                               "model": model,
                               "region_px": args.region_px, "runs": runs,
                               "area_ratio": round(ratio_area, 2),
                               "peak_rss_ratio": round(growth, 3)}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
