"""The user's corrections as training data: the corrected features, and the reviewed
areas read and diffed with the current model."""

from __future__ import annotations

import pytest

import protocol as P
from tests.support import DEFAULT_MODEL, VIENNA, FakePredictor, needs_real

BOWTIE = "POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))"
SQUARE = "POLYGON ((0 0, 4 0, 4 4, 0 4, 0 0))"
CLASSES = {"photovoltaic": 1}


def test_invalid_geometry_is_repaired_with_a_warning():
    from backend.learning.corrections import parse_features
    feats, warnings, repaired = parse_features(
        [{"wkt": SQUARE, "class": "photovoltaic"}, {"wkt": BOWTIE, "class": "photovoltaic"}],
        CLASSES, "repair")
    assert repaired == 1 and len(feats) == 2
    assert any("feature 1" in w and "make_valid" in w for w in warnings)
    g = feats[1][0]
    assert g.is_valid and g.geom_type == "MultiPolygon" and abs(g.area - 50.0) < 1e-6


def test_invalid_geometry_is_refused_clearly():
    from backend.learning.corrections import parse_features
    from protocol.errors import CorrectionsError
    with pytest.raises(CorrectionsError) as ei:
        parse_features([{"wkt": SQUARE, "class": "photovoltaic"},
                        {"wkt": BOWTIE, "class": "photovoltaic"}], CLASSES, "refuse")
    assert "feature 1" in ei.value.message and "invalid geometry" in ei.value.message
    assert "Self-intersection" in ei.value.message
    assert ei.value.code == P.E_INVALID_INPUT


def test_bad_features_are_refused():
    from backend.learning.corrections import parse_features
    from protocol.errors import CorrectionsError
    with pytest.raises(CorrectionsError, match="class 'roof'"):
        parse_features([{"wkt": SQUARE, "class": "roof"}], CLASSES)
    with pytest.raises(CorrectionsError, match="unreadable WKT"):
        parse_features([{"wkt": "POLYGON ((0 0, 1", "class": "photovoltaic"}], CLASSES)
    feats, warnings, _ = parse_features([{"wkt": "LINESTRING (0 0, 1 1)",
                                          "class": "photovoltaic"}], CLASSES)
    assert feats == [] and "not a polygon" in warnings[0]


def _sq(x, y, s):
    return f"POLYGON (({x} {y}, {x + s} {y}, {x + s} {y + s}, {x} {y + s}, {x} {y}))"


@needs_real
def test_features_in_the_split_gap_are_not_called_outside_every_area():
    """One reviewed area of Vienna (100 m x 40 m): the held-out strip is its right
    quarter, 5 m apart from the part trained on. A feature in that 5 m strip lies
    inside the reviewed area: it is reported as such, not as outside every area."""
    from backend.learning.corrections import build_corrections
    from backend.models.catalog import load_card
    from protocol.params import RetrainParams
    card = load_card(DEFAULT_MODEL)
    x0, y0 = -1700.0, 338500.0
    area = (x0, y0, x0 + 100, y0 + 40)  # held out: x > x0 + 75; gap x0 + 70 .. x0 + 75
    feats = [{"wkt": _sq(x0 + 10, y0 + 10, 3), "class": "photovoltaic"},   # trained on
             {"wkt": _sq(x0 + 71, y0 + 10, 3), "class": "photovoltaic"},   # in the gap
             {"wkt": _sq(x0 + 85, y0 + 10, 3), "class": "photovoltaic"},   # held out
             {"wkt": _sq(x0 + 300, y0 + 10, 3), "class": "photovoltaic"}]  # outside
    # the predictor sees background everywhere: the corrections are all additions
    vienna = str(VIENNA)
    params = RetrainParams({"kind": "file", "path": vienna}, DEFAULT_MODEL, feats,
                           crs="EPSG:31256", reviewed=[{"extent": list(area)}])
    corr = build_corrections(params, [], card, FakePredictor(card, gain=0.0))
    assert [a.n_features for a in corr.train] == [1] and \
        [a.n_features for a in corr.holdout] == [1]
    assert "1 corrected feature(s) lie outside every reviewed area" in " ".join(corr.warnings)
    assert any(w.startswith("1 corrected feature(s) lie in the strip") for w in corr.warnings)
    # all inside the area: no word of "outside"
    params = RetrainParams({"kind": "file", "path": vienna}, DEFAULT_MODEL, feats[:3],
                           crs="EPSG:31256", reviewed=[{"extent": list(area)}])
    corr = build_corrections(params, [], card, FakePredictor(card, gain=0.0))
    assert not any("outside" in w for w in corr.warnings), corr.warnings
    s = corr.summary()
    assert s["train"]["added"] + s["holdout"]["added"] == 2
