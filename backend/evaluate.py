"""Accuracy of the shipped pipeline on real held-out data.

Usage::

    python -m backend.evaluate [--models pv-unet-r18 ...] [--out out/eval] [--no-vienna]

For each model, every pv01 *held-out* tile (12 tiles, sites never seen in training;
Jiang et al. 2021, CC BY 4.0) goes through the same code as a ``detect`` request
(:func:`backend.detect.run_detect`: tiling, stitching, threshold, cleaning,
polygonization, simplification); the returned polygons are rasterized back onto the
tile's grid (``rasterio.features.rasterize``) and compared with the reference mask:

- pixel IoU / precision / recall / F1 (photovoltaic class);
- object precision / recall / F1: objects are 8-connected components >= 20 px, matched
  at IoU >= 0.5 (``backend.metrics``);
- a 90 % bootstrap interval over tiles (1000 resamples, seed 0) for pixel IoU and
  object F1, since 12 tiles / ~30 objects make single numbers noisy;
- ``raw`` rows: the bare model (threshold 0.5, no cleaning), to show what
  post-processing adds.

The Vienna 2023 orthophoto (Stadt Wien, CC BY 4.0; no panels) gives false positives:
polygons and m² per km² over the whole scene, resampled to the model's 0.1 m GSD.

Writes ``<out>/metrics.json`` and ``<out>/report.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from . import data as pvdata
from .config import REPO, data_dir
from .detect import run_detect
from .metrics import Counts, compare
from .registry import list_cards, load_card


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


def eval_heldout(model_id: str, raw: bool = False) -> Dict:
    """Metrics of one model over the pv01 held-out tiles.

    Args:
        model_id: model card id.
        raw: bare model (threshold 0.5, no min area, no hole filling, no simplify).
    """
    import rasterio
    tiles = pvdata.list_tiles("heldout")
    total, per_tile, rows = Counts(), [], []
    t0 = time.perf_counter()
    for t in tiles:
        req = {"type": "detect", "model": model_id,
               "source": {"kind": "file", "path": str(t.image_path)}}
        over = None
        if raw:
            req.update({"threshold": 0.5, "min_area_m2": 0.0, "simplify_m": 0.0})
            over = {"max_hole_m2": 0.0}
        res = run_detect(req, [], overrides=over)
        with rasterio.open(t.mask_path) as src:
            ref = src.read(1) > 0
            pred = rasterize_features(res["features"], ref.shape, src.transform) > 0
        c = compare(pred, ref)
        per_tile.append(c)
        total.add(c)
        rows.append({"tile": t.name, **{k: v for k, v in c.summary().items()
                                        if k in ("pixel_iou", "object_f1", "objects_true",
                                                 "objects_pred")}})
    s = total.summary()
    s["pixel_iou_90ci"] = bootstrap(per_tile, "pixel_iou")
    s["object_f1_90ci"] = bootstrap(per_tile, "object_f1")
    s["seconds"] = round(time.perf_counter() - t0, 2)
    s["tiles"] = rows
    return s


def eval_vienna(model_id: str) -> Dict:
    """False positives on the panel-free Vienna scene (whole raster)."""
    path = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
    res = run_detect({"type": "detect", "model": model_id,
                      "source": {"kind": "file", "path": str(path)}}, [])
    area = res["stats"]["area_km2"]
    fp_m2 = sum(f["area_m2"] for f in res["features"])
    return {"area_km2": area, "false_polygons": len(res["features"]),
            "false_polygons_per_km2": round(len(res["features"]) / area, 1),
            "false_m2_per_km2": round(fp_m2 / area, 1), "seconds": res["stats"]["seconds"],
            "engine": res["stats"]["engine"]}


def write_cards(results: Dict[str, Dict]) -> None:
    """Store held-out metrics in ``card.json`` and render ``MODEL_CARD.md``."""
    from .modelcard import render_markdown
    for mid, r in results.items():
        card = load_card(mid)
        d = dict(card.raw)
        d["heldout_metrics"] = {k: v for k, v in r["pipeline"].items() if k != "tiles"}
        if "vienna" in r:
            d["vienna_false_positives"] = r["vienna"]
        path = card.path / "card.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(d, indent=2) + "\n", "utf-8")
        tmp.replace(path)
        (card.path / "MODEL_CARD.md").write_text(render_markdown(load_card(mid)), "utf-8")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else str(v)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description="held-out accuracy of the shipped pipeline")
    ap.add_argument("--models", nargs="*", default=None, help="model ids (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "eval")
    ap.add_argument("--no-vienna", action="store_true", help="skip the false-positive scene")
    ap.add_argument("--no-raw", action="store_true", help="skip the bare-model rows")
    ap.add_argument("--write-cards", action="store_true",
                    help="store the held-out metrics in each card.json and rewrite "
                         "its MODEL_CARD.md")
    args = ap.parse_args(argv)
    ids = args.models or [c.id for c in list_cards() if c.weights_path.is_file()]
    results: Dict[str, Dict] = {}
    for mid in ids:
        load_card(mid)
        results[mid] = {"pipeline": eval_heldout(mid)}
        if not args.no_raw:
            results[mid]["raw"] = eval_heldout(mid, raw=True)
        if not args.no_vienna:
            results[mid]["vienna"] = eval_vienna(mid)
    if args.write_cards:
        write_cards(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    cols = ["pixel_iou", "pixel_iou_90ci", "pixel_precision", "pixel_recall", "object_precision",
            "object_recall", "object_f1", "object_f1_90ci", "objects_true", "objects_pred",
            "false_objects"]
    lines = ["| model | variant | " + " | ".join(cols) + " | Vienna FP polygons/km² |",
             "|---" * (len(cols) + 3) + "|"]
    for mid, r in results.items():
        for variant in ("pipeline", "raw"):
            if variant not in r:
                continue
            s = r[variant]
            fp = r.get("vienna", {}).get("false_polygons_per_km2", "") if variant == "pipeline" else ""
            lines.append(f"| {mid} | {variant} | " + " | ".join(_fmt(s[c]) for c in cols)
                         + f" | {fp} |")
    table = "\n".join(lines)
    (args.out / "report.md").write_text(
        "# Held-out evaluation (pv01 held-out split, 12 tiles)\n\n" + table + "\n", "utf-8")
    print(table)
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
