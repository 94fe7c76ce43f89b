"""A detection (backend.inference.detect.run_detect) on real data: accuracy, attributes,
extents in other CRSs, pixels and no-data, band mappings, bad input and models that
cannot be loaded.

Real rasters from ../shared/data (ORTHOLENS_DATA): pv01 held-out tiles (never used in
training), the Vienna 2023 orthophoto (EPSG:31256, 0.3 m, no panels) and the SpaceNet
Atlanta scene (1 band, uint16). Synthetic rasters appear only where a case cannot be
found in real data (a raster without CRS).
"""

from __future__ import annotations

import shutil
from typing import Tuple

import numpy as np
import pytest
import rasterio
import shapely
from scipy import ndimage

import protocol as P
from backend.inference import detect as D
from backend.models.catalog import load_card
from protocol.errors import JobError
from tools.evaluate import rasterize_features
from tests.support import ATLANTA, DEFAULT_MODEL, VIENNA, against_mask, heldout


def detect(path, **kw):
    req = {"type": "detect", "model": DEFAULT_MODEL,
           "source": {"kind": "file", "path": str(path)}}
    req.update(kw)
    return D.run_detect(P.validate_request(dict(req, v=1, id="t")), [])


def _matched_objects(preds, refs, min_area_m2: float = 0.2) -> Tuple[int, int, int]:
    """``(predicted, reference, matched)`` objects of two lists of shapely polygons: the
    benchmark convention (objects of at least 20 px, 0.2 m² at 0.1 m; a match is an
    IoU of 0.5 or more, each object matched once, best IoU first) computed with
    shapely's areas."""
    preds = [g for g in preds if g.area >= min_area_m2]
    refs = [g for g in refs if g.area >= min_area_m2]
    pairs = sorted(((a.intersection(b).area / a.union(b).area, i, j)
                    for i, a in enumerate(preds) for j, b in enumerate(refs)
                    if a.intersects(b)), reverse=True)
    used_p, used_r = set(), set()
    for iou, i, j in pairs:
        if iou >= 0.5 and i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    return len(preds), len(refs), len(used_p)


def test_heldout_accuracy_of_shipped_model():
    """The shipped model on the 12 held-out tiles, through the product pipeline, scored
    apart from the engine's own scoring (``protocol.metrics``, ``tools.evaluate``, which
    wrote the card's figures): rasterio burns the polygons onto each reference mask and
    numpy counts the pixels; the mask's objects are traced by rasterio and matched
    with the polygons by shapely. The scores must reach the card's (inference is
    deterministic: the slack only covers engines rounding differently) and the
    figures docs/accuracy.md states (pixel IoU 0.906, object F1 0.881, less the same
    slack). A regression in model, stitching or post-processing fails here, and so
    does a card that claims more than the model gives.
    """
    from rasterio.features import rasterize, shapes
    from shapely.geometry import shape
    from tests.support import HELDOUT
    card = load_card(DEFAULT_MODEL).heldout_metrics
    tiles = sorted(p for p in HELDOUT.glob("*.tif") if not p.stem.endswith("_mask"))
    assert len(tiles) == 12
    px = np.zeros(3, np.int64)          # true positive, false positive, false negative
    objects = np.zeros(3, np.int64)     # predicted, reference, matched
    for tile in tiles:
        with rasterio.open(tile.with_name(tile.stem + "_mask.tif")) as src:
            ref, t = src.read(1) > 0, src.transform
        geoms = [shapely.from_wkt(f["wkt"]) for f in detect(tile)["features"]]
        pred = np.zeros(ref.shape, bool) if not geoms else rasterize(
            geoms, out_shape=ref.shape, transform=t, fill=0, default_value=1,
            dtype="uint8") > 0
        px += [(pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()]
        refs = [shape(g) for g, _ in shapes(ref.astype(np.uint8), mask=ref, transform=t,
                                             connectivity=8)]
        objects += _matched_objects(geoms, refs)
    pixel_iou = px[0] / px.sum()
    object_f1 = 2 * objects[2] / (objects[0] + objects[1])
    assert objects[1] == card["objects_true"] == 31
    assert pixel_iou >= card["pixel_iou"] - 0.005, (pixel_iou, card["pixel_iou"])
    assert object_f1 >= card["object_f1"] - 0.02, (object_f1, card["object_f1"])
    assert pixel_iou >= 0.906 - 0.005 and object_f1 >= 0.881 - 0.02


def _place(room: np.ndarray, h: int, w: int, margin: int):
    """``(row, col)`` of the top-left pixel of an ``h`` x ``w`` rectangle centred on the
    pixel of ``room`` (a distance transform) farthest from its edge, which must leave
    ``margin`` pixels around it; ``room`` is cleared around it for the next one."""
    r, c = np.unravel_index(int(np.argmax(room)), room.shape)
    assert room[r, c] >= max(h, w) / 2 + margin
    r0, c0 = r - h // 2, c - w // 2
    room[max(0, r0 - 3 * margin):r0 + h + 3 * margin,
         max(0, c0 - 3 * margin):c0 + w + 3 * margin] = 0
    return r0, c0


def _card_rules(mask: np.ndarray, transform, min_area_m2: float, max_hole_m2: float):
    """The objects of a panel mask as the card's rules make them, computed with shapely
    in square metres: outlines traced by rasterio (8-connected), holes below
    ``max_hole_m2`` filled, objects below ``min_area_m2`` dropped."""
    from rasterio.features import shapes
    from shapely.geometry import Polygon, shape
    out = []
    for geom, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform,
                          connectivity=8):
        g = shape(geom)
        g = Polygon(g.exterior, [r for r in g.interiors if Polygon(r).area >= max_hole_m2])
        if g.area >= min_area_m2:
            out.append(g)
    return out


