"""The acceptance rule of a retrain, clause by clause, at its exact limits: each case
changes one number of an accepted candidate, so a rule with a clause dropped or a
tolerance moved gives another verdict."""

from __future__ import annotations

import copy

import pytest

from backend.learning.acceptance import decide

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
    after = _after(user_holdout__object_errors=4, user_holdout__object_f1=0.7,
                   user_holdout__pixel_iou=0.7, guard__pixel_iou=0.8)
    ok, reason = decide(BEFORE, after, MAX_DROP)
    assert not ok
    parts = reason.split("; ")
    assert [p.split(" (")[0].split(" fell")[0] for p in parts] == [
        "more object errors on the held-out corrections",
        "object F1 on the held-out corrections",
        "pixel IoU on the held-out corrections",
        "pixel IoU on the guard",
        "no fewer object errors"]


def test_without_guard_data_the_other_clauses_decide():
    before = {k: v for k, v in BEFORE.items() if k != "guard"}
    after = {k: v for k, v in AFTER.items() if k != "guard"}
    assert decide(before, after, MAX_DROP) == (True, "object errors on the held-out "
                                                     "corrections 3 -> 2")
    worse = copy.deepcopy(after)
    worse["user_holdout"]["object_f1"] = 0.7
    assert decide(before, worse, MAX_DROP)[0] is False
