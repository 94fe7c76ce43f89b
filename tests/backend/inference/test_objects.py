"""backend.inference.objects on small synthetic probabilities: class maps (one per class
family, each post-processed on its own), the exactly-once rule of regions (an object
belongs to the region whose core holds its first pixel, also when the region's window
has grown to the whole grid), polygons of a window equal to the whole grid's, and result
features."""

from __future__ import annotations

import re

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from backend.inference import objects as O
from backend.inference.grid import Grid
from backend.inference.pipeline import Options
from backend.inference.postprocess import Detection
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from protocol.results import RESULT_FIELD_NAMES
from protocol.window import Window
from tests.support import DEFAULT_MODEL, ensemble_card

#: 0.1 m pixels in UTM 51N, origin (254000, 3601000).
T = Affine(0.1, 0, 254000, 0, -0.1, 3601000)
OPTS = Options(threshold=0.5, min_area_m2=0.05, max_hole_m2=0.02, simplify_m=0.0)


def _probs(fg: np.ndarray) -> np.ndarray:
    """Class probabilities (2, H, W) of a one-class model whose panel probability is
    ``fg``."""
    return np.stack([1 - fg, fg]).astype(np.float32)


def _grid(height: int, width: int, source_crs_wkt=None) -> Grid:
    return Grid(T, width, height, CRS.from_epsg(32651).to_wkt(), [1, 2, 3], 0.1, [],
                source_crs_wkt=source_crs_wkt)


def test_split_probs_of_a_model_and_of_an_ensemble():
    card = load_card(DEFAULT_MODEL)
    probs = np.random.default_rng(0).random((2, 3, 4), np.float32)
    class_probs, members = O.split_probs(probs, card)
    assert class_probs is not None and np.array_equal(class_probs, probs) and members is None
    fused = np.random.default_rng(1).random((2 + 3, 3, 4), np.float32)  # 3 members
    class_probs, members = O.split_probs(fused, ensemble_card())
    assert np.array_equal(class_probs, fused[:2]) and members.shape == (3, 1, 3, 4)
    assert np.array_equal(members[2, 0], fused[4])


def test_sizes_in_pixels_and_class_maps():
    assert O.min_sizes_px(OPTS, T) == (5, 2)                 # 0.05 / 0.01, 0.02 / 0.01
    assert O.min_sizes_px(Options(0.5, 2.0, 0.5, 0.0), Affine(0.3, 0, 0, 0, -0.3, 0)) == (
        22, 6)                                               # 2 / 0.09, 0.5 / 0.09
    fg = np.zeros((12, 12), np.float32)
    fg[1:5, 1:5] = 0.8
    fg[2, 2] = 0.1                                           # a one-pixel hole
    fg[8, 8:10] = 0.9                                        # two pixels: too small
    fg[10, 1:4] = 0.7                                        # three pixels, no data
    valid = np.ones((12, 12), bool)
    valid[10] = False
    raw, cleaned = O.class_maps(_probs(fg), valid, load_card(DEFAULT_MODEL), OPTS, T)
    want_raw = np.zeros((12, 12), np.uint8)
    want_raw[1:5, 1:5] = 1
    want_raw[2, 2] = 0
    want_raw[8, 8:10] = 1
    assert np.array_equal(raw, want_raw[None])  # one class family
    want = np.zeros((12, 12), np.uint8)
    want[1:5, 1:5] = 1
    assert np.array_equal(cleaned, want[None])


def _three_objects() -> np.ndarray:
    """A 10 x 10 class map: X (rows 3-6, columns 1-2), Y (rows 6-8, columns 5-6) and Z
    (rows 0-1, columns 7-8)."""
    cmap = np.zeros((10, 10), np.uint8)
    cmap[3:7, 1:3] = 1   # X: first pixel (3, 1)
    cmap[6:9, 5:7] = 1   # Y: first pixel (6, 5)
    cmap[0:2, 7:9] = 1   # Z: first pixel (0, 7)
    return cmap


def test_every_object_is_owned_by_exactly_one_region():
    """Two regions (cores: rows 0-4 and 5-9) read with a 3-row halo: each keeps the
    objects whose first pixel its core holds; together they are the whole grid's."""
    whole = _three_objects()
    cores = [Window(0, 0, 5, 10), Window(5, 0, 5, 10)]
    windows = [Window(0, 0, 8, 10), Window(2, 0, 8, 10)]
    owned_maps = []
    for core, win in zip(cores, windows):
        part = whole[win.slices()]
        owned, touching = O.owned_objects(part[None], part[None], win, core, 10, 10)
        assert touching == 0  # no owned object reaches the window's inner edge
        full = np.zeros_like(whole)
        full[win.slices()] = owned[0]
        owned_maps.append(full)
    a, b = owned_maps
    assert a[3, 1] == 1 and a[6, 5] == 0 and a[0, 7] == 1    # X and Z
    assert b[3, 1] == 0 and b[6, 5] == 1                     # Y, not X (seen in its halo)
    assert not (a & b).any() and np.array_equal(a | b, whole)
    one, grid = whole[None], Window(0, 0, 10, 10)
    assert O.owned_objects(one, one, grid, grid, 10, 10)[0] is one
    # a window grown to the whole grid around a smaller core: only the core's objects
    owned, touching = O.owned_objects(one, one, grid, cores[0], 10, 10)
    assert np.array_equal(owned[0], a) and touching == 0