def test_holes_and_small_objects_follow_the_card_in_square_metres(tmp_path):
    """A detection whose panel probability is known exactly: the reference mask of a
    real held-out tile (0.1 m, EPSG:32651; 7 panel arrays) with holes of 0.2, 0.45, 0.6
    and 1 m² punched into the arrays and lone objects of 1.5 and 2.5 m² added, written
    as an image that ``FakePredictor`` reads as probability 1 on panels and 0
    elsewhere. The polygons are the mask's objects with the card's rules applied by
    shapely in m² (holes below 0.5 m² filled, objects below 2 m² dropped)."""
    from tests.support import FakePredictor, write_raster
    card = load_card(DEFAULT_MODEL)
    with rasterio.open(heldout("PV01_325190_1204243").with_name(
            "PV01_325190_1204243_mask.tif")) as src:
        mask, prof = src.read(1) > 0, dict(src.profile)
    t = prof["transform"]
    assert (t.a, t.e) == (0.1, -0.1) and (card.min_area_m2, card.max_hole_m2) == (2.0, 0.5)
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    for h, w in [(4, 5), (5, 9), (6, 10), (10, 10)]:      # 20, 45, 60, 100 px of 0.01 m²
        r0, c0 = _place(inside, h, w, 3)
        mask[r0:r0 + h, c0:c0 + w] = False
    outside = ndimage.distance_transform_edt(np.pad(~mask, 1))[1:-1, 1:-1]
    for h, w in [(10, 15), (10, 25)]:                      # 150 and 250 px
        r0, c0 = _place(outside, h, w, 3)
        mask[r0:r0 + h, c0:c0 + w] = True
    path = write_raster(tmp_path / "probability.tif",
                        np.repeat(mask[None].astype(np.uint8) * 255, 3, 0), prof)
    want = _card_rules(mask, t, card.min_area_m2, card.max_hole_m2)
    assert len(want) == 8 and sum(len(g.interiors) for g in want) == 2  # 0.6 and 1 m²
    res = D.run_detect(P.validate_request({
        "v": 1, "id": "h", "type": "detect", "model": DEFAULT_MODEL,
        "source": {"kind": "file", "path": str(path)}, "simplify_m": 0.0,
        "orthogonalize": False}), [], predictor=FakePredictor(card))
    got = [shapely.from_wkt(f["wkt"]) for f in res["features"]]
    assert len(got) == len(want)
    for g in want:  # each expected object once; the WKT keeps millimetres
        assert sum(g.symmetric_difference(o).area < 0.01 for o in got) == 1, g.area
    assert sorted(round(f["area_m2"], 2) for f in res["features"]) == sorted(
        round(g.area, 2) for g in want)


def test_detect_polygons_overlap_reference_and_carry_attributes():
    path = heldout("PV01_325192_1204249")
    res = detect(path)
    assert res["features"], "no polygon on a tile with panels"
    with rasterio.open(str(path).replace(".tif", "_mask.tif")) as src:
        ref = src.read(1) > 0
        pred = rasterize_features(res["features"], ref.shape, src.transform) > 0
        crs = src.crs
    assert (pred & ref).sum() / (pred | ref).sum() > 0.5
    assert rasterio.crs.CRS.from_wkt(res["crs"]) == crs
    for f in res["features"]:
        assert f["class"] == "photovoltaic" and f["class_id"] == 1
        assert 0 < f["score"] <= 1
        g = shapely.from_wkt(f["wkt"])
        assert g.is_valid and abs(g.area - f["area_m2"]) < 0.01
        assert f["area_m2"] >= load_card(DEFAULT_MODEL).min_area_m2
        assert f["model"] == DEFAULT_MODEL and f["model_version"]


