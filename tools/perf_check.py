"""Accuracy checks behind the card's CPU ``tiling`` and ``graphs`` (docs/performance.md).

Usage::

    python -m tools.perf_check geometry [--model ID] [--geometries 512/128,1024/64,...]
    python -m tools.perf_check int8 [--model ID] [--gsd 0.1,0.15,0.2,0.3] [--splits ...]
                                    [--calibrate METHOD[:GSD,...]] [--keep-fp32 NAMES]
    python -m tools.perf_check speed [--rounds 3] [--geometries ...]
    python -m tools.perf_check profile [--model ID]

``geometry``: each tile geometry (``tile_size/overlap`` pixels) runs a whole detection
(:func:`backend.inference.detect.run_detect` with ``overrides``) of

- two *mosaics* of real pv01 tiles with their reference masks: the train split (56
  tiles of 256 px side by side, 7 x 8: 1792 x 2048 px) and the held-out split (12 tiles,
  3 x 4: 768 x 1024 px). pv01 tiles are 256 px, inside one tile of any geometry, so only a
  mosaic puts tile borders, and the seams a geometry leaves, over real panels;
- the middle 200 m x 200 m of the Vienna scene (2000 x 2000 px at 0.1 m, no panels,
  roofs everywhere), or with ``--rasters vienna_whole`` all of it (5000 x 5000 px),

and reports per geometry: pixel IoU and object F1 against the masks
(``protocol.metrics.compare``), and against the first geometry (the baseline): the
share of valid pixels whose class flips at the card's threshold, the largest
probability difference, and the polygons (count, IoU of their union with the
baseline's), plus the seconds of each run.

``int8``: fp32 and INT8 graphs (``backend.learning.quantize``) of a single model over the
held-out tiles and the train-split tiles one by one, as ``tools.evaluate`` scores them
(pixel IoU and object F1 summed over tiles), with the share of pixels whose class flips
and the largest probability difference. The train split stands in for cross-validation:
the shipped model was fitted on 47 of those 56 tiles, and the INT8 ranges are calibrated
on the first 24 by name, so their figures are reported separately as well. With
``--gsd`` the tiles are first made coarser as ``build.py eval`` makes them
(``tools.evaluate.coarser_copy``, GDAL average) and scored on the coarse grid: the
layers a card's ``quantization.max_layer_gsd_m`` is chosen on. ``--calibrate`` quantizes
a temporary graph instead of using the card's (``minmax`` or ``percentile``, optionally
also calibrated on chips of coarser layers), ``--keep-fp32`` keeps nodes whose names
contain these parts float32: the experiments behind the card's recipe.

``speed``: the baseline (512 / 128) and the card's CPU tiles, fp32, measured in turns
(ABAB..., ``--rounds``) so that a machine whose load drifts weighs on both alike: the
model alone on random tiles of each tile size already in memory, and whole detections
of the 200 m Vienna extent and of a 1920 x 1080 px screen extent at 0.1 m; medians,
and the ratios new / baseline.

``profile``: a detection of the whole Vienna scene (5000 x 5000 px at 0.1 m; with
``--layer-gsd 0.1`` from a 0.1 m copy of it, which runs a card's INT8 graph) run twice
in one process, the second under cProfile: its seconds, the seconds in the predictor
and the functions that take the most time themselves (the caller's thread only: the
reading thread is not profiled).

Prints JSON and writes ``out/perf_check_<what>.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from backend.config import REPO, vienna_scene
from backend.inference.detect import run_detect
from backend.inference.predictors import OnnxPredictor
from backend.learning import data as pvdata
from backend.learning.quantize import (CALIBRATION_TILES, INT8_FILE, calibration_chips,
                                      quantize_onnx)
from backend.models.catalog import cpu_default_model_id, load_card
from protocol.metrics import Counts, compare
from protocol.params import DetectParams, FileSource
from tools.evaluate import coarser_copy, rasterize_features

MOSAIC_COLS = {"train": 8, "heldout": 4}
#: The geometries the ``geometry`` check compares by default (the first is the baseline).
GEOMETRIES = "512/128,1024/128,1024/64,1024/32"
#: The middle 200 m x 200 m of the Vienna scene (EPSG:31256 metres).
VIENNA_EXTENT = [-1600.0, 338450.0, -1400.0, 338650.0]


def mosaic(split: str, out_dir: Path) -> Tuple[Path, np.ndarray]:
    """A GeoTIFF of the ``split``'s tiles side by side (by name, row-major) in EPSG:32651
    at 0.1 m, and its reference mask (bool (H, W))."""
    import rasterio
    from rasterio.transform import from_origin
    tiles = pvdata.list_tiles(split)
    cols = MOSAIC_COLS[split]
    rows = -(-len(tiles) // cols)
    img = np.zeros((3, rows * 256, cols * 256), np.uint8)
    ref = np.zeros((rows * 256, cols * 256), bool)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        with rasterio.open(t.image_path) as s:
            img[:, r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = s.read()[:3]
        with rasterio.open(t.mask_path) as s:
            ref[r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = s.read(1) > 0
    path = out_dir / f"mosaic_{split}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32651",
                       transform=from_origin(500000.0, 3600000.0, 0.1, 0.1)) as d:
        d.write(img)
    return path, ref


def detect(path: Path, model_id: str, overrides: Optional[Dict] = None,
           predictor=None, extent: Optional[List[float]] = None) -> Dict:
    """A detection of ``path`` (``extent`` in its CRS, default all of it): features, the
    foreground probability (float32 (H, W)), the valid mask, the grid's transform, and
    seconds."""
    keep: Dict = {}

    def on_probs(probs, valid, grid):
        keep.update(p=probs[1].copy(), valid=valid.copy(), transform=grid.transform)

    t0 = time.perf_counter()
    res = run_detect(DetectParams(FileSource(str(path)), model_id, extent=extent), [],
                     predictor=predictor, overrides=overrides, on_probs=on_probs)
    return dict(keep, features=res["features"], seconds=round(time.perf_counter() - t0, 2))


def union_iou(a: List[Dict], b: List[Dict]) -> float:
    """IoU of the union of two lists of polygon features (1.0 when both are empty)."""
    import shapely
    ua = shapely.union_all([shapely.from_wkt(f["wkt"]) for f in a])
    ub = shapely.union_all([shapely.from_wkt(f["wkt"]) for f in b])
    union = ua.union(ub).area
    return 1.0 if union == 0 else round(ua.intersection(ub).area / union, 5)


def versus(run: Dict, base: Dict, threshold: float) -> Dict:
    """How ``run`` differs from ``base`` (:func:`detect` results of one raster)."""
    v = run["valid"] & base["valid"]
    flips = ((run["p"] >= threshold) != (base["p"] >= threshold)) & v
    return {"flipped_px_share": round(float(flips.sum()) / max(1, int(v.sum())), 6),
            "max_prob_diff": round(float(np.abs(run["p"] - base["p"])[v].max()), 4),
            "polygons": len(run["features"]), "polygon_union_iou": union_iou(
                run["features"], base["features"])}


def scores(run: Dict, ref: np.ndarray) -> Dict:
    """Pixel IoU and object F1 of ``run``'s polygons against the mask ``ref``."""
    pred = rasterize_features(run["features"], ref.shape, run["transform"]) > 0
    s = compare(pred, ref).summary()
    return {"pixel_iou": round(s["pixel_iou"], 4), "object_f1": round(s["object_f1"], 4)}


