"""The user's corrections as training data: the corrected features, the reviewed
areas read and diffed with the current model, and the pixels without data (an alpha
band, a nodata value) weighing nothing."""

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


#: Two classes, to see which one a feature gets and how the known ones are listed.
TWO = {"solar_thermal": 2, "photovoltaic": 1}


def test_features_keep_their_class_area_and_review_state():
    """A class by name, or by ``class_id`` when no name is given; an integer ``area``
    index and the ``review`` state carried as given, anything else as None."""
    from shapely import wkt

    from backend.learning.corrections import parse_features
    feats, warnings, repaired = parse_features(
        [{"wkt": SQUARE, "class": "solar_thermal", "area": 3, "review": "confirmed"},
         {"wkt": _sq(10, 10, 2), "class_id": 2},
         {"wkt": _sq(20, 0, 1), "class": "photovoltaic", "class_id": 2, "area": "3"},
         {"wkt": _sq(30, 0, 5), "class": "", "class_id": 1, "area": 0, "review": "edited"}],
        TWO)
    assert warnings == [] and repaired == 0
    assert [f[1:] for f in feats] == [(2, 3, "confirmed"), (2, None, None),
                                      (1, None, None), (1, 0, "edited")]
    for f, w in zip(feats, [SQUARE, _sq(10, 10, 2), _sq(20, 0, 1), _sq(30, 0, 5)]):
        assert f[0].equals(wkt.loads(w)) and f[0].geom_type == "Polygon"


@pytest.mark.parametrize("feature", [
    {"wkt": SQUARE, "class": "roof", "class_id": 1},      # a name wins over the id
    {"wkt": SQUARE, "class_id": 7},                       # an id the model lacks
    {"wkt": SQUARE, "class_id": "1"},                     # an id that is no integer
    {"wkt": SQUARE}])                                     # no class at all
def test_a_feature_of_no_known_class_is_refused_naming_the_classes(feature):
    from backend.learning.corrections import parse_features
    from protocol.errors import CorrectionsError
    with pytest.raises(CorrectionsError) as ei:
        parse_features([{"wkt": SQUARE, "class": "photovoltaic"}, feature], TWO)
    msg = ei.value.message
    assert msg.startswith(f"feature 1 has class {feature.get('class')!r}"), msg
    assert "(classes: photovoltaic, solar_thermal)" in msg and "'class' attribute" in msg
    assert ei.value.code == P.E_INVALID_INPUT


@pytest.mark.parametrize("feature", [
    "POLYGON ((0 0, 1 0, 1 1, 0 0))", {"class": "photovoltaic"},
    {"wkt": None, "class": "photovoltaic"}, {"wkt": 5, "class": "photovoltaic"}])
def test_a_feature_without_a_wkt_string_is_a_bad_request(feature):
    from backend.learning.corrections import parse_features
    from protocol.errors import CorrectionsError
    with pytest.raises(CorrectionsError) as ei:
        parse_features([{"wkt": SQUARE, "class": "photovoltaic"}, feature], CLASSES)
    assert ei.value.message == "feature 1 has no 'wkt' string"
    assert ei.value.code == P.E_BAD_REQUEST


def test_unreadable_wkt_is_a_bad_request_naming_the_feature():
    from backend.learning.corrections import parse_features
    from protocol.errors import CorrectionsError
    with pytest.raises(CorrectionsError) as ei:
        parse_features([{"wkt": SQUARE, "class": "photovoltaic"},
                        {"wkt": "POLYGON ((0 0, 1", "class": "photovoltaic"}], CLASSES)
    assert ei.value.message.startswith("feature 1: unreadable WKT (")
    assert ei.value.code == P.E_BAD_REQUEST


def test_dropped_and_repaired_features_are_each_reported_and_the_rest_kept():
    """An empty geometry and a line are dropped, each with its own warning, and the
    features after them are still read; two invalid ones are both repaired and
    counted."""
    from backend.learning.corrections import parse_features
    pv = "photovoltaic"
    feats, warnings, repaired = parse_features(
        [{"wkt": "POLYGON EMPTY", "class": pv}, {"wkt": "LINESTRING (0 0, 1 1)", "class": pv},
         {"wkt": SQUARE, "class": pv, "area": 1}, {"wkt": BOWTIE, "class": pv, "area": 2},
         {"wkt": "POLYGON EMPTY", "class": pv}, {"wkt": BOWTIE, "class": pv, "area": 4},
         {"wkt": "POINT (1 1)", "class": pv}, {"wkt": _sq(9, 9, 1), "class": pv, "area": 6}],
        CLASSES)
    assert repaired == 2
    assert [f[2] for f in feats] == [1, 2, 4, 6]
    assert [round(f[0].area, 6) for f in feats] == [16.0, 50.0, 50.0, 1.0]
    assert warnings[0] == "feature 0 has an empty geometry; ignored"
    assert warnings[1] == "feature 1 is not a polygon; ignored"
    assert warnings[2].startswith("feature 3: invalid geometry (Self-intersection")
    assert warnings[2].endswith(") repaired with make_valid")
    assert warnings[3] == "feature 4 has an empty geometry; ignored"
    assert warnings[4].startswith("feature 5: invalid geometry (")
    assert warnings[5] == "feature 6 is not a polygon; ignored"
    assert len(warnings) == 6