def test_extent_in_other_crs_is_reprojected():
    # a 60 m x 60 m area of the Vienna scene given in WGS 84 degrees
    from rasterio.warp import transform_bounds
    b = transform_bounds("EPSG:31256", "EPSG:4326", -1600, 338500, -1540, 338560)
    res = detect(VIENNA, extent=list(b), extent_crs="EPSG:4326")
    st = res["stats"]
    assert rasterio.crs.CRS.from_wkt(res["crs"]).to_epsg() == 31256
    # the densified WGS 84 box covers a bit more than 60 m; the grid is at 0.1 m
    assert 600 <= st["width"] <= 640 and 600 <= st["height"] <= 640
    assert any("resampled" in w for w in st["warnings"])


def test_pixels_source_equals_file_source():
    """A layer rendered by the plugin (kind 'pixels') gives the file's polygons."""
    path = heldout("PV01_325190_1204246")
    with rasterio.open(path) as ds:
        arr = ds.read()
        t = ds.transform
        crs = ds.crs.to_wkt()
    res_f = detect(path)
    req = {"v": 1, "id": "p", "type": "detect", "model": DEFAULT_MODEL,
           "source": {"kind": "pixels", "crs": crs, "transform": list(t)[:6]}}
    res_p = D.run_detect(P.validate_request(req), [arr])
    assert [f["wkt"] for f in res_f["features"]] == [f["wkt"] for f in res_p["features"]]
    iou, arrays = against_mask(res_p["features"], path)
    assert len(res_p["features"]) == arrays == 4 and iou > 0.9  # the tile's 4 arrays


def test_nodata_gives_no_polygons():
    path = heldout("PV01_325192_1204249")
    with rasterio.open(path) as ds:
        arr = ds.read()
        t, crs = ds.transform, ds.crs.to_wkt()
    full = D.run_detect(P.validate_request(
        {"v": 1, "id": "a", "type": "detect", "model": DEFAULT_MODEL,
         "source": {"kind": "pixels", "crs": crs, "transform": list(t)[:6]}}), [arr])
    assert full["features"]
    arr = arr.copy()
    arr[:, :, :] = 0  # the whole tile is nodata
    res = D.run_detect(P.validate_request(
        {"v": 1, "id": "b", "type": "detect", "model": DEFAULT_MODEL,
         "source": {"kind": "pixels", "crs": crs, "transform": list(t)[:6], "nodata": 0}}),
        [arr])
    assert res["features"] == [] and res["stats"]["valid_fraction"] == 0.0


def test_four_band_raster_uses_rgb_with_warning():
    """R, G, B and a fourth band: the first three feed the model, with a warning, and
    it finds the tile's 4 panel arrays."""
    path = heldout("PV01_325190_1204246")
    with rasterio.open(path) as ds:
        arr = ds.read()
        t, crs = ds.transform, ds.crs.to_wkt()
    rgbi = np.concatenate([arr, arr[:1]], 0)
    req = {"v": 1, "id": "c", "type": "detect", "model": DEFAULT_MODEL,
           "source": {"kind": "pixels", "crs": crs, "transform": list(t)[:6]}}
    res4 = D.run_detect(P.validate_request(req), [rgbi])
    res3 = D.run_detect(P.validate_request(req), [arr])
    assert any("4 bands" in w for w in res4["stats"]["warnings"])
    assert [f["wkt"] for f in res4["features"]] == [f["wkt"] for f in res3["features"]]
    iou, arrays = against_mask(res4["features"], path)
    assert len(res4["features"]) == arrays == 4 and iou > 0.9


@pytest.mark.parametrize("case, code, words", [
    ("two_band_mapping", P.E_INVALID_INPUT, "takes 3 bands; 2 given"),
    ("missing_file", P.E_NOT_FOUND, "not found"),
    ("not_a_raster", P.E_INVALID_INPUT, "not a raster"),
    ("no_crs", P.E_INVALID_INPUT, "no CRS"),
    ("extent_outside", P.E_INVALID_INPUT, "does not intersect"),
    ("extent_tiny", P.E_INVALID_INPUT, "smaller than one pixel"),
    ("extent_gigantic", P.E_INVALID_INPUT, "too large"),
    ("unknown_model", P.E_NOT_FOUND, "no model"),
])
def test_bad_input_gets_clear_error(case, code, words, tmp_path, monkeypatch):
    path, kw = VIENNA, {}
    if case == "two_band_mapping":
        path, kw = ATLANTA, {"bands": [1, 1]}
    elif case == "missing_file":
        path = tmp_path / "nope.tif"
    elif case == "not_a_raster":
        path = tmp_path / "notes.tif"
        path.write_text("this is not a GeoTIFF")
    elif case == "no_crs":
        path = tmp_path / "nocrs.tif"
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint8") as w:  # synthetic: real data all have a CRS
            w.write(np.full((3, 64, 64), 128, np.uint8))
    elif case == "extent_outside":
        kw = {"extent": [0, 0, 100, 100]}
    elif case == "extent_tiny":
        kw = {"extent": [-1600, 338500, -1599.95, 338500.05]}
    elif case == "extent_gigantic":
        # the whole Vienna scene is 25 Mpx at 0.1 m; cap one request at 1 Mpx
        from backend.inference import grid as grid_module
        monkeypatch.setattr(grid_module, "MAX_GRID_PIXELS", 1_000_000)
    elif case == "unknown_model":
        req = {"v": 1, "id": "x", "type": "detect", "model": "no-such-model",
               "source": {"kind": "file", "path": str(VIENNA)}}
        with pytest.raises(JobError) as ei:
            D.run_detect(P.validate_request(req), [])
        assert ei.value.code == code and words in ei.value.message
        return
    with pytest.raises(JobError) as ei:
        detect(path, **kw)
    assert ei.value.code == code, ei.value.message
    assert words in ei.value.message


