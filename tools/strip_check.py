"""What the held-out strip of a retrain measures, on real data.

Usage (the engine's environment, from the repository root)::

    python -m tools.strip_check [--tiles first3|last3|block] [--steps 150]
                                [--out out/strip-check]

The retrain keeps a strip of each corrected area apart to judge the candidate. A first
try of the correct-and-retrain loop saw that strip say "worse" while the rest of the
user's site got better. This tool measures, for one candidate, the same held-out strips
judged three ways, next to the rest of the site:

- ``alone``: the strip read by itself, padded by reflection beyond its border (how the
  gate judged it before it read context);
- ``context``: read with a quarter of a model tile around it, only the strip scored
  (how the gate judges it now), against the simulated user's labels;
- ``reference``: the same, against the reference masks of pv01 instead of the user's
  labels (a detection the user keeps is kept with the model's own outline).

Set-up as experiment 0 of ``tools.retrain_eval``: the model trained without pv01's
solar-roof site (:func:`tools.retrain_eval.site_model`); the simulated user corrects
``first3`` / ``last3`` (three tiles of the site's corrected block, by name) or
``block`` (all 11); one candidate is fine-tuned on the corrections (``steps`` steps,
seed 0, in memory, never registered) and measured on the rest of the site (18 tiles).
User model folder: a temporary one. Writes ``<out>/<tiles>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from backend.config import REPO


def check(tiles: str = "first3", steps: int = 150, progress=print) -> Dict[str, Any]:
    """Run the check (see the module docstring); returns its measurements.

    Raises:
        ValueError: an unknown ``tiles``.
        FileNotFoundError: the pv01 data is missing.
    """
    from tools import retrain_eval as R
    card0 = R.site_model(progress=progress)
    user, rest = R.site_split()
    chosen = {"first3": user[:3], "last3": user[-3:], "block": user}.get(tiles)
    if chosen is None:
        raise ValueError(f"tiles must be first3, last3 or block, not {tiles!r}")
    with R._env(ORTHOLENS_MODELS=str(card0.path.parent)):
        return _check(card0.id, chosen, rest, steps, progress)


def _check(mid: str, chosen, rest, steps: int, progress) -> Dict[str, Any]:
    from backend.inference.predictors import TorchPredictor
    from backend.learning import corrections as C
    from backend.learning.acceptance import (decide, eval_areas, held_out_change, judge,
                                             object_units)
    from backend.learning.evaluation import predict_area
    from backend.learning.finetune import RetrainConfig, finetune
    from backend.models.catalog import load_card
    from protocol.params import RetrainParams
    from tools import retrain_eval as R
    card = load_card(mid)
    progress(f"the user corrects {len(chosen)} tiles with {mid}")
    feats, reviewed, counts, crs = R.correct_tiles(mid, chosen)
    reference = [{"wkt": p.wkt, "class": card.classes[0].name, "area": i}
                 for i, t in enumerate(chosen) for p in R.reference_polygons(t)]

    def corrections(features: List[Dict[str, Any]], context: float):
        saved = C.CONTEXT_TILE_FRACTION
        C.CONTEXT_TILE_FRACTION = context
        try:
            p = RetrainParams(reviewed[0]["source"], mid, features, crs=crs,
                              reviewed=reviewed, budget_s=86400, steps=steps)
            return C.build_corrections(p, [], card)
        finally:
            C.CONTEXT_TILE_FRACTION = saved

    ways = {"alone": corrections(feats, 0.0),
            "context": corrections(feats, C.CONTEXT_TILE_FRACTION),
            "reference": corrections(reference, C.CONTEXT_TILE_FRACTION)}
    progress(f"fine-tuning one candidate: {steps} steps")
    model, info = finetune(card, ways["context"].train,
                           RetrainConfig(budget_s=86400, steps=steps))
    predictor = TorchPredictor(card, "cpu", model=model)
    out: Dict[str, Any] = {"model": mid, "tiles": [t.name for t in chosen],
                           "user_edits": counts, "steps": info["steps"],
                           "rest_tiles": len(rest),
                           "rest_before": R.score_tiles(mid, rest)["metrics"],
                           "rest_after": R.score_tiles(mid, rest, predictor=predictor)["metrics"]}
    keys = ("object_f1", "object_errors", "objects_true", "pixel_iou", "pixel_precision",
            "pixel_recall")
    for name, corr in ways.items():
        pb = [a.pred for a in corr.holdout]
        pa = [predict_area(predictor, a, card) for a in corr.holdout]
        b, a = eval_areas(corr.holdout, card, pb), eval_areas(corr.holdout, card, pa)
        ch = held_out_change(object_units(corr.holdout, card, pb, pa))
        old = decide({"user_holdout": b}, {"user_holdout": a}, 0.02)
        new = judge({"user_holdout": b}, {"user_holdout": a}, ch, 0.02, "area")
        out[name] = {"before": {k: b[k] for k in keys}, "after": {k: a[k] for k in keys},
                     "change": ch, "old_rule": {"accepted": old[0], "reason": old[1]},
                     "area_rule": {"verdict": new.verdict, "reason": new.reason}}
    return out


def table(res: Dict[str, Any]) -> str:
    """The measurements as a Markdown table."""
    def f(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    rb, ra = res["rest_before"], res["rest_after"]
    lines = [f"{res['model']}, {len(res['tiles'])} tiles corrected "
             f"({', '.join(res['tiles'])}), {res['steps']} steps; rest of the site "
             f"({res['rest_tiles']} tiles): object F1 {f(rb['object_f1'])} -> "
             f"{f(ra['object_f1'])}, pixel IoU {f(rb['pixel_iou'])} -> {f(ra['pixel_iou'])}",
             "", "| strip judged | objects | object errors | object F1 | F1 change, 90% "
                 "interval | pixel IoU | pixel precision | area rule |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("alone", "context", "reference"):
        v = res[name]
        b, a, ch = v["before"], v["after"], v["change"]
        lo, hi = ch["f1_interval"]
        interval = "-" if lo is None else f"{ch['f1_change']:+.3f} ({lo:+.3f} to {hi:+.3f})"
        lines.append(f"| {name} | {ch['objects']} | {b['object_errors']} -> "
                     f"{a['object_errors']} | {f(b['object_f1'])} -> {f(a['object_f1'])} | "
                     f"{interval} | {f(b['pixel_iou'])} -> {f(a['pixel_iou'])} | "
                     f"{f(b['pixel_precision'])} -> {f(a['pixel_precision'])} | "
                     f"{v['area_rule']['verdict']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="what the held-out strip of a retrain "
                                             "measures, on real data")
    ap.add_argument("--tiles", default="first3", choices=("first3", "last3", "block"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "strip-check")
    args = ap.parse_args(argv)
    from tools.retrain_eval import _env
    with tempfile.TemporaryDirectory(prefix="ortholens-strip-check-") as tmp, \
            _env(ORTHOLENS_USER_MODELS=tmp):
        res = check(args.tiles, args.steps)
    print("\n" + table(res))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tiles}.json").write_text(json.dumps(res, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
