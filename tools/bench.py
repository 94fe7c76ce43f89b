"""Throughput, latency and accuracy of inference variants, measured in one run.

Usage::

    python -m tools.bench [--models ID ...] [--raster PATH] [--out out/bench.json]
                          [--no-client] [--repeat 3] [--no-retrain] [--no-accuracy]
                          [--variants baseline,fp32,int8]

For each model (default: the catalog's CPU default, and the ensemble where one is
shipped) and each *variant* of how it runs on this device — ``baseline`` (fp32 graph,
512 px tiles with 128 px of overlap: the geometry every model ran with before tile
geometry was measured), ``fp32`` (the fp32 graph with the card's tiles for this device),
``int8`` (the INT8 graph of ``backend.learning.quantize`` with the card's tiles, for the
layers its ``quantization`` serves; made in a temporary folder when the card keeps none)
— on the same raster (default: the real Vienna 2023 orthophoto as a 0.1 m layer,
:func:`fine_copy`: 5000 x 5000 px; ``--raster`` another):

(a) *model only*: batches of 4 random uint8 tiles of the variant's tile size (512 px for
    ``baseline``, the card's for the device otherwise) already in memory through the
    predictor (``Predictor.predict_raw``: normalisation, inference, softmax; for
    ensembles every member x TTA), in Mpx/s of input;
(b) *end to end*: :func:`backend.inference.detect.run_detect` on the whole raster: read ->
    resample -> tile -> infer -> stitch -> threshold -> polygonize, in Mpx/s and km²/h at
    the model GSD, and the ratio (b)/(a);
(c) *screen extent*: the round trip of a 1920 x 1080 px extent at 0.1 m (192 m x 108 m)
    through the plugin's client to a real daemon process (median of ``--repeat``, after
    one warm-up call);
(d) *accuracy* (unless ``--no-accuracy``): pixel IoU and object F1 on the pv01 held-out
    tiles (0.1 m) and false polygons per km² on the Vienna scene as it is (0.3 m;
    ``tools.evaluate``), and how many of the variant's Vienna polygons differ from the
    baseline's;

(e) *retrain budget* (unless ``--no-retrain``; single models, the first variant only): a
    real retrain of a small Vienna area with a 45 s budget for the whole job (preparing,
    training, the gate, saving), into a temporary user-models folder: whether it ended
    within the budget, each phase's seconds (``backend.learning.time_plan``), and the
    training's planned share against the seconds it trained; and the seconds a retrain
    cancelled as its training begins takes to stop (``retrain_cancel``);
(f) *click*: the seconds of an *Add by click* request (``backend.inference.region``, one
    window of ``protocol.review.REGION_WINDOW_PX`` pixels) in the Vienna scene, median of
    ``--repeat`` after one warm-up call;

plus peak RAM (the process's VmHWM; the daemon's for (c)), and on CUDA the peak VRAM.
A variant runs from a temporary copy of the model folder whose cards say its graph and
tiles (``ORTHOLENS_MODELS``), so the daemon of (c) runs it too. Prints a table and
writes JSON. Timings are wall-clock with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from backend.config import REPO, models_dir, vienna_scene
from backend.inference.detect import run_detect
from backend.inference.predictors import device_name, forget_predictors, get_predictor
from backend.models.catalog import (cpu_default_model_id, default_model_id, list_cards,
                                    load_card)
from protocol.client import OrtholensClient
from protocol.params import DetectParams, FileSource
from tools.common import local_daemon, peak_rss_mb

#: name -> (graph: "fp32" | "int8", tiles: None for the card's, else (size, overlap)).
VARIANTS = {"baseline": ("fp32", (512, 128)), "fp32": ("fp32", None),
            "int8": ("int8", None)}


@contextmanager
def variant_models(variant: str, model_ids: List[str]) -> Iterator[Path]:
    """A temporary copy of the model folder whose cards run ``variant`` on the CPU
    (graph and tiles), set as ``ORTHOLENS_MODELS`` while the context lasts; members of
    an ensemble get the variant too. The INT8 graph is made when a card has none."""
    from backend.learning.quantize import INT8_FILE, quantize_onnx
    graph, tiles = VARIANTS[variant]
    old = os.environ.get("ORTHOLENS_MODELS")
    with tempfile.TemporaryDirectory(prefix=f"ortholens-bench-{variant}-") as tmp:
        root = Path(tmp)
        shutil.copy2(models_dir() / "defaults.json", root / "defaults.json")
        for d in models_dir().iterdir():
            if (d / "card.json").is_file():
                shutil.copytree(d, root / d.name)
        for d in root.iterdir():
            if not (d / "card.json").is_file():
                continue
            card = json.loads((d / "card.json").read_text("utf-8"))
            graphs = dict(card.get("graphs") or {})
            if graph == "fp32":
                graphs.pop("cpu", None)
            elif card.get("kind") != "ensemble":
                if not (d / INT8_FILE).is_file():
                    quantize_onnx(load_card(d.name, root))
                graphs["cpu"] = INT8_FILE
            card["graphs"] = graphs
            if tiles is not None:
                card["tiling"] = dict(card.get("tiling") or {},
                                      cpu={"tile_size": tiles[0], "overlap": tiles[1]})
            (d / "card.json").write_text(json.dumps(card, indent=2) + "\n", "utf-8")
        os.environ["ORTHOLENS_MODELS"] = str(root)
        forget_predictors()
        try:
            yield root
        finally:
            forget_predictors()
            if old is None:
                os.environ.pop("ORTHOLENS_MODELS", None)
            else:
                os.environ["ORTHOLENS_MODELS"] = old


def model_only(model_id: str, tile: Optional[int] = None, batch: int = 4,
               seconds: float = 8.0) -> Dict:
    """Throughput of the predictor on random tiles already in memory (Mpx/s); tiles of
    ``tile`` px (default: the card's tile size for the predictor's device)."""
    card = load_card(model_id)
    predictor = get_predictor(card)
    tile = tile or card.tile_geometry(
        "cuda" if str(predictor.device).startswith("cuda") else "cpu")[0]
    x = np.random.default_rng(0).integers(0, 256, (batch, card.bands, tile, tile), np.uint8)
    predictor.predict_raw(x)  # warm-up (graph optimisation, allocator)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        predictor.predict_raw(x)
        n += 1
    dt = time.perf_counter() - t0
    mpx = n * batch * tile * tile / 1e6
    return {"mpx_per_s": round(mpx / dt, 3), "batches": n, "batch": batch, "tile": tile,
            "runtime": predictor.kind, "device": predictor.device,
            "graph": getattr(predictor, "graph", "")}


def fine_copy(raster: Path, gsd_m: float, out_dir: Path) -> Path:
    """``raster`` resampled bilinearly to ``gsd_m`` metres per pixel (GDAL's warper, as
    the engine reads a coarser layer) and written as a tiled, DEFLATE-compressed GeoTIFF
    in ``out_dir``: the same pixels the engine sees, as a layer of that GSD (a 0.1 m
    orthophoto runs the graphs a card keeps for 0.1 m layers)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    with rasterio.open(raster) as src:
        b = src.bounds
        w, h = round((b.right - b.left) / gsd_m), round((b.top - b.bottom) / gsd_m)
        t = rasterio.Affine(gsd_m, 0.0, b.left, 0.0, -gsd_m, b.top)
        with WarpedVRT(src, crs=src.crs, transform=t, width=w, height=h,
                       resampling=Resampling.bilinear) as vrt:
            out = out_dir / f"{raster.stem}_{gsd_m:g}m.tif"
            profile = dict(vrt.profile, driver="GTiff", tiled=True, blockxsize=512,
                           blockysize=512, compress="deflate")
            with rasterio.open(out, "w", **profile) as dst:
                for _, win in dst.block_windows(1):
                    dst.write(vrt.read(window=win), window=win)
    return out