def geometry(model_id: str, geometries: List[Tuple[int, int]],
             names: Tuple[str, ...] = ("train", "heldout", "vienna")) -> Dict:
    """The ``geometry`` check (module docstring) of the rasters ``names``; the first
    geometry is the baseline."""
    card = load_card(model_id)
    out: Dict = {}
    with tempfile.TemporaryDirectory(prefix="ortholens-perf-") as tmp:
        rasters = [(s, *mosaic(s, Path(tmp))) for s in ("train", "heldout") if s in names]
        if "vienna" in names:
            rasters.append(("vienna", vienna_scene(), None))
        if "vienna_whole" in names:
            rasters.append(("vienna_whole", vienna_scene(), None))
        for name, path, ref in rasters:
            base = None
            for size, overlap in geometries:
                run = detect(path, model_id, {"tile_size": size, "overlap": overlap},
                             extent=VIENNA_EXTENT if name == "vienna" else None)
                r = {"seconds": run["seconds"]}
                if ref is not None:
                    r.update(scores(run, ref))
                if base is None:
                    base = run
                    r["polygons"] = len(run["features"])
                else:
                    r.update(versus(run, base, card.threshold))
                out.setdefault(name, {})[f"{size}/{overlap}"] = r
                print(name, f"{size}/{overlap}", json.dumps(r), flush=True)
    return out


