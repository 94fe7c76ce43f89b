"""Accuracy of the shipped pipeline on real held-out data, for members and ensembles.

Usage::

    python -m tools.evaluate [--models ID ...] [--out out/eval] [--no-vienna]
                             [--raw] [--gsd M ...] [--write-cards]

For each model and each *variant* (an ensemble is also run without TTA, without shifted
tilings, and without both), every pv01 *held-out* tile (12 tiles, sites never seen in
training; Jiang et al. 2021, CC BY 4.0) goes through the same code as a ``detect``
request (:func:`backend.inference.detect.run_detect`: tiling, fusion, stitching, threshold,
cleaning, polygonization, simplification); the returned polygons are rasterized back
onto the tile's grid (``rasterio.features.rasterize``) and compared with the
reference mask:

- pixel IoU / precision / recall / F1 (photovoltaic class);
- object precision / recall / F1: objects are 8-connected components >= 20 px, matched
  at IoU >= 0.5 (``protocol.metrics``);
- a 90 % bootstrap interval over tiles (1000 resamples, seed 0) for pixel IoU and
  object F1, since 12 tiles / ~30 objects make single numbers noisy;
- calibration of the fused probabilities: expected calibration error (ECE, 10 equal
  bins; Guo et al. 2017) and a reliability diagram;
- a pixel precision-recall curve over thresholds (from probability histograms);
- ``--raw`` adds the bare model (threshold 0.5, no cleaning) to show what
  post-processing adds;
- the same held-out tiles made coarser (``--gsd``, default 0.2 m and 0.3 m; GDAL
  ``average`` resampling of the image, the mask averaged and kept where at least half a
  coarse pixel is panel), compared on the coarse grid: what users of municipal
  orthophotos get (:func:`eval_heldout_at`).

False positives come from the Vienna 2023 orthophoto (Stadt Wien, CC BY 4.0), which has
no panels: polygons and m² per km² over the whole scene (500 m x 500 m, 0.25 km²: roofs,
courtyards, gardens and the long glass roofs), resampled to the model's 0.1 m GSD.

Cross-validation figures (leave-cluster-out inside the train split, ``tools.cv``) are
read from each card, where training stored them; outline complexity is reported as
vertices per polygon.

Writes ``<out>/metrics.json``, ``<out>/report.md``, ``<out>/pr_calibration.png`` and
``<out>/errors.png`` and prints the comparison table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from backend.config import REPO, models_dir, vienna_scene
from backend.inference.detect import run_detect
from backend.inference.predictors import EnsemblePredictor, get_predictor
from backend.learning import data as pvdata
from backend.models.card import ModelCard, write_card
from backend.models.catalog import list_cards, load_card
from backend.models.markdown import folds_scored
from protocol.metrics import Counts, compare
from protocol.params import DetectParams, FileSource
from tools.cv import vertices

_BINS = 100


def rasterize_features(features: List[dict], shape, transform, class_id: int = 1) -> np.ndarray:
    """Burn features of ``class_id`` into a uint8 (H, W) mask on a grid."""
    import shapely
    from rasterio.features import rasterize
    geoms = [shapely.from_wkt(f["wkt"]) for f in features if f["class_id"] == class_id]
    if not geoms:
        return np.zeros(shape, np.uint8)
    return rasterize(geoms, out_shape=shape, transform=transform, fill=0,
                     default_value=1, dtype="uint8")


def bootstrap(per_tile: List[Counts], key: str, n: int = 1000, seed: int = 0) -> List[float]:
    """90 % percentile bootstrap interval of a summary metric over tiles."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        tot = Counts()
        for i in rng.integers(0, len(per_tile), len(per_tile)):
            tot.add(per_tile[i])
        v = tot.summary()[key]
        if np.isfinite(v):
            vals.append(v)
    return [round(float(np.percentile(vals, 5)), 4), round(float(np.percentile(vals, 95)), 4)]


def variant_predictor(card: ModelCard, tta: Optional[List[str]] = None,
                   shifts: Optional[bool] = None):
    """The predictor of ``card`` with TTA / shifted tilings switched (ensembles only);
    None when nothing is switched: each detection then runs the graph the engine runs
    for its layer's GSD (``ModelCard.graph_path``)."""
    if not card.is_ensemble or (tta is None and shifts is None):
        return None
    changes = {k: v for k, v in (("tta", tta), ("shifts", shifts)) if v is not None}
    return EnsemblePredictor(card.updated(changes), get_predictor(card).members)