def end_to_end(model_id: str, raster: Path) -> Tuple[Dict, Dict]:
    """Throughput of a whole detect job on ``raster``, and the job's result."""
    t0 = time.perf_counter()
    res = run_detect(DetectParams(FileSource(str(raster)), model_id), [])
    dt = time.perf_counter() - t0
    st = res["stats"]
    mpx = st["width"] * st["height"] / 1e6
    return {"mpx": round(mpx, 2), "seconds": round(dt, 2), "mpx_per_s": round(mpx / dt, 3),
            "km2_per_h": round(st["area_km2"] / dt * 3600, 2), "polygons": len(res["features"]),
            "model_seconds": st["model_seconds"], "graph": st.get("graph")}, res


def screen_latency(model_id: str, raster: Path, repeat: int = 3) -> Dict:
    """Round trip of a 1920 x 1080 px (at 0.1 m) extent through client + daemon."""
    import rasterio

    with rasterio.open(raster) as ds:
        b = ds.bounds
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    params = DetectParams(FileSource(str(raster)), model_id,
                          extent=(cx - 96.0, cy - 54.0, cx + 96.0, cy + 54.0))
    times = []
    with local_daemon() as (proc, endpoint), OrtholensClient(endpoint, timeout_s=30) as c:
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            res = c.detect(params)
            if i:
                times.append(time.perf_counter() - t0)
        daemon_peak = peak_rss_mb(proc.pid)
    return {"extent_px": [1920, 1080], "gsd_m": 0.1,
            "median_s": round(float(np.median(times)), 3), "min_s": round(min(times), 3),
            "repeat": repeat, "polygons": len(res["features"]),
            "daemon_peak_rss_mb": round(daemon_peak, 1)}