def split_scores(model_id: str, split: str, predictors: Dict[str, object],
                 gsd_m: Optional[float] = None) -> Dict:
    """Per predictor, :class:`Counts` summed over the ``split``'s tiles (all of them and
    those outside the INT8 calibration set), with flips against the first predictor;
    with ``gsd_m``, the tiles made coarser as ``build.py eval`` makes them
    (``tools.evaluate.coarser_copy``) and scored on the coarse grid."""
    import rasterio
    card = load_card(model_id)
    tiles = pvdata.list_tiles(split)
    n_calib = card.quantization.calibration_tiles if card.quantization else CALIBRATION_TILES
    calib = {t.name for t in pvdata.list_tiles("train")[:n_calib]}
    totals = {k: {"all": Counts(), "not_calibration": Counts()} for k in predictors}
    flips = {k: [0, 0, 0.0] for k in predictors}
    tmp = tempfile.TemporaryDirectory()
    for t in tiles:
        if gsd_m is None:
            path = t.image_path
            with rasterio.open(t.mask_path) as s:
                ref, transform = s.read(1) > 0, s.transform
        else:
            path, ref, transform = coarser_copy(t.image_path, t.mask_path, gsd_m,
                                                Path(tmp.name))
        first = None
        for k, pred in predictors.items():
            run = detect(path, model_id, predictor=pred)
            c = compare(rasterize_features(run["features"], ref.shape, transform) > 0, ref)
            totals[k]["all"].add(c)
            if t.name not in calib:
                totals[k]["not_calibration"].add(c)
            if first is None:
                first = run
            else:
                v = versus(run, first, card.threshold)
                flips[k][0] += int(round(v["flipped_px_share"] * first["valid"].sum()))
                flips[k][1] += int(first["valid"].sum())
                flips[k][2] = max(flips[k][2], v["max_prob_diff"])
    out: Dict = {}
    for k, by in totals.items():
        out[k] = {sub: {m: round(c.summary()[m], 4) for m in ("pixel_iou", "object_f1")}
                  for sub, c in by.items()}
        if flips[k][1]:
            out[k]["flipped_px_share"] = round(flips[k][0] / flips[k][1], 6)
            out[k]["max_prob_diff"] = flips[k][2]
    out["tiles"] = len(tiles)
    tmp.cleanup()
    return out


def int8(model_id: str, gsds: Tuple[Optional[float], ...] = (None,),
         splits: Tuple[str, ...] = ("heldout", "train"),
         calibration: Optional[Tuple[str, Tuple[float, ...], Tuple[str, ...]]] = None
         ) -> Dict:
    """The ``int8`` check (module docstring): per split and layer GSD (None: the
    tiles' own). ``calibration``: ``(method, layer GSDs, nodes kept in float32)`` to
    quantize with into a
    temporary copy, instead of the card's INT8 graph."""
    card = load_card(model_id)
    q = card.onnx_path.with_name(INT8_FILE)
    tmp = tempfile.TemporaryDirectory()
    if calibration is not None:
        q = quantize_onnx(card, Path(tmp.name) / INT8_FILE,
                          chips=list(calibration_chips(card, layer_gsds_m=calibration[1])),
                          method=calibration[0], keep_fp32=calibration[2])
    elif not q.is_file():
        quantize_onnx(card)
    predictors = {"fp32": OnnxPredictor(card.updated({"graphs": {}})),
                  "int8": OnnxPredictor(card.updated({"graphs": {"cpu": str(q)}}))}
    out = {f"{s}@{g or card.gsd_m:g}": split_scores(model_id, s, predictors, g)
           for g in gsds for s in splits}
    tmp.cleanup()
    for s, r in out.items():
        d = {m: round(r["int8"]["all"][m] - r["fp32"]["all"][m], 4)
             for m in ("pixel_iou", "object_f1")}
        r["int8_minus_fp32"] = d
        print(s, json.dumps(r), flush=True)
    return out


def speed(model_id: str, rounds: int,
          geometries: Optional[List[Tuple[int, int]]] = None) -> Dict:
    """The ``speed`` check (module docstring) of ``geometries`` (default: 512 / 128 and
    the card's CPU tiles); ratios are against the first."""
    import rasterio

    from backend.inference.grid import layer_gsd
    from backend.inference.predictors import get_predictor
    card = load_card(model_id)
    with rasterio.open(vienna_scene()) as ds:  # the graph its detections run
        predictor = get_predictor(card, layer_gsd_m=layer_gsd(ds, None, None))
    geometries = geometries or [(512, 128), card.tile_geometry("cpu")]
    geos = {"{}/{}".format(*g): g for g in geometries}
    screen = [-1596.0, 338496.0, -1404.0, 338604.0]  # 192 m x 108 m
    times: Dict[str, Dict[str, List[float]]] = {k: {} for k in geos}
    rng = np.random.default_rng(0)
    for size, _ in geos.values():  # warm-up: each input shape's first call
        predictor.predict_raw(rng.integers(0, 256, (4, card.bands, size, size), np.uint8))
    for _ in range(rounds):
        for name, (size, overlap) in geos.items():
            x = rng.integers(0, 256, (4, card.bands, size, size), np.uint8)
            t0 = time.perf_counter()
            predictor.predict_raw(x)
            times[name].setdefault("model_mpx_per_s", []).append(
                x[:, 0].size / 1e6 / (time.perf_counter() - t0))
            over = {"tile_size": size, "overlap": overlap}
            for what, ext, mpx in (("extent", VIENNA_EXTENT, 4.0),
                                   ("screen", screen, 1920 * 1080 / 1e6)):
                run = detect(vienna_scene(), model_id, over, extent=ext)
                times[name].setdefault(f"{what}_s", []).append(run["seconds"])
                times[name].setdefault(f"{what}_mpx_per_s", []).append(mpx / run["seconds"])
    out: Dict = {k: {m: round(float(np.median(v)), 3) for m, v in by.items()}
                 for k, by in times.items()}
    base = next(iter(geos))
    for k in geos:
        out[k]["extent_ratio_vs_model"] = round(
            out[k]["extent_mpx_per_s"] / out[k]["model_mpx_per_s"], 3)
        if k != base:
            out[f"{k}_vs_{base}"] = {m: round(out[k][m] / out[base][m], 3) for m in out[k]}
    out["rounds"] = rounds
    return out