@pytest.mark.parametrize("broken", ["weights.safetensors", "model.onnx"])
def test_corrupt_model_file_is_reported(broken, tmp_path, monkeypatch):
    card = load_card(DEFAULT_MODEL)
    bad = tmp_path / DEFAULT_MODEL
    bad.mkdir()
    shutil.copy(card.path / "card.json", bad / "card.json")
    if broken == "model.onnx":
        shutil.copy(card.weights_path, bad / "weights.safetensors")
    (bad / broken).write_bytes(b"\x00garbage" * 100)
    monkeypatch.setenv("ORTHOLENS_MODELS", str(tmp_path))
    if broken == "model.onnx":
        # the predictor that reads the broken file, whatever the machine: on a GPU machine
        # detection would otherwise run PyTorch on the intact weights
        from backend.inference import predictors
        monkeypatch.setattr(predictors, "cuda_available", lambda: False)
        with pytest.raises(P.ModelCorrupt, match="cannot be loaded"):
            predictors.OnnxPredictor(load_card(DEFAULT_MODEL))
    req = {"v": 1, "id": "m", "type": "detect", "model": DEFAULT_MODEL,
           "source": {"kind": "file", "path": str(VIENNA)},
           "extent": [-1600, 338500, -1590, 338510]}
    with pytest.raises(JobError) as ei:
        D.run_detect(P.validate_request(req), [])
    assert ei.value.code == P.E_INVALID_INPUT and "cannot be loaded" in ei.value.message


def _rectangle_cut_at(g, extent) -> bool:
    """Whether polygon ``g`` is a rectangle, or one cut by ``extent``'s edges: every
    edge of its outline lies along one of two perpendicular directions or on
    ``extent``'s boundary, and it has at most 4 corners more than the cuts add."""
    xy = np.asarray(g.exterior.coords)
    if len(xy) > 9:
        return False
    border = extent.exterior.buffer(1e-6)
    angles = []
    for p, q in zip(xy[:-1], xy[1:]):
        if not border.contains(shapely.LineString([p, q])):
            angles.append(np.degrees(np.arctan2(q[1] - p[1], q[0] - p[0])) % 90.0)
    return bool(angles) and all(min(abs(a - angles[0]), 90 - abs(a - angles[0])) < 0.5
                                for a in angles)


def test_orthogonalize_makes_panel_rows_rectangles():
    """Panel rows on a real held-out tile come back as rectangles (cut where they
    reach the tile's edge: :func:`_rectangle_cut_at`) that keep the traced outline's
    area and position (IoU >= 0.85 with it) and have fewer vertices."""
    import rasterio
    path = heldout("PV01_325190_1204243")
    with rasterio.open(path) as ds:
        extent = shapely.box(*ds.bounds)
    plain = detect(path, orthogonalize=False)
    ortho = detect(path, orthogonalize=True)
    assert len(plain["features"]) == len(ortho["features"]) >= 3
    rects = 0
    for a, b in zip(plain["features"], ortho["features"]):
        ga, gb = shapely.from_wkt(a["wkt"]), shapely.from_wkt(b["wkt"])
        assert gb.is_valid
        if _rectangle_cut_at(gb, extent):
            rects += 1
            assert ga.intersection(gb).area / ga.union(gb).area >= 0.85
            assert abs(b["area_m2"] - gb.area) < 0.01
    assert rects >= 3
    n_plain = sum(len(shapely.from_wkt(f["wkt"]).exterior.coords) for f in plain["features"])
    n_ortho = sum(len(shapely.from_wkt(f["wkt"]).exterior.coords) for f in ortho["features"])
    assert n_ortho < n_plain