def retrain_request(model_id: str, raster: Path, budget_s: float) -> Dict:
    """The ``retrain`` request of the retrain measurements: 60 m x 40 m of ``raster``
    (the Vienna scene, EPSG:31256) with no corrected feature, ``budget_s`` seconds."""
    return {"type": "retrain", "model": model_id,
            "source": {"kind": "file", "path": str(raster)}, "crs": "EPSG:31256",
            "features": [], "reviewed": [{"extent": [-1700, 338500, -1640, 338540]}],
            "budget_s": budget_s}


@contextmanager
def scratch_user_models() -> Iterator[str]:
    """A temporary ``ORTHOLENS_USER_MODELS`` folder for the retrained versions, removed
    afterwards: a measurement never writes into the user's."""
    from unittest import mock
    with tempfile.TemporaryDirectory(prefix="ortholens-bench-") as tmp, \
            mock.patch.dict(os.environ, {"ORTHOLENS_USER_MODELS": tmp}):
        yield tmp


def retrain_budget(model_id: str, raster: Path, budget_s: float = 45.0) -> Dict:
    """Wall-clock seconds of a real retrain job against its whole budget ``budget_s``.

    The area is 60 m x 40 m of ``raster``, the Vienna scene (EPSG:31256), with no
    corrected feature: the model's detections there are all deleted. Versions go to a
    temporary folder (``ORTHOLENS_USER_MODELS``), never the user's.
    """
    from backend.learning.retrain import run_retrain
    with scratch_user_models():
        t0 = time.perf_counter()
        rep = run_retrain(retrain_request(model_id, raster, budget_s), [])["retrain"]
        seconds = time.perf_counter() - t0
    return {"budget_s": budget_s, "seconds": round(seconds, 1),
            "within_budget": rep["time"]["within_budget"], "steps": rep["train"]["steps"],
            "train_budget_s": rep["time"].get("train_budget_s"),
            "train_s": rep["train"]["seconds"],
            "phases": {k: v for k, v in rep["time"].items() if k.endswith("_s")
                       and k not in ("budget_s", "train_budget_s")}}


def retrain_cancel(model_id: str, raster: Path) -> Dict:
    """Seconds from cancelling a real retrain (the area of :func:`retrain_budget`), at
    the progress event that starts its training, to its ``JobCancelled``."""
    from backend.learning.retrain import run_retrain
    from protocol.errors import JobCancelled
    asked: List[float] = []

    def progress(fraction: float, message: str) -> None:
        if not asked and message.startswith("training"):
            asked.append(time.perf_counter())

    with scratch_user_models():
        try:
            run_retrain(retrain_request(model_id, raster, 600.0), [], progress,
                        lambda: bool(asked))
        except JobCancelled:
            return {"stopped_s": round(time.perf_counter() - asked[0], 2)}
    raise RuntimeError("the retrain ended although it was cancelled")


def click_latency(model_id: str, repeat: int = 3) -> Dict:
    """Seconds of one *Add by click* (``run_region``) in the Vienna scene: median and
    fastest of ``repeat`` clicks after a warm-up click."""
    import rasterio

    from backend.inference.region import run_region
    from protocol.review import RegionParams
    with rasterio.open(vienna_scene()) as ds:
        crs = ds.crs.to_wkt()
    params = RegionParams(FileSource(str(vienna_scene())), model_id, -1600.0, 338500.0, crs)
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        run_region(params, [])
        if i:
            times.append(time.perf_counter() - t0)
    return {"median_s": round(float(np.median(times)), 3), "min_s": round(min(times), 3),
            "repeat": repeat}


def accuracy(model_id: str, baseline: Optional[List[str]] = None,
             vienna: Optional[Dict] = None) -> Dict:
    """Held-out pixel IoU / object F1 and Vienna false polygons per km² of ``model_id``
    as the current ``ORTHOLENS_MODELS`` runs it (``tools.evaluate``), and how many of its
    Vienna polygons have no equal (WKT) among ``baseline``'s; ``vienna``: the detection
    of the whole Vienna scene when it was already run."""
    from tools.evaluate import eval_heldout
    h = eval_heldout(model_id)
    v = vienna or run_detect(DetectParams(FileSource(str(vienna_scene())), model_id), [])
    wkt = sorted(f["wkt"] for f in v["features"])
    out = {"pixel_iou": round(h["pixel_iou"], 4), "object_f1": round(h["object_f1"], 4),
           "vienna_fp_per_km2": round(len(wkt) / v["stats"]["area_km2"], 1),
           "vienna_wkt": wkt}
    if baseline is not None:
        out["vienna_differs_from_baseline"] = len(set(wkt) ^ set(baseline))
    return out