def profile(model_id: str, top: int = 12, layer_gsd_m: Optional[float] = None) -> Dict:
    """The ``profile`` check (module docstring); ``layer_gsd_m``: the Vienna scene as a
    layer of that GSD (``tools.bench.fine_copy``) instead of as it is (0.3 m)."""
    import cProfile
    import pstats
    tmp = tempfile.TemporaryDirectory()
    raster = vienna_scene()
    if layer_gsd_m is not None:
        from tools.bench import fine_copy
        raster = fine_copy(raster, layer_gsd_m, Path(tmp.name))
    req = {"type": "detect", "model": model_id,
           "source": {"kind": "file", "path": str(raster)}}
    run_detect(req, [])  # imports, the session, GDAL's first reads
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = run_detect(req, [])
    prof.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, _)
    model_s = sum(v[3] for k, v in stats.items() if k[2] == "predict_raw")
    own = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    tmp.cleanup()
    return {"seconds": round(seconds, 2), "predictor_s": round(model_s, 2),
            "polygons": len(res["features"]), "graph": res["stats"]["graph"],
            "source_gsd_m": res["stats"]["source_gsd_m"],
            "top_own_s": [[f"{Path(k[0]).name}:{k[1]}({k[2]})", round(v[2], 3)]
                          for k, v in own]}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["geometry", "int8", "speed", "profile"])
    ap.add_argument("--rounds", type=int, default=3, help="speed: turns of each variant")
    ap.add_argument("--model", default=None)
    ap.add_argument("--geometries", default=GEOMETRIES,
                    help="tile_size/overlap,...; speed: default 512/128 and the card's")
    ap.add_argument("--rasters", default="train,heldout,vienna",
                    help="geometry: which of train,heldout,vienna,vienna_whole")
    ap.add_argument("--tag", default="", help="suffix of the output file's name")
    ap.add_argument("--layer-gsd", type=float, default=None,
                    help="profile: the Vienna scene as a layer of this GSD (default 0.3 m)")
    ap.add_argument("--gsd", default="", help="int8: layer GSDs, metres (e.g. 0.1,0.2,0.3; "
                    "default the tiles' own)")
    ap.add_argument("--splits", default="heldout,train", help="int8: which splits")
    ap.add_argument("--calibrate", default=None, metavar="METHOD[:GSD,...]",
                    help="int8: quantize anew (minmax or percentile), also on chips of "
                    "these layer GSDs, instead of using the card's graph")
    ap.add_argument("--keep-fp32", default="", help="int8 --calibrate: parts of node "
                    "names kept in float32, comma-separated")
    args = ap.parse_args(argv)
    mid = args.model or cpu_default_model_id()
    if args.what == "geometry":
        geos = [tuple(int(x) for x in g.split("/")) for g in args.geometries.split(",")]
        report = geometry(mid, geos, tuple(args.rasters.split(",")))
    elif args.what == "speed":
        given = args.geometries if args.geometries != GEOMETRIES else None
        report = speed(mid, args.rounds, [tuple(int(x) for x in g.split("/"))
                                          for g in given.split(",")] if given else None)
    elif args.what == "profile":
        report = profile(mid, layer_gsd_m=args.layer_gsd)
    else:
        cal = None
        if args.calibrate:
            method, _, g = args.calibrate.partition(":")
            cal = (method, tuple(float(x) for x in g.split(",") if x),
                   tuple(x for x in args.keep_fp32.split(",") if x))
        report = int8(mid, tuple(float(g) for g in args.gsd.split(",")) if args.gsd else (None,),
                      tuple(args.splits.split(",")), cal)
    out = REPO / "out" / f"perf_check_{args.what}{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": mid, args.what: report}, indent=2) + "\n", "utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