def test_an_owned_object_cut_by_the_window_is_counted():
    whole = _three_objects()
    win, core = Window(0, 0, 5, 10), Window(0, 0, 5, 10)   # no halo: X is cut at row 4
    part = whole[win.slices()]
    owned, touching = O.owned_objects(part[None], part[None], win, core, 10, 10)
    assert touching == 1 and owned[0, 3, 1] == 1
    # without a halo the region below cannot see X's first pixel: it keeps X's part and
    # counts it as cut too (the caller then grows the halo until nothing is cut)
    win = core = Window(5, 0, 5, 10)
    part = whole[win.slices()]
    owned, touching = O.owned_objects(part[None], part[None], win, core, 10, 10)
    assert touching == 1 and owned[0, 0, 1] == 1 and owned[0, 1, 5] == 1


def test_a_window_gives_the_whole_grid_s_polygons():
    card = load_card(DEFAULT_MODEL)
    fg = np.zeros((40, 40), np.float32)
    fg[22:32, 12:30] = 0.8                     # an object of 10 x 18 px: 1.8 m²
    cmap = (fg > 0.5).astype(np.uint8)[None]  # one class family
    probs = _probs(fg)
    _, whole = O.polygons(cmap, probs, card, OPTS, T, Window(0, 0, 40, 40), 40, 40)
    win = Window(20, 10, 20, 25)
    _, part = O.polygons(cmap[(slice(None),) + win.slices()], probs[(slice(None),) + win.slices()], card, OPTS,
                         T, win, 40, 40)
    assert len(whole) == len(part) == 1
    assert part[0].geometry.equals(whole[0].geometry)
    want = box(254000 + 1.2, 3601000 - 3.2, 254000 + 3.0, 3601000 - 2.2)
    assert whole[0].geometry.symmetric_difference(want).area < 1e-9
    assert whole[0].area_m2 == pytest.approx(1.8) and whole[0].score == pytest.approx(0.8)
    # a minimum score above the object's mean probability filters it out
    kept, dets = O.polygons(cmap, probs, card, Options(0.5, 0.0, 0.0, 0.0, min_score=0.85), T,
                            Window(0, 0, 40, 40), 40, 40)
    assert dets == [] and not kept.any()


def test_features_carry_the_result_fields_in_the_raster_s_crs():
    card = load_card(DEFAULT_MODEL)
    det = Detection(box(254000.12345, 3600990, 254002, 3600992.5), 1, 0.912345, 4.75,
                    agreement=0.666666)
    f, = O.features([det], card)
    assert shapely.from_wkt(f.pop("wkt")).equals_exact(
        box(254000.123, 3600990, 254002, 3600992.5), 1e-9)  # millimetres
    assert f == {"class": "photovoltaic", "class_id": 1, "score": 0.9123, "agreement": 0.6667,
                 "area_m2": 4.75, "model": card.id, "model_version": card.version}
    assert set(f) == set(RESULT_FIELD_NAMES) - {"detected_at"}
    utm = _grid(40, 40)
    assert O.output_crs(utm) == utm.crs_wkt and O.wkt_precision(utm.crs_wkt) == 3
    assert O.to_source_crs([det], utm) == [det]
    wgs84 = _grid(40, 40, source_crs_wkt=CRS.from_epsg(4326).to_wkt())
    assert O.output_crs(wgs84) == wgs84.source_crs_wkt
    assert O.wkt_precision(O.output_crs(wgs84)) == 9
    g, = O.features([det], card, wgs84)
    lon, lat = shapely.from_wkt(g["wkt"]).centroid.coords[0]
    assert 119.5 < lon < 121.5 and 32 < lat < 33.5      # UTM 51N, 254 km east, 3601 km north
    decimals = [len(c.split(".")[1]) for c in re.findall(r"\d+\.\d+", g["wkt"])]
    assert max(decimals) > 3 and max(decimals) <= 9     # about 0.1 mm in degrees
    assert g["area_m2"] == 4.75  # ground square metres, whatever the output CRS


#: No minimum sizes: every thresholded pixel is kept.
OPTS0 = Options(threshold=0.5, min_area_m2=0.0, max_hole_m2=0.0, simplify_m=0.0)