def ece(hist_pos: np.ndarray, hist_neg: np.ndarray, n_bins: int = 10) -> Tuple[float, list]:
    """Expected calibration error from per-probability-bin positive/negative counts.

    Args:
        hist_pos, hist_neg: int (_BINS,) counts of reference-positive / -negative pixels
            whose predicted probability falls in each of _BINS equal bins of [0, 1].

    Returns:
        ``(ece, bins)``: ECE and ``[(mean predicted, observed frequency, count)]`` for
        ``n_bins`` coarser bins.
    """
    centers = (np.arange(_BINS) + 0.5) / _BINS
    k = _BINS // n_bins
    total = hist_pos.sum() + hist_neg.sum()
    err, rows = 0.0, []
    for b in range(n_bins):
        sl = slice(b * k, (b + 1) * k)
        cnt = hist_pos[sl].sum() + hist_neg[sl].sum()
        if cnt == 0:
            continue
        conf = float(((hist_pos[sl] + hist_neg[sl]) * centers[sl]).sum() / cnt)
        freq = float(hist_pos[sl].sum() / cnt)
        err += cnt / total * abs(conf - freq)
        rows.append((round(conf, 4), round(freq, 4), int(cnt)))
    return float(err), rows


def pr_curve(hist_pos: np.ndarray, hist_neg: np.ndarray) -> List[Tuple[float, float, float]]:
    """Pixel ``(threshold, precision, recall)`` for thresholds at the bin edges."""
    out = []
    tp_c = np.cumsum(hist_pos[::-1])[::-1]
    fp_c = np.cumsum(hist_neg[::-1])[::-1]
    for i in range(1, _BINS):
        tp, fp = tp_c[i], fp_c[i]
        if tp + fp == 0:
            continue
        out.append((i / _BINS, float(tp / (tp + fp)), float(tp / max(hist_pos.sum(), 1))))
    return out


def eval_heldout(model_id: Optional[str], raw: bool = False, predictor=None) -> Dict:
    """Metrics of one model (or variant predictor) over the pv01 held-out tiles.

    Args:
        model_id: model card id.
        raw: bare model (threshold 0.5, no min area, no hole filling, no simplify).
        predictor: a predictor to use (ensemble variants); default the card's.

    Returns:
        the :meth:`Counts.summary` keys plus ``*_90ci``, ``ece``, ``reliability``,
        ``pr_curve``, ``seconds`` and per-tile rows (``tiles``; with the masks kept
        in ``_masks`` for error examples).
    """
    import rasterio
    import shapely
    tiles = pvdata.list_tiles("heldout")
    total, per_tile, rows, masks = Counts(), [], [], []
    n_vertices = n_polygons = 0
    hist_pos = np.zeros(_BINS, np.int64)
    hist_neg = np.zeros(_BINS, np.int64)
    t0 = time.perf_counter()
    for t in tiles:
        with rasterio.open(t.mask_path) as src:
            ref = src.read(1) > 0
            transform = src.transform

        def collect(probs, valid, grid, ref=ref):
            p = probs[1][valid]
            r = ref[valid] if probs.shape[1:] == ref.shape else None
            if r is None:
                return
            b = np.minimum((p * _BINS).astype(int), _BINS - 1)
            hist_pos[:] += np.bincount(b[r], minlength=_BINS)
            hist_neg[:] += np.bincount(b[~r], minlength=_BINS)

        params = DetectParams(FileSource(str(t.image_path)), model_id)
        over = None
        if raw:
            params = DetectParams(params.source, model_id, threshold=0.5, min_area_m2=0.0,
                                  simplify_m=0.0)
            over = {"max_hole_m2": 0.0}
        res = run_detect(params, [], predictor=predictor, overrides=over, on_probs=collect)
        pred = rasterize_features(res["features"], ref.shape, transform) > 0
        n_vertices += sum(vertices(shapely.from_wkt(f["wkt"])) for f in res["features"])
        n_polygons += len(res["features"])
        c = compare(pred, ref)
        per_tile.append(c)
        total.add(c)
        masks.append((t, pred, ref))
        rows.append({"tile": t.name, **{k: v for k, v in c.summary().items()
                                        if k in ("pixel_iou", "object_f1", "objects_true",
                                                 "objects_pred", "false_objects",
                                                 "missed_objects")}})
    s = total.summary()
    s["pixel_iou_90ci"] = bootstrap(per_tile, "pixel_iou")
    s["object_f1_90ci"] = bootstrap(per_tile, "object_f1")
    s["ece"], s["reliability"] = ece(hist_pos, hist_neg)
    s["ece"] = round(s["ece"], 4)
    s["pr_curve"] = [(round(a, 2), round(b, 4), round(c, 4))
                     for a, b, c in pr_curve(hist_pos, hist_neg)]
    s["seconds"] = round(time.perf_counter() - t0, 2)
    s["polygons"] = n_polygons
    s["vertices_per_polygon"] = round(n_vertices / max(n_polygons, 1), 1)
    s["tiles"] = rows
    s["_masks"] = masks
    return s


