"""The acceptance rule of a retrain, clause by clause, at its exact limits: each case
changes one number of an accepted candidate, so a rule with a clause dropped or a
tolerance moved gives another verdict."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from backend.learning.acceptance import decide, eval_areas, metrics_summary
from protocol.metrics import Counts

MAX_DROP = 0.02

BEFORE = {"user_holdout": {"object_errors": 3, "object_f1": 0.80, "pixel_iou": 0.80},
          "guard": {"pixel_iou": 0.88},
          "user_train": {"object_errors": 5, "wrong_px": 1000}}
#: A candidate that passes every clause with nothing to spare but the object errors.
AFTER = {"user_holdout": {"object_errors": 2, "object_f1": 0.85, "pixel_iou": 0.80},
         "guard": {"pixel_iou": 0.88},
         "user_train": {"object_errors": 5, "wrong_px": 1000}}


def _after(**changes):
    after = copy.deepcopy(AFTER)
    for path, value in changes.items():
        part, key = path.split("__")
        after[part][key] = value
    return after


@pytest.mark.parametrize("changes, accepted, words", [
    ({}, True, "object errors on the held-out corrections 3 -> 2"),
    # (1) held-out corrections: object errors must not increase ...
    ({"user_holdout__object_errors": 4, "user_holdout__object_f1": 0.85}, False,
     "more object errors on the held-out corrections (3 -> 4)"),
    # ... object F1 must not decrease, even with fewer object errors ...
    ({"user_holdout__object_f1": 0.79}, False, "object F1 on the held-out corrections fell"),
    ({"user_holdout__object_f1": 0.80}, True, "3 -> 2"),
    # ... and pixel IoU may drop by 0.020, not by 0.021
    ({"user_holdout__pixel_iou": 0.78}, True, "3 -> 2"),
    ({"user_holdout__pixel_iou": 0.779}, False, "pixel IoU on the held-out corrections fell"),
    # (2) the guard's pixel IoU may drop by 0.020, not by 0.021
    ({"guard__pixel_iou": 0.86}, True, "guard (pv01 validation tiles) pixel IoU 0.880 -> 0.860"),
    ({"guard__pixel_iou": 0.859}, False, "pixel IoU on the guard"),
    # (3) learned: fewer object errors on the held-out corrections, or on a tie fewer on
    # the trained-on corrections, or on a tie there too fewer wrong pixels
    ({"user_holdout__object_errors": 3, "user_train__object_errors": 4}, True,
     "on the corrected areas trained on 5 -> 4"),
    ({"user_holdout__object_errors": 3, "user_train__wrong_px": 999}, True,
     "wrong pixels there 1000 -> 999"),
    ({"user_holdout__object_errors": 3}, False, "no fewer object errors"),
    ({"user_holdout__object_errors": 3, "user_train__object_errors": 6,
      "user_train__wrong_px": 10}, False, "no fewer object errors"),
])
def test_each_clause_at_its_limit(changes, accepted, words):
    ok, reason = decide(BEFORE, _after(**changes), MAX_DROP)
    assert ok is accepted, reason
    assert words in reason, reason


def test_every_failed_clause_is_named_once():
    """Every clause that fails is named, each once: more object errors on the held-out
    corrections are not repeated as 'no fewer object errors' (that clause is for equal
    counts)."""
    after = _after(user_holdout__object_errors=4, user_holdout__object_f1=0.7,
                   user_holdout__pixel_iou=0.7, guard__pixel_iou=0.8)
    ok, reason = decide(BEFORE, after, MAX_DROP)
    assert not ok
    parts = reason.split("; ")
    assert [p.split(" (")[0].split(" fell")[0] for p in parts] == [
        "more object errors on the held-out corrections",
        "object F1 on the held-out corrections",
        "pixel IoU on the held-out corrections",
        "pixel IoU on the guard"]


def test_without_guard_data_the_other_clauses_decide():
    before = {k: v for k, v in BEFORE.items() if k != "guard"}
    after = {k: v for k, v in AFTER.items() if k != "guard"}
    assert decide(before, after, MAX_DROP) == (True, "object errors on the held-out "
                                                     "corrections 3 -> 2")
    worse = copy.deepcopy(after)
    worse["user_holdout"]["object_f1"] = 0.7
    assert decide(before, worse, MAX_DROP)[0] is False


def test_a_guard_missing_on_one_side_or_without_iou_is_not_compared():
    """The guard clause needs the guard's pixel IoU before and after; with either
    missing (no guard tiles, or an IoU undefined because they hold no panel pixel) the
    other clauses decide, and nothing is said about the guard."""
    no_guard = {k: v for k, v in AFTER.items() if k != "guard"}
    for before, after in [(BEFORE, no_guard), ({**BEFORE, "guard": {"pixel_iou": None}}, AFTER),
                          (BEFORE, {**AFTER, "guard": {"pixel_iou": None}}),
                          (BEFORE, {**AFTER, "guard": {}})]:
        assert decide(before, after, MAX_DROP) == (
            True, "object errors on the held-out corrections 3 -> 2")


def test_held_out_numbers_undefined_on_one_side_skip_their_clause():
    """Object F1 and pixel IoU are None when undefined (no objects, no pixels): a clause
    whose number is missing before or after is not applied."""
    for part in ("object_f1", "pixel_iou"):
        for side in ("before", "after"):
            before, after = copy.deepcopy(BEFORE), _after(**{f"user_holdout__{part}": 0.1})
            (before if side == "before" else after)["user_holdout"][part] = None
            assert decide(before, after, MAX_DROP) == (
                True, "object errors on the held-out corrections 3 -> 2; guard (pv01 "
                      "validation tiles) pixel IoU 0.880 -> 0.880"), (part, side)


def test_rejection_reasons_word_for_word():
    """The reasons a user reads, with their numbers, in the order of the rule."""
    after = _after(user_holdout__object_errors=4, user_holdout__object_f1=0.7,
                   user_holdout__pixel_iou=0.7, guard__pixel_iou=0.8)
    assert decide(BEFORE, after, MAX_DROP) == (False, (
        "more object errors on the held-out corrections (3 -> 4); "
        "object F1 on the held-out corrections fell 0.800 -> 0.700; "
        "pixel IoU on the held-out corrections fell 0.800 -> 0.700 (more than 0.02); "
        "pixel IoU on the guard (pv01 validation tiles) fell 0.880 -> 0.800 "
        "(more than 0.02)"))
    tie = _after(user_holdout__object_errors=3, user_train__object_errors=6,
                 user_train__wrong_px=10)
    assert decide(BEFORE, tie, MAX_DROP) == (False, (
        "no fewer object errors (held-out corrections 3 -> 3, on the corrected areas "
        "trained on 5 -> 6, wrong pixels 1000 -> 10)"))
    no_train = {k: v for k, v in tie.items() if k != "user_train"}
    assert decide(BEFORE, no_train, MAX_DROP) == (
        False, "no fewer object errors (held-out corrections 3 -> 3)")


def test_acceptance_reasons_word_for_word():
    assert decide(BEFORE, AFTER, MAX_DROP) == (True, (
        "object errors on the held-out corrections 3 -> 2; guard (pv01 validation "
        "tiles) pixel IoU 0.880 -> 0.880"))
    fewer_on_train = _after(user_holdout__object_errors=3, user_train__object_errors=4)
    assert decide(BEFORE, fewer_on_train, MAX_DROP) == (True, (
        "object errors on the held-out corrections unchanged (3), on the corrected areas "
        "trained on 5 -> 4; guard (pv01 validation tiles) pixel IoU 0.880 -> 0.880"))
    fewer_px = _after(user_holdout__object_errors=3, user_train__wrong_px=999)
    assert decide(BEFORE, fewer_px, MAX_DROP) == (True, (
        "object errors unchanged on the held-out corrections (3) and on the corrected "
        "areas trained on (5); wrong pixels there 1000 -> 999; guard (pv01 validation "
        "tiles) pixel IoU 0.880 -> 0.880"))


def test_the_tolerance_is_the_argument():
    """A drop of 0.05 in pixel IoU (held-out and guard) passes at max_iou_drop 0.05 and
    fails at 0.049; the message names the tolerance in force."""
    after = _after(user_holdout__pixel_iou=0.75, guard__pixel_iou=0.83)
    assert decide(BEFORE, after, 0.05)[0] is True
    ok, reason = decide(BEFORE, after, 0.049)
    assert not ok
    assert reason == ("pixel IoU on the held-out corrections fell 0.800 -> 0.750 (more "
                      "than 0.049); pixel IoU on the guard (pv01 validation tiles) fell "
                      "0.880 -> 0.830 (more than 0.049)")


def test_fewer_errors_on_the_trained_on_areas_need_a_tie_on_the_held_out_ones():
    """Fewer object errors (or wrong pixels) on the trained-on areas count only when the
    held-out corrections show the same number of object errors: with more there, the
    candidate is refused for that alone."""
    after = _after(user_holdout__object_errors=4, user_holdout__object_f1=0.85,
                   user_train__object_errors=0, user_train__wrong_px=0)
    assert decide(BEFORE, after, MAX_DROP) == (
        False, "more object errors on the held-out corrections (3 -> 4)")
    # equal object errors on the trained-on areas, more wrong pixels: not learned
    after = _after(user_holdout__object_errors=3, user_train__wrong_px=1001)
    assert decide(BEFORE, after, MAX_DROP)[0] is False
    # no trained-on numbers after: a tie on the held-out corrections is not learning
    after = _after(user_holdout__object_errors=3, user_train__object_errors=0)
    del after["user_train"]
    assert decide(BEFORE, after, MAX_DROP)[0] is False
    before = {k: v for k, v in BEFORE.items() if k != "user_train"}
    assert decide(before, _after(user_holdout__object_errors=3,
                                 user_train__object_errors=0), MAX_DROP)[0] is False


# ----------------------------------------------------------------------------- numbers

def test_summary_rounds_and_adds_the_rule_numbers():
    counts = Counts(tp_px=1, fp_px=2, fn_px=0, tp_obj=1, fp_obj=2, fn_obj=1,
                    matched_ious=[0.7])
    s = metrics_summary(counts, 2.5e6, 17)
    assert s == {"pixel_iou": 0.3333, "pixel_precision": 0.3333, "pixel_recall": 1.0,
                 "pixel_f1": 0.5, "object_precision": 0.3333, "object_recall": 0.5,
                 "object_f1": 0.4, "objects_true": 2, "objects_pred": 3,
                 "false_objects": 2, "missed_objects": 1, "object_errors": 3,
                 "wrong_px": 17, "area_km2": 2.5, "false_polygons_per_km2": 0.8}
    assert type(s["wrong_px"]) is int and type(s["object_errors"]) is int
    empty = metrics_summary(Counts(), 0.0, 0)
    assert empty["pixel_iou"] is None and empty["object_f1"] is None
    assert empty["false_polygons_per_km2"] is None and empty["area_km2"] == 0.0
    assert empty["object_errors"] == 0 and "mean_matched_iou" not in empty
    assert metrics_summary(Counts(fp_obj=1), 1234.5678, 0)["area_km2"] == 0.001235
    assert metrics_summary(Counts(fp_obj=1), 3e5, 0)["false_polygons_per_km2"] == 3.3
    # per km2 exactly: 1 in 4 km2 is 0.25, which rounds (half to even) to 0.2
    assert metrics_summary(Counts(fp_obj=1), 4e6, 0)["false_polygons_per_km2"] == 0.2
    # any positive area has a density, however small
    assert metrics_summary(Counts(fp_obj=1), 0.5, 0)["false_polygons_per_km2"] == 2e6


def test_eval_areas_pools_classes_and_areas():
    """Objects are compared class by class and the counts pooled over classes and
    areas; pixels outside ``valid`` count for nothing."""
    card = SimpleNamespace(classes=["pv", "roof"])
    target = np.zeros((10, 30), np.uint8)
    target[0:4, 0:6] = 1          # a 24 px panel
    target[5:10, 10:20] = 2       # a 50 px roof
    pred = np.zeros((10, 30), np.uint8)
    pred[0:4, 0:6] = 2            # the panel taken for a roof
    pred[5:10, 10:20] = 2         # the roof found
    pred[0:4, 24:30] = 1          # a false panel
    valid = np.ones((10, 30), bool)
    a = SimpleNamespace(valid=valid, target=target, area_m2=300.0)
    s = eval_areas([a], card, [pred])
    # pv: 1 false, 1 missed; roof: 1 matched, 1 false (the panel)
    assert (s["objects_true"], s["objects_pred"], s["false_objects"],
            s["missed_objects"], s["object_errors"]) == (2, 3, 2, 1, 3)
    assert s["wrong_px"] == 24 + 24 and s["area_km2"] == 0.0003
    # pixels: pv tp 0, fp 24, fn 24; roof tp 50, fp 24, fn 0
    assert s["pixel_iou"] == round(50 / (50 + 48 + 24), 4)
    # a second, identical area doubles every count; an invalid one adds only its area
    dark = SimpleNamespace(valid=np.zeros_like(valid), target=target, area_m2=100.0)
    s2 = eval_areas([a, a, dark], card, [pred, pred, pred])
    assert (s2["objects_true"], s2["false_objects"], s2["missed_objects"],
            s2["wrong_px"]) == (4, 4, 2, 96)
    assert s2["pixel_iou"] == s["pixel_iou"] and s2["area_km2"] == 0.0007


def test_decide_applies_the_stated_rule():
    from backend.learning.acceptance import decide

    def m(err, f1=0.8, iou=0.9, wrong=1000):
        return {"object_errors": err, "object_f1": f1, "pixel_iou": iou, "wrong_px": wrong}
    guard = {"pixel_iou": 0.88}
    # fewer errors on the held-out corrections: accepted
    ok, why = decide({"user_holdout": m(2), "guard": guard},
                     {"user_holdout": m(1, 0.9), "guard": {"pixel_iou": 0.87}}, 0.02)
    assert ok and "2 -> 1" in why
    # ... but not when the guard (validation tiles) loses more than 0.02 pixel IoU
    ok, why = decide({"user_holdout": m(2), "guard": guard},
                     {"user_holdout": m(1, 0.9), "guard": {"pixel_iou": 0.85}}, 0.02)
    assert not ok and "guard" in why
    # more errors on the held-out corrections: rejected whatever else improved
    ok, why = decide({"user_holdout": m(1), "user_train": m(3)},
                     {"user_holdout": m(2, 0.7), "user_train": m(0)}, 0.02)
    assert not ok and "1 -> 2" in why
    # equal there: fewer object errors, else fewer wrong pixels, on the trained-on areas
    ok, why = decide({"user_holdout": m(1), "user_train": m(3)},
                     {"user_holdout": m(1), "user_train": m(2)}, 0.02)
    assert ok and "3 -> 2" in why
    ok, why = decide({"user_holdout": m(1), "user_train": m(3, wrong=900)},
                     {"user_holdout": m(1), "user_train": m(3, wrong=700)}, 0.02)
    assert ok and "900 -> 700" in why
    # nothing learned: rejected
    ok, why = decide({"user_holdout": m(1), "user_train": m(3, wrong=700)},
                     {"user_holdout": m(1), "user_train": m(3, wrong=700)}, 0.02)
    assert not ok and "no fewer object errors" in why
    # more errors on a held-out part without panels: that reason once, not twice
    ok, why = decide({"user_holdout": m(0, None, None)},
                     {"user_holdout": m(8, None, None)}, 0.02)
    assert not ok and why.count("0 -> 8") == 1 and "no fewer" not in why