def _card(outputs=None) -> ModelCard:
    d = {"id": "m", "version": "1", "bands": 3, "gsd_m": 0.1, "tile_size": 64,
         "overlap": 0, "threshold": 0.5, "min_area_m2": 0.0, "simplify_m": 0.0,
         "classes": [{"id": 1, "name": "road"}, {"id": 2, "name": "bridge"}],
         "normalize": {"mean": [0, 0, 0], "std": [1, 1, 1]}}
    if outputs:
        d.update(format="deepness", outputs=outputs)
    else:
        d.update(architecture="Unet", encoder="e")
    return ModelCard.from_dict(d)


def test_families_keep_objects_that_overlap_another_familys():
    probs = np.zeros((3, 8, 8), np.float32)
    probs[1, 2:5, 2:5] = 0.9  # a road ...
    probs[2, 3:6, 3:6] = 0.8  # ... and a bridge over part of it
    probs[0] = 1 - np.maximum(probs[1], probs[2])
    valid = np.ones((8, 8), bool)
    two = _card([{"index": 0, "activation": "softmax", "classes": [1]},
                 {"index": 1, "activation": "softmax", "classes": [2]}])
    raw, cleaned = O.class_maps(probs, valid, two, OPTS0, T)
    assert cleaned.shape == (2, 8, 8)
    assert (cleaned[0] == 1).sum() == 9 and (cleaned[1] == 2).sum() == 9
    _, dets = O.polygons(cleaned, probs, two, OPTS0, T, Window(0, 0, 8, 8), 8, 8)
    assert sorted((d.class_id, round(d.area_m2, 4)) for d in dets) == [(1, 0.09), (2, 0.09)]
    # one family (a model Ortholens trained): one class per pixel, the best
    _, one = O.class_maps(probs, valid, _card(), OPTS0, T)
    assert one.shape == (1, 8, 8) and (one[0] == 1).sum() == 9 and (one[0] == 2).sum() == 5
    assert O.merged(cleaned)[4, 4] == 1 and O.merged(cleaned)[5, 5] == 2


def test_a_window_grown_to_the_whole_grid_keeps_only_its_cores_objects():
    cmap = np.zeros((1, 8, 8), np.uint8)
    cmap[0, 1, 1] = cmap[0, 6, 6] = 1  # one object in each half
    whole = Window(0, 0, 8, 8)
    top = Window(0, 0, 4, 8)
    owned, touching = O.owned_objects(cmap, cmap, whole, top, 8, 8)
    assert owned[0, 1, 1] == 1 and owned[0, 6, 6] == 0 and touching == 0
    owned, _ = O.owned_objects(cmap, cmap, whole, whole, 8, 8)
    assert (owned == cmap).all()


def test_features_carry_the_uncertainty_of_the_threshold_they_were_found_at():
    card = load_card(DEFAULT_MODEL)
    det = Detection(box(0, 0, 2, 2), 1, 0.75, 4.0, agreement=0.5)
    f, = O.features([det], card, threshold=0.5)
    assert f["uncertainty"] == pytest.approx(0.5)  # a single model: the margin only
    ens = ensemble_card(members=[{"id": DEFAULT_MODEL, "weight": 1.0},
                                 {"id": DEFAULT_MODEL, "weight": 1.0}])
    g, = O.features([det], ens, threshold=0.5)
    assert g["uncertainty"] == 1.0  # the members split: as uncertain as can be


def test_candidates_are_the_relaxed_objects_that_meet_no_detection():
    card = load_card(DEFAULT_MODEL)
    fg = np.zeros((40, 40), np.float32)
    fg[2:20, 2:20] = 0.9     # a detection, with a rim between the low and the threshold
    fg[1, 1:21] = 0.3
    fg[25:37, 25:37] = 0.35  # a candidate miss
    fg[25:37, 2:14] = 0.1    # below the low threshold: nothing
    probs = np.stack([1 - fg, fg]).astype(np.float32)
    valid = np.ones((40, 40), bool)
    opts = Options(0.5, 0.5, 0.0, 0.0)
    whole = Window(0, 0, 40, 40)
    _, cleaned = O.class_maps(probs, valid, card, opts, T)
    kept, dets = O.polygons(cleaned, probs, card, opts, T, whole, 40, 40)
    cands = O.candidate_objects(probs, valid, kept, card, opts, T, whole, whole, 40, 40, 0.2)
    assert len(dets) == 1 and len(cands) == 1
    c = cands[0]
    assert c.score == pytest.approx(0.35) and c.area_m2 == pytest.approx(1.44)
    f, = O.features(cands, card, threshold=0.5)
    assert f["uncertainty"] == pytest.approx(0.7)