def measure(mid: str, args, first: bool, baseline: Optional[List[str]]) -> Dict:
    """Every figure of one model in the current variant (module docstring)."""
    cuda = device_name().startswith("cuda")
    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    card = load_card(mid)
    r = {"tiles": "{}/{}".format(*card.tile_geometry("cuda" if cuda else "cpu")),
         "model_only": model_only(mid)}
    r["end_to_end"], res = end_to_end(mid, args.raster)
    r["ratio_end_to_end_vs_model"] = round(
        r["end_to_end"]["mpx_per_s"] / r["model_only"]["mpx_per_s"], 3)
    if not args.no_client:
        r["screen_extent"] = screen_latency(mid, args.raster, args.repeat)
    r["click"] = click_latency(mid, args.repeat)
    if not args.no_accuracy:
        same = Path(args.raster).resolve() == vienna_scene().resolve()
        r["accuracy"] = accuracy(mid, baseline, res if same else None)
    if first and not args.no_retrain and not load_card(mid).members:
        r["retrain_budget"] = retrain_budget(mid, vienna_scene())
        r["retrain_cancel"] = retrain_cancel(mid, vienna_scene())
    if cuda:
        import torch
        r["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    r["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return r


def table(report: Dict) -> str:
    """The report's Markdown table: one row per model and variant."""
    rows = ["| model | variant | tiles px | model only Mpx/s | end to end Mpx/s | ratio | "
            "km²/h | screen s | held-out IoU / F1 | Vienna FP/km² | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mid, by_variant in report["models"].items():
        for variant, r in by_variant.items():
            acc = r.get("accuracy") or {}
            rows.append(
                f"| {mid} | {variant} | {r.get('tiles', '')} | {r['model_only']['mpx_per_s']} | "
                f"{r['end_to_end']['mpx_per_s']} | {r['ratio_end_to_end_vs_model']} | "
                f"{r['end_to_end']['km2_per_h']} | "
                f"{r.get('screen_extent', {}).get('median_s', '')} | "
                f"{acc.get('pixel_iou', '')} / {acc.get('object_f1', '')} | "
                f"{acc.get('vienna_fp_per_km2', '')} | {r['peak_rss_mb']} |")
    return "\n".join(rows)


def default_models() -> List[str]:
    """The models measured when none is named: the CPU default, then the GPU default
    where it is another model (the ensemble, whose CPU speed is stated beside the
    single model's)."""
    cpu = cpu_default_model_id()
    gpu = default_model_id(list_cards(), cuda=True)
    return [cpu] + ([gpu] if gpu and gpu != cpu else [])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Ortholens throughput benchmark")
    ap.add_argument("--models", nargs="*", default=None,
                    help="model ids (default: the CPU default model, then the GPU "
                         "default where it is another, such as the ensemble)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated variants of {list(VARIANTS)}")
    ap.add_argument("--raster", type=Path, default=None,
                    help="default: the Vienna scene as a 0.1 m layer (fine_copy)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench.json")
    ap.add_argument("--no-client", action="store_true", help="skip the screen-extent round trip")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the accuracy figures")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-retrain", action="store_true",
                    help="skip the real retrain against a 45 s budget")
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="ortholens-bench-")
    if args.raster is None:
        args.raster = fine_copy(vienna_scene(), 0.1, Path(tmp.name))
    report = {"device": device_name(), "cpu_count": os.cpu_count(),
              "platform": platform.platform(), "raster": str(args.raster), "models": {}}
    models = args.models or default_models()
    baseline: Dict[str, List[str]] = {}
    for i, variant in enumerate(args.variants.split(",")):
        with variant_models(variant, models):
            for mid in models:
                r = measure(mid, args, i == 0, baseline.get(mid))
                if "accuracy" in r:
                    wkt = r["accuracy"].pop("vienna_wkt")
                    baseline.setdefault(mid, wkt)
                report["models"].setdefault(mid, {})[variant] = r
                print(json.dumps({mid: {variant: r}}, indent=2), flush=True)
    tmp.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print("\n" + table(report))
    print(f"device: {report['device']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