def test_the_polygons_of_a_collection_are_kept_and_the_rest_dropped():
    """A geometry collection (e.g. a repaired geometry, or one drawn so) keeps its
    polygons, those of its multipolygons one by one, small ones too (a feature in
    degrees has areas far below 1), and drops lines, points, empty and flat polygons."""
    from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Point, Polygon, box

    from backend.learning.corrected import _polygonal, parse_features
    want = [box(0, 0, 4, 4), box(10, 10, 11, 11), box(20, 20, 20.5, 20.5),
            box(16.3, 48.2, 16.3001, 48.2001)]
    coll = GeometryCollection([want[0], MultiPolygon(want[1:3]), LineString([(0, 0), (5, 5)]),
                               Point(1, 1), want[3]])
    feats, warnings, _ = parse_features([{"wkt": coll.wkt, "class": "photovoltaic"}], CLASSES)
    assert warnings == []
    g = feats[0][0]
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 4
    assert all(a.equals(b) for a, b in zip(g.geoms, want))
    assert g.area == pytest.approx(16 + 1 + 0.25 + 1e-8)
    flat = Polygon([(30, 30), (31, 31), (32, 32), (30, 30)])  # non-empty, area 0
    g = _polygonal(GeometryCollection([flat, Polygon(), want[0], LineString([(0, 0), (1, 1)])]))
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 1 and g.geoms[0].equals(want[0])
    assert _polygonal(GeometryCollection([flat, Point(0, 0)])) is None
    assert _polygonal(Polygon()) is None and _polygonal(MultiPolygon()) is None
    assert _polygonal(LineString([(0, 0), (1, 1)])) is None
    assert _polygonal(want[0]) is want[0]


def test_a_feature_meets_a_reviewed_area_in_the_area_s_crs():
    """A 10 m square given in degrees (EPSG:4326) against reviewed areas in UTM 33N: it
    meets an area that overlaps its UTM image by 2 m, not one 2 m away, nor the one
    that would hold its raw degree numbers; without a CRS (or in the area's CRS) it is
    taken as it is. The corners are projected with pyproj."""
    from pyproj import Transformer
    from rasterio.crs import CRS
    from shapely.geometry import Polygon, box

    from backend.learning.corrections import _inside
    utm = CRS.from_epsg(32633)
    to_deg = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x0, y0 = 601000.0, 5340000.0
    corners = [(x0, y0), (x0 + 10, y0), (x0 + 10, y0 + 10), (x0, y0 + 10)]
    in_deg = Polygon([to_deg.transform(x, y) for x, y in corners])
    in_utm = Polygon(corners)
    overlapping = (utm.to_wkt(), (x0 + 8, y0 - 20, x0 + 50, y0 + 50))
    apart = (utm.to_wkt(), (x0 + 12, y0 - 20, x0 + 50, y0 + 50))
    raw = (utm.to_wkt(), (0.0, 0.0, 100.0, 100.0))
    assert in_deg.intersects(box(*raw[1])) and not in_deg.intersects(box(*overlapping[1]))
    wgs84 = CRS.from_epsg(4326)
    assert _inside(in_deg, wgs84, overlapping) is True
    assert _inside(in_deg, wgs84, apart) is False
    assert _inside(in_deg, wgs84, raw) is False
    for crs in (None, utm):
        assert _inside(in_utm, crs, overlapping) is True
        assert _inside(in_utm, crs, apart) is False
    assert _inside(in_deg, None, raw) is True


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


#: The small raster of the no-data tests: 30 m x 12 m at the model's 0.1 m GSD in MGI /
#: Austria GK East, its top-left corner at (X0, Y1).
X0, Y1, GSD, W, H = -1700.0, 338560.0, 0.1, 300, 120
#: No-data on the raster, in metres from its top-left corner ``(dx0, dx1, dy0, dy1)``
#: (dy down): a strip along its left edge, a block inside the corrected square and one
#: in the held-out area.
NODATA_M = [(0, 6, 0, 12), (10, 14, 4, 8), (25, 27, 0, 12)]
#: The corrected square (a panel the model missed), the same way.
PANEL_M = (4, 16, 2, 10)


