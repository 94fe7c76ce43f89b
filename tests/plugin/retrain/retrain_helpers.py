"""What the retrain tests share: a user version written as the engine writes it, and
a retrain report the acceptance rule could not decide on."""

from __future__ import annotations

import json

from helpers import DEFAULT_MODEL, REPO

MODEL = DEFAULT_MODEL


def user_version(users, active=False):
    """A user version ``<MODEL>@1`` as backend.models.version_writer writes it (the
    weights are not needed here), made active when ``active``."""
    d = users / MODEL / "1"
    d.mkdir(parents=True)
    shipped = json.loads((REPO / "models" / MODEL / "card.json").read_text())
    raw = dict(shipped, id=f"{MODEL}@1", version="1.0.0+u1",
               base_model=MODEL, lineage={"parent": MODEL, "number": 1})
    (d / "card.json").write_text(json.dumps(raw))
    if active:
        (users / MODEL / "active.json").write_text(json.dumps({"active": f"{MODEL}@1"}))


#: A retrain report whose candidate the rule could not decide on (too few held-out
#: objects), kept aside by the daemon as ``pending``; the guard got worse.
UNDECIDED = {
    "accepted": False, "verdict": "undecided", "model": None, "parent": MODEL,
    "active": MODEL, "pending": "0123456789abcdef0123456789abcdef",
    "scope": {"crs": "EPSG:4326", "footprint_wkt": "POLYGON ((16.31 48.18, 16.32 48.18, "
              "16.32 48.19, 16.31 48.19, 16.31 48.18))",
              "reviewed": [[16.314, 48.184, 16.315, 48.185]], "margin_m": 250.0,
              "area_km2": 0.27, "reviewed_km2": 0.0004, "centre": [16.3149, 48.1846]},
    "change": {"objects": 4, "enough": False, "object_f1": [0.5, 0.857],
               "f1_change": 0.357, "f1_interval": [0.0, 0.667], "confidence": 0.9},
    "reason": "not enough held-out corrections to decide: the held-out part holds 4 "
              "objects, at least 10 are needed (review a larger area, or keep the version "
              "yourself after looking at the numbers)",
    "before": {"user_holdout": {"object_f1": 0.5, "object_errors": 2, "pixel_iou": 0.6},
               "guard": {"object_f1": 0.9, "object_errors": 3, "pixel_iou": 0.881}},
    "after": {"user_holdout": {"object_f1": 0.857, "object_errors": 1, "pixel_iou": 0.7},
              "guard": {"object_f1": 0.8, "object_errors": 5, "pixel_iou": 0.806}},
    "train": {"steps": 40, "seconds": 50.0}, "rule": "the area rule",
    "warnings": ["this version is worse on the original training data (pv01 validation "
                 "tiles) by 0.075 pixel IoU (0.881 -> 0.806); it is meant for its own "
                 "area only"]}
