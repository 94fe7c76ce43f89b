"""The gate's verdict on a retrained candidate: enough held-out objects to decide, the
paired bootstrap interval of the held-out change, the area rule (the guard warns) and
the general rule (the guard vetoes). The same verdicts on real data are the site
experiment's tests (``tests/backend/learning/test_retrain.py -k site``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from backend.learning.acceptance import (MIN_HOLDOUT_OBJECTS, held_out_change, judge,
                                         object_units, rule_text)

CARD = SimpleNamespace(classes=["photovoltaic"])


def _area(target, scored=None):
    return SimpleNamespace(target=target, valid=np.ones(target.shape, bool), scored=scored)


def _squares(n, size=6, gap=4, width=200):
    """A class map with ``n`` squares of ``size`` px in a row (each 36 px >= 20)."""
    m = np.zeros((size + 2 * gap, width), np.uint8)
    for i in range(n):
        x = gap + i * (size + gap)
        m[gap:gap + size, x:x + size] = 1
    return m


def test_units_add_up_to_the_object_counts_and_pair_before_with_after():
    target = _squares(12)
    before = target.copy()
    before[:, 4 + 3 * 10: 4 + 3 * 10 + 6] = 0          # misses object 3
    after = target.copy()
    after[:, 190:196] = 0
    after[4:10, 190:196] = 1                            # a false object, none before
    u = object_units([_area(target)], CARD, [before], [after])
    tot = u.sum(0)
    assert tuple(tot[:3]) == (11, 0, 1) and tuple(tot[3:]) == (12, 1, 0)
    assert len(u) == 13  # 12 objects + the false one
    # an area's scored mask limits what is judged
    scored = np.zeros(target.shape, bool)
    scored[:, :60] = True
    assert object_units([_area(target, scored)], CARD, [before], [after]).sum(0)[0] == 5


def test_held_out_change_interval_and_enough_objects():
    target = _squares(12)
    before = np.zeros_like(target)                       # finds nothing
    ch = held_out_change(object_units([_area(target)], CARD, [before], [target]))
    assert ch["enough"] and ch["objects"] == 12 and ch["errors"] == [12, 0]
    assert ch["object_f1"] == [0.0, 1.0] and ch["f1_change"] == 1.0
    assert ch["f1_interval"] == [1.0, 1.0]              # every object improved
    few = held_out_change(object_units([_area(_squares(3))], CARD,
                                       [np.zeros_like(_squares(3))], [_squares(3)]))
    assert not few["enough"] and few["objects"] == 3 < MIN_HOLDOUT_OBJECTS
    # mixed: 6 fixed, 5 broken out of 12: the interval straddles 0
    after = target.copy()
    for i in range(6, 11):
        after[:, 4 + i * 10: 4 + i * 10 + 6] = 0
    before = target.copy()
    for i in range(6):
        before[:, 4 + i * 10: 4 + i * 10 + 6] = 0
    mixed = held_out_change(object_units([_area(target)], CARD, [before], [after]))
    lo, hi = mixed["f1_interval"]
    assert mixed["errors"] == [6, 5] and lo < 0 < hi
    # the interval repeats (seeded)
    again = held_out_change(object_units([_area(target)], CARD, [before], [after]))
    assert again == mixed
    assert held_out_change(np.zeros((0, 6), np.int64))["f1_change"] is None


def _m(errors, f1, iou=0.8):
    return {"object_errors": errors, "object_f1": f1, "pixel_iou": iou}


def _change(objects=20, lo=0.1, f1=(0.6, 0.9)):
    return {"objects": objects, "enough": objects >= MIN_HOLDOUT_OBJECTS,
            "object_f1": list(f1), "f1_change": f1[1] - f1[0], "f1_interval": [lo, 0.4],
            "confidence": 0.9}


BEFORE = {"user_holdout": _m(8, 0.6), "guard": {"pixel_iou": 0.881}}


def test_area_rule_accepts_an_improvement_and_only_warns_about_the_guard():
    after = {"user_holdout": _m(2, 0.9), "guard": {"pixel_iou": 0.806}}
    v = judge(BEFORE, after, _change(), 0.02, "area")
    assert v.verdict == "accepted" and v.accepted
    assert v.reason.startswith("object errors on the held-out corrections 8 -> 2")
    assert "interval +0.100 to +0.400 over 20 held-out objects" in v.reason
    assert v.warnings == ["this version is worse on the original training data (pv01 "
                          "validation tiles) by 0.075 pixel IoU (0.881 -> 0.806); it is "
                          "meant for its own area only"]
    # the same numbers for a general-purpose version: the guard vetoes
    g = judge(BEFORE, after, _change(), 0.02, "general")
    assert g.verdict == "rejected" and "pixel IoU on the guard" in g.reason


@pytest.mark.parametrize("after, change, words", [
    ({"user_holdout": _m(8, 0.6)}, _change(f1=(0.6, 0.6)), "no fewer object errors"),
    ({"user_holdout": _m(9, 0.55)}, _change(f1=(0.6, 0.55), lo=-0.1),
     "more object errors on the held-out corrections (8 -> 9)"),
    ({"user_holdout": _m(7, 0.62)}, _change(lo=-0.05, f1=(0.6, 0.62)), "the gain may be noise"),
    ({"user_holdout": _m(2, 0.9, iou=0.7)}, _change(), "pixel IoU on the held-out corrections"),
])
def test_area_rule_rejects_what_does_not_improve_the_held_out_part(after, change, words):
    v = judge(BEFORE, after, change, 0.02, "area")
    assert v.verdict == "rejected" and words in v.reason


def test_too_few_held_out_objects_give_no_verdict_in_either_scope():
    after = {"user_holdout": _m(0, 1.0)}
    for scope in ("area", "general"):
        v = judge(BEFORE, after, _change(objects=MIN_HOLDOUT_OBJECTS - 1), 0.02, scope)
        assert v.verdict == "undecided" and not v.accepted
        assert v.reason.startswith("not enough held-out corrections to decide: the held-out "
                                   f"part holds {MIN_HOLDOUT_OBJECTS - 1} objects")
    with pytest.raises(ValueError):
        judge(BEFORE, after, _change(), 0.02, "everywhere")


def test_rule_texts_name_their_limits():
    area = rule_text("area", 0.02, 250.0)
    assert "250 m" in area and f"at least {MIN_HOLDOUT_OBJECTS} objects" in area
    assert "90% bootstrap interval" in area and "does not decide" in area
    general = rule_text("general", 0.03, 250.0)
    assert "drops by at most 0.03" in general and "not enough held-out" in general
