"""Whether a retrained candidate becomes a new version: the rule and the numbers it
compares.

The evaluation (:mod:`backend.learning.evaluation`) runs the current model and the
candidate on the held-out corrections, the guard and, when needed, the corrected areas
trained on; :func:`eval_areas` and :func:`held_out_change` turn their class maps into
the numbers compared here, and :func:`judge` gives the verdict: :data:`AREA_RULE` for a
version for the area it was taught on (the default: the guard is then a measured
warning, not a veto), :data:`ACCEPTANCE_RULE` (:func:`decide`) for a general-purpose
one. Both first ask whether the held-out corrections can decide at all
(:data:`MIN_HOLDOUT_OBJECTS`), and both see the uncertainty of the held-out change
(:func:`held_out_change`: a paired bootstrap over the held-out objects). The pv01
held-out split is never used here: accepting a version is a decision, and decisions
are never taken on held-out data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.learning.reviewed import ReviewedData
from backend.models.card import ModelCard
from protocol.holdout import MIN_HOLDOUT_OBJECTS
from protocol.metrics import Counts, compare

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


# MIN_HOLDOUT_OBJECTS (protocol.holdout): the fewest objects (places where the
# corrections or either model has an object of at least 20 px) the held-out corrections
# must hold for the rule to give a verdict; the plugin's retrain dialog warns with it.
#: Two-sided confidence of the interval of the held-out change.
CONFIDENCE = 0.9
#: Bootstrap resamples of the held-out objects (seeded: the interval repeats).
BOOTSTRAP_RESAMPLES = 2000
#: What a retrain may produce: a version for the area it was taught on, or one for
#: everywhere.
SCOPES = ("area", "general")

#: The rule of a version for its area (the default), stated in its card.
AREA_RULE = (
    "A version retrained on your corrections is used only inside the area it was taught "
    "on (the reviewed extents and a site footprint of {margin_m:g} m around them); it is "
    "judged there, on the held-out part of your corrections (never trained on, read with "
    "its surroundings as a detection reads it). Objects are 8-connected components of "
    ">= 20 px matched at IoU 0.5; object errors = false + missed objects. The held-out "
    "part must hold at least {min_objects} objects, else there is no verdict (not enough "
    "held-out corrections to decide). It is accepted when, there, object errors "
    "decrease, object F1 does not decrease, the lower end of the {confidence:.0%} "
    "bootstrap interval of the object F1 change (resampling the held-out objects) is not "
    "below 0, and pixel IoU drops by at most {max_iou_drop:g}. Its pixel IoU on the "
    "guard, pv01 validation tiles the model never trained on, is measured and reported "
    "as a warning when it drops by more than {max_iou_drop:g}; it does not decide.")


def rule_text(scope: str, max_iou_drop: float, margin_m: float) -> str:
    """The rule a retrain of ``scope`` (:data:`SCOPES`) applies, as stated in the card.

    Args:
        scope: ``"area"`` or ``"general"``.
        max_iou_drop: the largest pixel IoU drop allowed.
        margin_m: how far the version's area reaches beyond the reviewed extents,
            metres.
    """
    if scope == "general":
        return (ACCEPTANCE_RULE.format(max_iou_drop=max_iou_drop) +
                f" With fewer than {MIN_HOLDOUT_OBJECTS} held-out objects there is no "
                f"verdict (not enough held-out corrections to decide).")
    return AREA_RULE.format(max_iou_drop=max_iou_drop, margin_m=margin_m,
                            min_objects=MIN_HOLDOUT_OBJECTS, confidence=CONFIDENCE)


# ----------------------------------------------------------------------------- metrics

def metrics_summary(counts: Counts, area_m2: float, wrong_px: int) -> Dict[str, Any]:
    """The figures the rule compares, from pooled object/pixel ``counts`` over
    ``area_m2`` m² with ``wrong_px`` wrongly classified pixels: the
    :meth:`Counts.summary` keys (rounded to 4 decimals, NaN as None, without
    ``mean_matched_iou``) plus ``object_errors``, ``wrong_px``, ``area_km2`` and
    ``false_polygons_per_km2``."""
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


def eval_areas(areas: Sequence[ReviewedData], card: ModelCard,
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
        m = _scored(a)
        for k in range(1, len(card.classes) + 1):
            tot.add(compare((pred == k) & m, (a.target == k) & m))
        wrong += int(((pred != a.target) & m).sum())
        area_m2 += a.area_m2
    return metrics_summary(tot, area_m2, wrong)


def _scored(area: Any) -> np.ndarray:
    """The judged pixels of an area (its ``scored`` mask when it has one, else every
    valid pixel: :attr:`ReviewedData.scored_mask`)."""
    scored = getattr(area, "scored", None)
    return area.valid if scored is None else scored


def object_units(areas: Sequence[ReviewedData], card: ModelCard,
                 before: Sequence[np.ndarray], after: Sequence[np.ndarray]
                 ) -> np.ndarray:
    """Per-object counts of two models on the same areas, for a paired bootstrap.

    A *unit* is an 8-connected component of the union of the corrected map and both
    models' class maps (per class, inside each area's scored pixels): the objects that
    overlap, and so may match each other, always share one unit, so the counts of all
    units add up to :func:`eval_areas`' counts.

    Returns:
        int64 (n, 6): per unit ``tp, fp, fn`` objects of ``before`` then of ``after``
        (units whose components are all below 20 px are left out).
    """
    from scipy import ndimage
    rows = []
    eight = np.ones((3, 3), bool)
    for a, pb, pa in zip(areas, before, after):
        m = _scored(a)
        for k in range(1, len(card.classes) + 1):
            t, b, f = (a.target == k) & m, (pb == k) & m, (pa == k) & m
            lab, n = ndimage.label(t | b | f, structure=eight)
            for j, sl in enumerate(ndimage.find_objects(lab), start=1):
                if sl is None:
                    continue
                sel = lab[sl] == j
                cb = compare(b[sl] & sel, t[sl] & sel)
                ca = compare(f[sl] & sel, t[sl] & sel)
                row = (cb.tp_obj, cb.fp_obj, cb.fn_obj, ca.tp_obj, ca.fp_obj, ca.fn_obj)
                if any(row):
                    rows.append(row)
    return np.asarray(rows, np.int64).reshape(-1, 6)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def held_out_change(units: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> Dict[str, Any]:
    """The change of object F1 and object errors from ``before`` to ``after`` on the
    held-out objects, with a paired bootstrap interval.

    Args:
        units: :func:`object_units`' rows.
        resamples: bootstrap resamples of the units (with replacement).
        confidence: two-sided confidence of the intervals.
        seed: seed of the resampling (the interval repeats).

    Returns:
        ``{"objects": n, "object_f1": [before, after], "f1_change": after - before,
        "f1_interval": [lo, hi], "errors": [before, after], "errors_interval": [lo, hi]
        (of the change), "confidence", "resamples", "enough": n >= MIN_HOLDOUT_OBJECTS,
        "min_objects"}``; F1 values rounded to 4 decimals, None without units.
    """
    n = int(len(units))
    out: Dict[str, Any] = {"objects": n, "confidence": confidence, "resamples": resamples,
                           "min_objects": MIN_HOLDOUT_OBJECTS,
                           "enough": n >= MIN_HOLDOUT_OBJECTS}
    if n == 0:
        out.update({"object_f1": [None, None], "f1_change": None,
                    "f1_interval": [None, None], "errors": [0, 0],
                    "errors_interval": [0, 0]})
        return out
    tot = units.sum(0)
    f_b, f_a = float(_f1(*tot[:3])), float(_f1(*tot[3:]))
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    sums = units[idx].sum(1)  # (resamples, 6)
    df = _f1(sums[:, 3], sums[:, 4], sums[:, 5]) - _f1(sums[:, 0], sums[:, 1], sums[:, 2])
    de = (sums[:, 4] + sums[:, 5]) - (sums[:, 1] + sums[:, 2])
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    lo, hi = np.percentile(df, q)
    elo, ehi = np.percentile(de, q)
    out.update({"object_f1": [round(f_b, 4), round(f_a, 4)],
                "f1_change": round(f_a - f_b, 4),
                "f1_interval": [round(float(lo), 4), round(float(hi), 4)],
                "errors": [int(tot[1] + tot[2]), int(tot[4] + tot[5])],
                "errors_interval": [int(round(float(elo))), int(round(float(ehi)))]})
    return out


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


@dataclass
class Verdict:
    """What the rule says about a candidate.

    Attributes:
        verdict: ``"accepted"``, ``"rejected"`` or ``"undecided"`` (too few held-out
            objects to decide).
        reason: the reasons, joined with ``"; "``, the main one first.
        warnings: measured facts that do not decide (the guard of an area version).
    """

    verdict: str
    reason: str
    warnings: List[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """Whether the verdict is ``"accepted"``."""
        return self.verdict == "accepted"


def guard_warning(before: Dict[str, Any], after: Dict[str, Any],
                  max_iou_drop: float) -> Optional[str]:
    """``"this version is worse on the original training data (pv01 validation tiles)
    by 0.075 pixel IoU (0.881 -> 0.806)"`` when the guard's pixel IoU drops by more than
    ``max_iou_drop``; None otherwise or without a guard."""
    hb, ha = before.get("guard"), after.get("guard")
    if not hb or not ha or hb.get("pixel_iou") is None or ha.get("pixel_iou") is None:
        return None
    d = hb["pixel_iou"] - ha["pixel_iou"]
    if d <= max_iou_drop + 1e-9:
        return None
    return (f"this version is worse on the original training data (pv01 validation "
            f"tiles) by {d:.3f} pixel IoU ({hb['pixel_iou']:.3f} -> {ha['pixel_iou']:.3f})"
            f"; it is meant for its own area only")


def _interval(change: Dict[str, Any]) -> str:
    lo, hi = change["f1_interval"]
    return (f"object F1 change {change['f1_change']:+.3f}, {change['confidence']:.0%} "
            f"interval {lo:+.3f} to {hi:+.3f} over {change['objects']} held-out objects")


def judge(before: Dict[str, Any], after: Dict[str, Any], change: Dict[str, Any],
          max_iou_drop: float, scope: str = "area") -> Verdict:
    """The verdict on a candidate.

    Args:
        before, after: :func:`evaluate`'s numbers of the current model and the
            candidate.
        change: :func:`evaluate`'s held-out change (:func:`held_out_change`).
        max_iou_drop: the largest pixel IoU drop allowed (held-out corrections; the
            guard's limit, which only warns for an area version).
        scope: ``"area"`` (:data:`AREA_RULE`) or ``"general"`` (:data:`ACCEPTANCE_RULE`,
            :func:`decide`: the guard vetoes).

    Raises:
        ValueError: an unknown scope.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    if not change.get("enough"):
        return Verdict("undecided", (
            f"not enough held-out corrections to decide: the held-out part holds "
            f"{change.get('objects', 0)} objects, at least {MIN_HOLDOUT_OBJECTS} are needed "
            f"(review a larger area, or keep the version yourself after looking at the "
            f"numbers)"))
    if scope == "general":
        ok, why = decide(before, after, max_iou_drop)
        if change.get("f1_change") is not None:
            why += f" ({_interval(change)})"
        return Verdict("accepted" if ok else "rejected", why)
    ub, ua = before["user_holdout"], after["user_holdout"]
    eb, ea = ub["object_errors"], ua["object_errors"]
    reasons = []
    if ea > eb:
        reasons.append(f"more object errors on the held-out corrections ({eb} -> {ea})")
    elif ea == eb:
        reasons.append(f"no fewer object errors on the held-out corrections ({eb} -> {ea}):"
                       f" nothing learned shows outside the part trained on")
    fb, fa = ub.get("object_f1"), ua.get("object_f1")
    if fb is not None and fa is not None and fa < fb - 1e-9:
        reasons.append(f"object F1 on the held-out corrections fell {fb:.3f} -> {fa:.3f}")
    if ea < eb and change["f1_interval"][0] is not None and change["f1_interval"][0] < 0:
        reasons.append(f"the gain may be noise: {_interval(change)}")
    if (ub.get("pixel_iou") is not None and ua.get("pixel_iou") is not None
            and ub["pixel_iou"] - ua["pixel_iou"] > max_iou_drop + 1e-9):
        reasons.append(f"pixel IoU on the held-out corrections fell {ub['pixel_iou']:.3f} "
                       f"-> {ua['pixel_iou']:.3f} (more than {max_iou_drop:g})")
    warn = guard_warning(before, after, max_iou_drop)
    warnings = [warn] if warn else []
    if reasons:
        return Verdict("rejected", "; ".join(reasons), warnings)
    return Verdict("accepted", f"object errors on the held-out corrections {eb} -> {ea} "
                               f"({_interval(change)})", warnings)