def _small_raster(path, how):
    """Write the raster: RGB 120 on valid pixels; on :data:`NODATA_M` either an alpha
    band of 0 under RGB 200 (``"alpha"``) or RGB 0 declared as the nodata value
    (``"nodata"``)."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.enums import ColorInterp

    bad = np.zeros((H, W), bool)
    for dx0, dx1, dy0, dy1 in NODATA_M:
        bad[round(dy0 / GSD):round(dy1 / GSD), round(dx0 / GSD):round(dx1 / GSD)] = True
    rgb = np.where(bad, 200 if how == "alpha" else 0, 120).astype(np.uint8)
    data = np.stack([rgb] * 3 + ([np.where(bad, 0, 255).astype(np.uint8)]
                                 if how == "alpha" else []))
    prof = dict(driver="GTiff", width=W, height=H, count=len(data), dtype="uint8",
                crs="EPSG:31256", transform=Affine(GSD, 0, X0, 0, -GSD, Y1),
                nodata=0 if how == "nodata" else None)
    with rasterio.open(path, "w", **prof) as w:
        w.write(data)
        if how == "alpha":
            w.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                             ColorInterp.alpha]
    return path


def _in_boxes(xs, ys, boxes, grow):
    """Whether the points ``(xs, ys)`` (metres, the raster's CRS) lie in one of
    ``boxes`` (metres from the top-left corner, as :data:`NODATA_M`) grown by
    ``grow`` metres (negative: shrunk)."""
    import numpy as np
    out = np.zeros(xs.shape, bool)
    for dx0, dx1, dy0, dy1 in boxes:
        out |= ((xs > X0 + dx0 - grow) & (xs < X0 + dx1 + grow)
                & (ys < Y1 - dy0 + grow) & (ys > Y1 - dy1 - grow))
    return out


@pytest.mark.parametrize("how", ["alpha", "nodata"])
def test_no_data_pixels_weigh_nothing_and_are_background(tmp_path, how):
    """A panel the model missed is added over a raster with no-data (its own alpha
    band, or a nodata value): where the raster has no data the pixels of every part
    read weigh 0, are background in the target and are not judged; on valid pixels of
    the part trained on the added panel weighs the mistake weight 5 and the rest 1.
    The expectation is where each grid pixel's centre falls on the ground (0.15 m
    kept clear of every edge for the bilinear resampling)."""
    import numpy as np
    from shapely.geometry import box

    from backend.learning.corrections import build_corrections
    from backend.models.catalog import load_card
    from protocol.params import RetrainParams
    card = load_card(DEFAULT_MODEL)
    path = _small_raster(tmp_path / f"{how}.tif", how)
    dx0, dx1, dy0, dy1 = PANEL_M
    panel = box(X0 + dx0, Y1 - dy1, X0 + dx1, Y1 - dy0)
    params = RetrainParams({"kind": "file", "path": str(path)}, DEFAULT_MODEL,
                           [{"wkt": panel.wkt, "class": "photovoltaic"}], crs="EPSG:31256",
                           reviewed=[{"extent": [X0, Y1 - 12, X0 + 20, Y1], "holdout": False},
                                     {"extent": [X0 + 22, Y1 - 12, X0 + 30, Y1],
                                      "holdout": True}])
    corr = build_corrections(params, [], card, FakePredictor(card, gain=0.0),
                             mistake_weight=5.0)
    assert len(corr.train) == len(corr.holdout) == 1
    for part in corr.train + corr.holdout:
        t = part.grid.transform
        rows, cols = np.mgrid[0:part.grid.height, 0:part.grid.width]
        xs, ys = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
        surely_bad = _in_boxes(xs, ys, NODATA_M, -0.15)
        surely_good = ~_in_boxes(xs, ys, NODATA_M, 0.15) & _in_boxes(
            xs, ys, [(0, 30, 0, 12)], -0.15)
        # no-data on the grid: 24 + 16 m² held out (with context), 72 + 16 m² trained on
        assert surely_bad.sum() > 0.7 * (4000 if part.holdout else 8800), part.holdout
        assert (part.weight[surely_bad] == 0).all(), how
        assert (part.target[surely_bad] == 0).all() and not part.scored_mask[surely_bad].any()
        assert not part.valid[surely_bad].any() and part.valid[surely_good].all()
        if part.holdout:
            continue
        in_panel = _in_boxes(xs, ys, [PANEL_M], -0.15) & surely_good
        off_panel = ~_in_boxes(xs, ys, [PANEL_M], 0.15) & surely_good
        # valid: 96 - 16 - 16 m² of the panel, 240 - 72 - 80 m² around it
        assert in_panel.sum() > 0.7 * 6400 and off_panel.sum() > 0.7 * 8800
        assert (part.weight[in_panel] == 5.0).all() and (part.target[in_panel] == 1).all()
        assert (part.weight[off_panel] == 1.0).all() and (part.target[off_panel] == 0).all()