def coarser_copy(image_path: Path, mask_path: Path, gsd_m: float, out_dir: Path
                 ) -> Tuple[Path, np.ndarray, object]:
    """A held-out tile as a coarser orthophoto would show it.

    The image is averaged down to pixels of exactly ``gsd_m`` (GDAL's warper with
    ``average`` resampling: the pixels of ``gdal_translate -tr G G -r average``, and an
    exact block mean where ``gsd_m`` is a whole multiple of the tile's GSD) and written
    as a GeoTIFF; the reference mask is averaged the same way and a coarse pixel is a
    panel when at least half of it was. (A decimated ``DatasetReader.read`` with
    ``out_shape`` is not used: GDAL then resamples with another kernel, whose blur
    made 0.3 m imagery look far harder than it is.)

    Returns:
        ``(image file, bool (h, w) reference mask, affine transform)`` at ``gsd_m``;
        ``h`` and ``w`` are the tile's size in metres over ``gsd_m``, rounded.
    """
    import rasterio

    with rasterio.open(image_path) as src:
        t = src.transform
        with rasterio.open(mask_path) as msrc:
            img, ref = pvdata.average_down(src.read(), msrc.read(1), gsd_m, abs(t.a))
        h, w = ref.shape
        transform = rasterio.Affine(gsd_m, 0.0, t.c, 0.0, -gsd_m, t.f)
        profile = dict(src.profile, width=w, height=h, transform=transform, tiled=False)
    for key in ("blockxsize", "blockysize"):
        profile.pop(key, None)
    out = out_dir / f"{image_path.stem}_{gsd_m:g}m.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(img)
    return out, ref > 0, transform


def eval_heldout_at(model_id: Optional[str], gsd_m: float, predictor=None) -> Dict:
    """Metrics over the held-out tiles made coarser to ``gsd_m`` (:func:`coarser_copy`):
    what users of 0.2-0.3 m orthophotos get. The pipeline resamples each tile to the
    model's GSD as for any raster; the polygons are compared with the coarse mask on
    the coarse grid (objects >= 20 coarse pixels, IoU >= 0.5)."""
    import tempfile
    total, per_tile = Counts(), []
    with tempfile.TemporaryDirectory() as tmp:
        for t in pvdata.list_tiles("heldout"):
            path, ref, transform = coarser_copy(t.image_path, t.mask_path, gsd_m, Path(tmp))
            res = run_detect(DetectParams(FileSource(str(path)), model_id), [], predictor=predictor)
            c = compare(rasterize_features(res["features"], ref.shape, transform) > 0, ref)
            per_tile.append(c)
            total.add(c)
    s = total.summary()
    s["pixel_iou_90ci"] = bootstrap(per_tile, "pixel_iou")
    s["object_f1_90ci"] = bootstrap(per_tile, "object_f1")
    s["gsd_m"] = gsd_m
    return s


def eval_vienna(model_id: Optional[str], predictor=None, extent: Optional[List[float]] = None) -> Dict:
    """False positives on the panel-free Vienna scene (``extent`` EPSG:31256 metres,
    default the whole 500 m x 500 m scene, 0.25 km²)."""
    res = run_detect(DetectParams(FileSource(str(vienna_scene())), model_id,
                                  extent=extent or None), [], predictor=predictor)
    area = res["stats"]["area_km2"]
    fp_m2 = sum(f["area_m2"] for f in res["features"])
    return {"area_km2": area, "false_polygons": len(res["features"]),
            "false_polygons_per_km2": round(len(res["features"]) / area, 1),
            "false_m2_per_km2": round(fp_m2 / area, 1), "seconds": res["stats"]["seconds"],
            "runtime": res["stats"]["runtime"], "extent": extent or "whole scene",
            "areas_m2": sorted(round(f["area_m2"], 1) for f in res["features"]),
            "scores": sorted(round(f["score"], 3) for f in res["features"])}


