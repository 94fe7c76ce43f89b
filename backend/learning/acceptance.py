"""Whether a retrained candidate becomes a new version: the evaluation and the rule.

:func:`evaluate` runs the current model and the candidate through the ``detect``
pipeline (tiling, blending, threshold, cleaning) on

- ``user_holdout``: the held-out part of the user's corrections (never trained on);
- ``guard``: the model's pv01 validation tiles (:class:`backend.learning.data.GuardSet`),
  where forgetting would show;
- ``user_train``: the corrected areas trained on, only when the held-out corrections
  show no change in object errors (part (3) of the rule);

and :func:`decide` applies :data:`ACCEPTANCE_RULE` to the two sets of numbers. The
pv01 held-out split is never used here: accepting a version is a decision, and
decisions are never taken on held-out data.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.inference.detect import Options, detections_from_probs, predict_grid
from backend.inference.engines import Engine
from backend.learning.corrections import AreaData, Corrections
from backend.learning.data import GuardSet, Tile
from backend.models.card import ModelCard
from protocol.errors import JobCancelled
from protocol.metrics import Counts, compare

Progress = Callable[[float, str], None]
Cancelled = Optional[Callable[[], bool]]

#: The acceptance rule, stated in every retrained card (``acceptance_rule``).
ACCEPTANCE_RULE = (
    "A retrained candidate becomes a new version only if it does not regress and has "
    "learned from the corrections. Objects are 8-connected components of >= 20 px "
    "matched at IoU 0.5; object errors = false + missed objects. (1) On the held-out "
    "part of the user's corrections (reviewed areas never trained on): object errors do "
    "not increase, object F1 does not decrease and pixel IoU drops by at most "
    "{max_iou_drop:g} (each when defined); (2) on the guard, the pv01 validation tiles "
    "the model never trained on (tiles among the corrected rasters left out): pixel IoU "
    "drops by at most {max_iou_drop:g}; "
    "(3) it learned from the corrections: object errors decrease on the held-out "
    "corrections or, when they stay equal there, object errors (or, when those stay "
    "equal too, wrongly classified pixels) decrease on the corrected areas it was "
    "trained on.")


# ----------------------------------------------------------------------------- engines

class ArrayReader:
    """``WindowReader``'s interface over an image already in memory (a reviewed area)."""

    def __init__(self, image: np.ndarray, valid: np.ndarray):
        self.image, self.valid = image, valid

    def read(self, row: int, col: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(image (B, size, size), valid bool (size, size))`` of the tile at
        ``(row, col)``, padded by reflection (valid False) beyond the image."""
        h, w = self.valid.shape
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, h), min(col + size, w)
        img = self.image[:, r0:r1, c0:c1]
        valid = self.valid[r0:r1, c0:c1]
        pads = ((r0 - row, row + size - r1), (c0 - col, col + size - c1))
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(r1 - r0, c1 - c0) > max(max(pads)) else "edge"
            img = np.pad(img, ((0, 0),) + pads, mode=mode)
            valid = np.pad(valid, pads, constant_values=False)
        return img, valid

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- metrics

def _summary(counts: Counts, area_m2: float, wrong_px: int) -> Dict[str, Any]:
    s = counts.summary()
    out = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else
               (None if isinstance(v, float) else v))
           for k, v in s.items() if k != "mean_matched_iou"}
    out["object_errors"] = int(counts.fp_obj + counts.fn_obj)
    out["wrong_px"] = int(wrong_px)
    out["area_km2"] = round(area_m2 / 1e6, 6)
    out["false_polygons_per_km2"] = (round(counts.fp_obj / (area_m2 / 1e6), 1)
                                     if area_m2 > 0 else None)
    return out


def predict_area(engine: Engine, area: AreaData, card: ModelCard,
                 cancelled: Cancelled = None) -> np.ndarray:
    """Cleaned class map (uint8 (H, W)) of ``engine`` on an area in memory (the
    ``detect`` pipeline: tiling, blending, threshold, cleaning with the card's
    post-processing).

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    opts = Options.resolve(card)
    probs, valid, _ = predict_grid(ArrayReader(area.image, area.valid), area.grid, engine,
                                   opts.batch_size, None, cancelled)
    cmap, _ = detections_from_probs(probs, valid & area.valid, area.grid, card, opts)
    return cmap


def eval_areas(areas: Sequence[AreaData], card: ModelCard,
               preds: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Object/pixel metrics of class maps against the corrected maps of ``areas``
    (objects compared per class, counts pooled over classes and areas).

    Returns:
        The :meth:`Counts.summary` keys (NaN as None) plus ``object_errors``,
        ``wrong_px``, ``area_km2`` and ``false_polygons_per_km2``.
    """
    tot = Counts()
    wrong = 0
    area_m2 = 0.0
    for a, pred in zip(areas, preds):
        for k in range(1, len(card.classes) + 1):
            tot.add(compare((pred == k) & a.valid, (a.target == k) & a.valid))
        wrong += int(((pred != a.target) & a.valid).sum())
        area_m2 += a.area_m2
    return _summary(tot, area_m2, wrong)


def eval_tiles(engine: Engine, card: ModelCard, tiles: Sequence[Tile],
               cancelled: Cancelled = None) -> Dict[str, Any]:
    """Metrics of the ``detect`` pipeline over pv01 tiles (photovoltaic class), as
    :func:`eval_areas` plus ``tiles``.

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    from backend.inference.raster import WindowReader, open_source, plan_grid
    tot = Counts()
    wrong, area_m2 = 0, 0.0
    opts = Options.resolve(card)
    for t in tiles:
        if cancelled and cancelled():
            raise JobCancelled()
        with open_source({"kind": "file", "path": str(t.image_path)}) as ds:
            grid = plan_grid(ds, None, None, card.gsd_m, card.bands)
            reader = WindowReader(ds, grid)
            try:
                probs, valid, _ = predict_grid(reader, grid, engine, opts.batch_size)
            finally:
                reader.close()
        cmap, _ = detections_from_probs(probs, valid, grid, card, opts)
        _, mask = t.read()
        if mask.shape != cmap.shape:  # the grid of a tile is the tile itself at 0.1 m
            h, w = min(mask.shape[0], cmap.shape[0]), min(mask.shape[1], cmap.shape[1])
            mask, cmap = mask[:h, :w], cmap[:h, :w]
        tot.add(compare(cmap == 1, mask == 1))
        wrong += int(((cmap == 1) != (mask == 1)).sum())
        area_m2 += cmap.size * card.gsd_m ** 2
    s = _summary(tot, area_m2, wrong)
    s["tiles"] = len(tiles)
    return s


#: The current model's guard numbers per (model, weights, tiles): they do not change.
_GUARD_CACHE: Dict[Tuple, Dict[str, Any]] = {}


def _guard_before(engine: Engine, card: ModelCard, tiles: List[Tile],
                  cancelled: Cancelled) -> Dict[str, Any]:
    key = (card.id, card.version, str(card.weights_path),
           card.weights_path.stat().st_mtime, tuple(str(t.image_path) for t in tiles))
    if key not in _GUARD_CACHE:
        _GUARD_CACHE[key] = eval_tiles(engine, card, tiles, cancelled)
    return dict(_GUARD_CACHE[key])


def evaluate(card: ModelCard, current: Engine, candidate: Engine, corr: Corrections,
             guard: Optional[GuardSet], progress: Progress,
             cancelled: Cancelled = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The numbers :func:`decide` compares, for the current model and the candidate.

    Args:
        card: the current model's card (the candidate shares its post-processing).
        current, candidate: their engines.
        corr: the corrections (``holdout`` and ``train`` areas, with the current
            model's class maps in ``pred``).
        guard: the guard tiles, or None / empty to skip the guard.
        progress: receives (fraction 0..1 of this evaluation, message naming what is
            evaluated).
        cancelled: polled between tiles and batches.

    Returns:
        ``(before, after)``, each ``{"user_holdout": {...}, "guard"?: {...},
        "user_train"?: {...}}`` (see :func:`eval_areas`, :func:`eval_tiles`).

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    progress(0.0, "the held-out corrections")
    before = {"user_holdout": eval_areas(corr.holdout, card, [a.pred for a in corr.holdout])}
    after = {"user_holdout": eval_areas(corr.holdout, card,
                                        [predict_area(candidate, a, card, cancelled)
                                         for a in corr.holdout])}
    if guard:
        progress(0.35, f"{len(guard)} pv01 validation tiles (guard)")
        before["guard"] = _guard_before(current, card, guard.tiles, cancelled)
        after["guard"] = eval_tiles(candidate, card, guard.tiles, cancelled)
    ub, ua = before["user_holdout"], after["user_holdout"]
    if (ua["object_errors"] == ub["object_errors"] and corr.train
            and not (cancelled and cancelled())):
        progress(0.6, "the corrected areas trained on")
        before["user_train"] = eval_areas(corr.train, card, [a.pred for a in corr.train])
        after["user_train"] = eval_areas(corr.train, card,
                                         [predict_area(candidate, a, card, cancelled)
                                          for a in corr.train])
    return before, after


# ----------------------------------------------------------------------------- the rule

def decide(before: Dict[str, Any], after: Dict[str, Any], max_iou_drop: float
           ) -> Tuple[bool, str]:
    """Apply :data:`ACCEPTANCE_RULE`; returns ``(accepted, reason)``.

    Args:
        before, after: the current model's and the candidate's numbers (as
            :func:`evaluate` returns them): ``user_holdout`` (required), ``guard`` (the
            pv01 validation tiles, optional) and ``user_train`` (the trained-on
            corrected areas, optional: only consulted when the held-out corrections
            show no change in object errors).
        max_iou_drop: the largest pixel IoU drop allowed (held-out corrections, guard).
    """
    def drop(b, a, key):
        if b is None or a is None or b.get(key) is None or a.get(key) is None:
            return None
        return b[key] - a[key]

    ub, ua = before["user_holdout"], after["user_holdout"]
    eb, ea = ub["object_errors"], ua["object_errors"]
    reasons = []
    if ea > eb:
        reasons.append(f"more object errors on the held-out corrections ({eb} -> {ea})")
    fb, fa = ub.get("object_f1"), ua.get("object_f1")
    if fb is not None and fa is not None and fa < fb - 1e-9:
        reasons.append(f"object F1 on the held-out corrections fell {fb:.3f} -> {fa:.3f}")
    d = drop(ub, ua, "pixel_iou")
    if d is not None and d > max_iou_drop + 1e-9:
        reasons.append(f"pixel IoU on the held-out corrections fell {ub['pixel_iou']:.3f} "
                       f"-> {ua['pixel_iou']:.3f} (more than {max_iou_drop:g})")
    hb, ha = before.get("guard"), after.get("guard")
    d = drop(hb, ha, "pixel_iou")
    if d is not None and d > max_iou_drop + 1e-9:
        reasons.append(f"pixel IoU on the guard (pv01 validation tiles) fell {hb['pixel_iou']:.3f} "
                       f"-> {ha['pixel_iou']:.3f} (more than {max_iou_drop:g})")
    tb, ta = before.get("user_train"), after.get("user_train")
    better = None
    if ea < eb:
        better = f"object errors on the held-out corrections {eb} -> {ea}"
    elif ea == eb and tb and ta and ta["object_errors"] < tb["object_errors"]:
        better = (f"object errors on the held-out corrections unchanged ({ea}), on the "
                  f"corrected areas trained on {tb['object_errors']} -> "
                  f"{ta['object_errors']}")
    elif (ea == eb and tb and ta and ta["object_errors"] == tb["object_errors"]
          and ta["wrong_px"] < tb["wrong_px"]):
        better = (f"object errors unchanged on the held-out corrections ({ea}) and on the "
                  f"corrected areas trained on ({ta['object_errors']}); wrong pixels there "
                  f"{tb['wrong_px']} -> {ta['wrong_px']}")
    elif ea == eb:  # more errors there are already the first reason: not twice
        seen = (f", on the corrected areas trained on {tb['object_errors']} -> "
                f"{ta['object_errors']}, wrong pixels {tb['wrong_px']} -> "
                f"{ta['wrong_px']}" if tb and ta else "")
        reasons.append(f"no fewer object errors (held-out corrections {eb} -> {ea}{seen})")
    if reasons:
        return False, "; ".join(reasons)
    guard = (f"; guard (pv01 validation tiles) pixel IoU {hb['pixel_iou']:.3f} -> "
             f"{ha['pixel_iou']:.3f}"
             if drop(hb, ha, "pixel_iou") is not None else "")
    return True, better + guard
