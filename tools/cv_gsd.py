"""Post-processing for coarser imagery, chosen and checked out of fold.

Usage::

    python -m tools.cv models/configs/pv-unet-efl0.json --train --keep out/cv/pv-unet-efl0-oof.npz
    python -m tools.cv_gsd models/configs/pv-unet-efl0.json out/cv/pv-unet-efl0-oof.npz \
        [--write-config] [--card models/pv-unet-efl0]

A 0.3 m orthophoto read at the model's 0.1 m gives softer probabilities than 0.1 m
imagery, so the threshold, minimum area and object filters chosen at 0.1 m need not be
the best for it. For each coarser imagery GSD of :data:`tools.cv.FACTORS` this tool
chooses a post-processing on that imagery's out-of-fold predictions (the grid of
:func:`backend.learning.train.choose_postprocess`, then :func:`tools.cv.choose_filters`,
all scored on the coarse grid as ``tools.cv`` scores) and checks the choice by
**nested** cross-validation: for each fold, the post-processing is chosen on the other
folds' predictions only and scored on that fold. A GSD gets its own entry when the
nested fold-mean object F1 beats the model's own post-processing on the same
predictions by more than :data:`MIN_GAIN` and the nested fold-mean pixel IoU loses at
most :data:`IOU_TOL`; the entry stored is then the one chosen on every fold.

The entry serves layers from the geometric mean of its GSD and the next finer scored
one (0.2 m imagery: from 0.15 m; 0.3 m: from 0.25 m, rounded to 0.05 m) up, until the
next entry (``ModelCard.postprocess_by_gsd``). Held-out tiles are never read here.

Output: ``<out>/<id>-gsd.json`` and ``<out>/<id>-gsd.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from backend.config import REPO
from backend.learning import data as pvdata
from backend.learning.train import best_on_grid
from backend.models.gsd_postprocess import FIELDS as KEYS
from protocol.metrics import Counts
from tools.cv import (boundary_gsd, choose_filters, cv_figures, load_oof, score, spread,
                      write_report)

#: Object F1 a GSD's own post-processing must gain out of fold (nested) to be kept: one
#: object in a hundred, more than the grid search's own noise on ~20 tiles a fold.
MIN_GAIN = 0.01
#: Pixel IoU it may lose out of fold (nested), the tolerance of ``tools.cv``'s filters.
IOU_TOL = 0.005


def counts(items: Sequence, pp: Dict[str, Any], gsd_m: float) -> Counts:
    """Pooled counts of ``[(fold, probs, ref)]`` under ``pp`` (class 1 of 2)."""
    tot = Counts()
    for _, p, ref in items:
        tot.add(score(p, ref, pp, gsd_m, 2))
    return tot


def choose_on(items: Sequence, gsd_m: float) -> Dict[str, float]:
    """The post-processing with the best pooled object F1 (then pixel IoU) on
    ``items`` (threshold, minimum area, holes over the grid of
    :func:`backend.learning.train.best_on_grid`), then the strictest object
    filters that cost nothing (:func:`tools.cv.choose_filters`)."""
    pp, _ = best_on_grid(lambda pp: counts(items, pp, gsd_m).summary(),
                         key=lambda s: (round(s["object_f1"], 4), s["pixel_iou"]))
    pp.update(choose_filters(items, pp, gsd_m, 2))
    return pp


def per_fold(items: Sequence, pps: Dict[int, Dict[str, Any]], gsd_m: float
             ) -> Dict[str, Dict[str, Any]]:
    """Per-fold pixel IoU and object F1 (:func:`tools.cv.spread`) of ``items`` where
    fold ``k`` is post-processed with ``pps[k]``."""
    folds = sorted(pps)
    sums = [counts([x for x in items if x[0] == k], pps[k], gsd_m).summary() for k in folds]
    return {"pixel_iou": spread([s["pixel_iou"] for s in sums]),
            "object_f1": spread([s["object_f1"] for s in sums])}


def serves_from(factor: int, factors: Sequence[int]) -> float:
    """The finest layer GSD, metres, an entry for imagery ``factor`` x 0.1 m serves: the
    geometric mean of its GSD and the next finer scored one, rounded to 0.05 m."""
    finer = max(f for f in factors if f < factor)
    return boundary_gsd(finer * pvdata.NATIVE_GSD_M, factor * pvdata.NATIVE_GSD_M)


def choose_by_gsd(config: Dict[str, Any], oof: Dict[int, List]) -> Dict[str, Any]:
    """Nested out-of-fold check of a post-processing per coarser imagery GSD (module
    docstring).

    Args:
        config: a config completed by ``tools.cv --write-config`` (its post-processing
            is the one compared against).
        oof: :func:`tools.cv.load_oof`'s predictions, run at the config's GSD.

    Returns:
        ``{"id", "gsd": {"0.2": {"shared", "nested", "chosen", "kept", ...}},
        "postprocess_by_gsd": [entry, ...]}``, entries sorted by ``from_gsd_m``.
    """
    gsd_m = float(config["gsd_m"])
    shared = {k: config[k] for k in KEYS if k in config}
    factors = sorted(oof)
    folds = sorted({k for items in oof.values() for k, _, _ in items})
    out: Dict[str, Any] = {"id": config["id"], "min_gain": MIN_GAIN, "iou_tol": IOU_TOL,
                           "shared_postprocess": shared, "gsd": {}, "postprocess_by_gsd": []}
    for f in factors[1:]:
        items = oof[f]
        nested = {k: choose_on([x for x in items if x[0] != k], gsd_m) for k in folds}
        a = per_fold(items, {k: shared for k in folds}, gsd_m)
        b = per_fold(items, nested, gsd_m)
        gain = b["object_f1"]["mean"] - a["object_f1"]["mean"]
        iou_loss = a["pixel_iou"]["mean"] - b["pixel_iou"]["mean"]
        kept = gain > MIN_GAIN and iou_loss <= IOU_TOL
        chosen = choose_on(items, gsd_m)
        g = f"{pvdata.NATIVE_GSD_M * f:.1f}"
        out["gsd"][g] = {"shared": a, "nested": b, "nested_choices": nested,
                         "gain_object_f1": round(gain, 4), "kept": kept, "chosen": chosen}
        print(f"{g} m: shared F1 {a['object_f1']['mean']:.3f}, nested own "
              f"{b['object_f1']['mean']:.3f} (gain {gain:+.3f}, IoU {-iou_loss:+.3f}): "
              f"{'kept' if kept else 'not kept'}", flush=True)
        if kept:
            out["postprocess_by_gsd"].append(
                dict(from_gsd_m=serves_from(f, factors), **chosen,
                     cross_validation=dict(cv_figures({g: b}, len(folds))[g], nested=True)))
    return out


def markdown(r: Dict[str, Any]) -> str:
    """A Markdown table of :func:`choose_by_gsd`'s result."""
    lines = [f"# Post-processing per imagery GSD: {r['id']}", "",
             "Out-of-fold object F1 / pixel IoU (fold mean ± std); *own, nested*: each "
             "fold post-processed as chosen on the other folds only.", "",
             "| imagery | model's post-processing | own, nested | gain | kept | chosen on "
             "every fold |", "|---|---|---|---|---|---|"]
    for g, v in r["gsd"].items():
        a, b, c = v["shared"], v["nested"], v["chosen"]
        lines.append(
            f"| {g} m | {a['object_f1']['mean']:.3f} ± {a['object_f1']['std']:.3f} / "
            f"{a['pixel_iou']['mean']:.3f} | {b['object_f1']['mean']:.3f} ± "
            f"{b['object_f1']['std']:.3f} / {b['pixel_iou']['mean']:.3f} | "
            f"{v['gain_object_f1']:+.3f} | {'yes' if v['kept'] else 'no'} | threshold "
            f"{c['threshold']}, min area {c['min_area_m2']} m², holes {c['max_hole_m2']} "
            f"m², solidity {c['min_solidity']}, score {c['min_score']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("oof", type=Path, help="tools.cv --keep's .npz")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "cv")
    ap.add_argument("--write-config", action="store_true",
                    help="store postprocess_by_gsd in the config (and --card's card)")
    ap.add_argument("--card", type=Path, default=None,
                    help="with --write-config: a trained model folder to give it too")
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8"))
    r = choose_by_gsd(config, load_oof(args.oof))
    write_report(args.out, f"{config['id']}-gsd", r, markdown(r))
    if args.write_config:
        config["postprocess_by_gsd"] = r["postprocess_by_gsd"]
        args.config.write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        if args.card:
            card = json.loads((args.card / "card.json").read_text("utf-8"))
            card["postprocess_by_gsd"] = r["postprocess_by_gsd"]
            (args.card / "card.json").write_text(json.dumps(card, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