def variants(card: ModelCard) -> List[Tuple[str, dict]]:
    """``[(name, {tta, shifts})]`` to evaluate for a card."""
    if not card.is_ensemble:
        return [("single", {})]
    out = [("ensemble", {})]
    if len(card.tta) > 1:
        out.append(("no TTA", {"tta": ["identity"]}))
    if card.shifts:
        out.append(("no shifts", {"shifts": False}))
    if len(card.tta) > 1 and card.shifts:
        out.append(("no TTA, no shifts", {"tta": ["identity"], "shifts": False}))
    return out


def write_cards(results: Dict[str, Dict]) -> None:
    """Store held-out metrics in ``card.json`` and render ``MODEL_CARD.md``."""
    from backend.models.markdown import render_markdown
    for mid, r in results.items():
        main = r["variants"][0]
        card = load_card(mid)
        changes = {"heldout_metrics": {k: v for k, v in main["heldout"].items()
                                       if k not in ("tiles", "_masks", "pr_curve",
                                                    "reliability")}}
        if main.get("coarser"):
            changes["heldout_metrics"]["coarser"] = [
                {k: c[k] for k in ("gsd_m", "pixel_iou", "object_f1", "object_f1_90ci")}
                for c in main["coarser"]]
        if "vienna" in main:
            changes["vienna_false_positives"] = main["vienna"]
        write_card(card.updated(changes))
        (card.path / "MODEL_CARD.md").write_text(render_markdown(load_card(mid)), "utf-8")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if np.isfinite(v) else "nan"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def plot_curves(rows: List[Tuple[str, Dict]], out_png: Path) -> None:
    """Pixel precision-recall curves and reliability diagrams of all rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    for name, s in rows:
        pr = np.array(s["pr_curve"])
        if len(pr):
            a.plot(pr[:, 2], pr[:, 1], label=name)
        rel = np.array([(c, f) for c, f, _ in s["reliability"]])
        if len(rel):
            b.plot(rel[:, 0], rel[:, 1], marker="o", label=f"{name} (ECE {s['ece']:.3f})")
    a.set(xlabel="pixel recall", ylabel="pixel precision", xlim=(0, 1), ylim=(0, 1.02),
          title="Precision-recall over thresholds (pv01 held-out)")
    b.plot([0, 1], [0, 1], "k--", lw=0.8)
    b.set(xlabel="predicted probability", ylabel="observed panel frequency",
          title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_errors(name: str, s: Dict, out_png: Path, n: int = 4) -> None:
    """The ``n`` held-out tiles with most object errors: TP green, FP red, FN blue."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    worst = sorted(zip(s["tiles"], s["_masks"]),
                   key=lambda x: -(x[0]["false_objects"] + x[0]["missed_objects"]))[:n]
    fig, axes = plt.subplots(1, len(worst), figsize=(4 * len(worst), 4.4))
    for ax, (row, (tile, pred, ref)) in zip(np.atleast_1d(axes), worst):
        with rasterio.open(tile.image_path) as src:
            img = src.read().transpose(1, 2, 0)
        ax.imshow(img)
        for m, color in ((pred & ref, "lime"), (pred & ~ref, "red"), (~pred & ref, "blue")):
            if m.any():
                ax.contour(m.astype(float), levels=[0.5], colors=color, linewidths=1.0)
        ax.set_title(f"{tile.name}\nFP objects {row['false_objects']}, "
                     f"missed {row['missed_objects']}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{name}: largest errors (green = correct pixels, red = false positive, "
                 f"blue = missed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


#: The row of what a user gets without choosing a model: each layer's GSD chooses it.
AUTO = "automatic (by the layer's GSD)"


def evaluate_auto(gsds: List[float], vienna: bool) -> Dict:
    """The held-out figures at 0.1 m and each of ``gsds``, and Vienna's false polygons,
    of detections that name no model: the engine chooses one by the layer's GSD
    (``protocol.choice``)."""
    entry = {"variant": "auto", "heldout": eval_heldout(None),
             "coarser": [eval_heldout_at(None, g) for g in gsds]}
    if vienna:
        entry["vienna"] = eval_vienna(None)
    return entry


def _ci(s: Dict, key: str) -> str:
    lo, hi = s[f"{key}_90ci"]
    return f"{s[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _folds_note(cv: Dict) -> str:
    """`` (2 of 3 folds)`` when fewer folds than three were scored, else ``""``."""
    n = folds_scored(cv)
    return f" ({n} of 3 folds)" if n < 3 else ""


def summary_table(results: Dict[str, Dict], cards: List[ModelCard]) -> str:
    """The one table of the accuracy docs: per model (each member, each ensemble, the
    automatic choice) the held-out pixel IoU and object F1 with 90 % intervals, the
    same at each coarser GSD, Vienna's false polygons per km² and the
    cross-validation object F1 (mean ± std over folds) at each GSD."""
    cv = {c.id: (c.training.cross_validation if c.training else None) or {} for c in cards}
    head = ["model", "held-out pixel IoU", "held-out object F1"]
    gsds = sorted({c["gsd_m"] for r in results.values() for c in r["variants"][0].get(
        "coarser", [])})
    head += [f"{g:g} m IoU / F1" for g in gsds] + ["Vienna FP/km²",
                                                   "cross-validation F1 0.1 / 0.2 / 0.3 m"]
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for mid, r in results.items():
        main = r["variants"][0]
        s = main["heldout"]
        coarse = {c["gsd_m"]: c for c in main.get("coarser", [])}
        cells = [mid, _ci(s, "pixel_iou"), _ci(s, "object_f1")]
        cells += [f"{coarse[g]['pixel_iou']:.3f} / {coarse[g]['object_f1']:.3f}"
                  if g in coarse else "" for g in gsds]
        cells.append(str(main["vienna"]["false_polygons_per_km2"]) if main.get("vienna")
                     else "")
        folds = cv.get(mid, {})
        cells.append(" / ".join(f"{folds[g]['object_f1']:.3f} ± {folds[g]['object_f1_std']:.3f}"
                                for g in ("0.1", "0.2", "0.3") if g in folds)
                     + _folds_note(folds))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


COLS = ["pixel_iou", "pixel_iou_90ci", "pixel_precision", "pixel_recall", "object_precision",
        "object_recall", "object_f1", "object_f1_90ci", "false_objects", "missed_objects", "ece",
        "vertices_per_polygon"]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="held-out accuracy of the shipped pipeline")
    ap.add_argument("--models", nargs="*", default=None,
                    help="model ids (default: the shipped members, then the shipped "
                         "ensembles; user versions only when named)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "eval")
    ap.add_argument("--no-vienna", action="store_true", help="skip the false-positive scene")
    ap.add_argument("--raw", action="store_true", help="add the bare-model rows")
    ap.add_argument("--gsd", type=float, nargs="*", default=[0.2, 0.3],
                    help="also evaluate the held-out tiles made coarser to these GSDs, "
                         "metres (default 0.2 0.3; none: --gsd)")
    ap.add_argument("--write-cards", action="store_true",
                    help="store the held-out metrics in each card.json and rewrite "
                         "its MODEL_CARD.md")
    ap.add_argument("--no-auto", action="store_true",
                    help="skip the row of the model chosen by each layer's GSD")
    args = ap.parse_args(argv)
    shipped = models_dir()
    cards = [load_card(m) for m in args.models] if args.models else sorted(
        [c for c in list_cards() if c.path is not None and c.path.parent == shipped
         and (c.is_ensemble or c.weights_path.is_file())],   # not the user's versions
        key=lambda c: (c.is_ensemble, c.id))
    results: Dict[str, Dict] = {}
    table_rows: List[Tuple[str, str, Dict, Optional[Dict]]] = []
    for card in cards:
        results[card.id] = {"variants": []}
        for vname, kw in variants(card):
            predictor = variant_predictor(card, **kw)
            t0 = time.perf_counter()
            s = eval_heldout(card.id, predictor=predictor)
            entry = {"variant": vname, "heldout": s}
            if vname in ("single", "ensemble"):
                entry["coarser"] = [eval_heldout_at(card.id, g, predictor=predictor) for g in args.gsd]
                for c in entry["coarser"]:
                    print(f"{card.id} [{vname}] at {c['gsd_m']:g} m: pixel IoU "
                          f"{c['pixel_iou']:.3f}, object F1 {c['object_f1']:.3f}", flush=True)
            if not args.no_vienna:
                entry["vienna"] = eval_vienna(card.id, predictor=predictor)
            print(f"{card.id} [{vname}]: pixel IoU {s['pixel_iou']:.3f}, object F1 "
                  f"{s['object_f1']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            results[card.id]["variants"].append(entry)
            table_rows.append((card.id, vname, s, entry.get("vienna")))
        if args.raw and not card.is_ensemble:
            s = eval_heldout(card.id, raw=True)
            results[card.id]["variants"].append({"variant": "raw", "heldout": s})
            table_rows.append((card.id, "raw (no post-processing)", s, None))
    if not args.no_auto and not args.models:
        results[AUTO] = {"variants": [evaluate_auto(args.gsd, not args.no_vienna)]}
    if args.write_cards:
        write_cards({k: v for k, v in results.items() if k != AUTO})
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| model | variant | " + " | ".join(COLS) + " | Vienna FP polygons/km² |",
             "|---" * (len(COLS) + 3) + "|"]
    for mid, vname, s, vi in table_rows:
        lines.append(f"| {mid} | {vname} | " + " | ".join(_fmt(s[c]) for c in COLS)
                     + f" | {vi['false_polygons_per_km2'] if vi else ''} |")
    coarse = [(mid, v["variant"], c) for mid, r in results.items() for v in r["variants"]
              for c in v.get("coarser", [])]
    if coarse:
        lines += ["", "Held-out tiles made coarser (GDAL average), compared on the coarse grid:",
                  "", "| model | GSD | pixel IoU | object F1 | object F1 90 % CI |",
                  "|---|---|---|---|---|"]
        lines += [f"| {mid} [{v}] | {c['gsd_m']:g} m | {_fmt(c['pixel_iou'])} | "
                  f"{_fmt(c['object_f1'])} | {_fmt(c['object_f1_90ci'])} |"
                  for mid, v, c in coarse]
    cv_rows = [(c.id, g, v) for c in cards if c.training and c.training.cross_validation
               for g, v in c.training.cross_validation.items()]
    if cv_rows:
        lines += ["", "Leave-cluster-out cross-validation inside the train split (3 folds, "
                  "mean ± std over folds; `python -m tools.cv`), where the post-processing "
                  "was chosen:", "", "| model | GSD | pixel IoU | object F1 |",
                  "|---|---|---|---|"]
        lines += [f"| {mid} | {g} m | {v['pixel_iou']:.3f} ± {v['pixel_iou_std']:.3f} | "
                  f"{v['object_f1']:.3f} ± {v['object_f1_std']:.3f} |"
                  for mid, g, v in cv_rows]
    table = summary_table(results, cards) + "\n\nEvery variant in detail:\n\n" + \
        "\n".join(lines)
    plot_curves([(f"{m} [{v}]", s) for m, v, s, _ in table_rows],
                args.out / "pr_calibration.png")
    best = max(table_rows, key=lambda r: (r[2]["object_f1"], r[2]["pixel_iou"]))
    plot_errors(f"{best[0]} [{best[1]}]", best[2], args.out / "errors.png")
    for r in results.values():
        for v in r["variants"]:
            v["heldout"].pop("_masks", None)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (args.out / "report.md").write_text(
        "# Held-out evaluation (pv01 held-out split: 12 tiles, 31 panel objects)\n\n"
        "Objects: 8-connected components >= 20 px matched at IoU >= 0.5; intervals: 90 % "
        "bootstrap over tiles; ECE: 10-bin expected calibration error of the fused "
        "probabilities; Vienna: false polygons per km² on the whole panel-free 0.25 km² "
        "scene of the 2023 orthophoto.\n\n" + table +
        "\n\n![precision-recall and calibration](pr_calibration.png)\n\n"
        f"![largest errors of {best[0]} [{best[1]}]](errors.png)\n", "utf-8")
    print(table)
    print(f"\nwrote {args.out}/metrics.json, report.md, pr_calibration.png, errors.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
