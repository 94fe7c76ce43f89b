"""The one detection pipeline (backend.inference.pipeline) on real data: seamless
stitching, a region's probabilities equal to the whole grid's, and tilings that agree
(a whole detection: tests/backend/inference/test_detect.py).

Real rasters from ../shared/data (ORTHOLENS_DATA): pv01 held-out tiles (never used in
training) and the Vienna 2023 orthophoto (EPSG:31256, 0.3 m, no panels).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from backend.inference import pipeline as PL
from backend.inference.grid import plan_grid
from backend.inference.predictors import get_predictor
from backend.inference.raster import WindowReader
from backend.models.catalog import load_card
from protocol.metrics import compare
from protocol.window import Window
from tests.support import DEFAULT_MODEL, VIENNA, FakePredictor, heldout, predict_vienna


def test_stitching_is_seamless_on_real_raster():
    predictor = FakePredictor(load_card(DEFAULT_MODEL))
    probs, valid, n_tiles, _, image = predict_vienna(
        predictor, [-1700, 338500, -1600, 338570], 3, tile_size=256, overlap=64)
    assert n_tiles > 6  # really tiled, with seams inside the area
    expect = image.astype(np.float32).mean(0) / 255.0
    assert valid.all()
    np.testing.assert_allclose(probs[1], expect, atol=1e-4)


def test_a_region_has_the_whole_grids_probabilities_bit_for_bit():
    """One pipeline: the probabilities of a region's window are those of the whole
    grid at the same pixels, exactly, with the real model and two tilings (the regions
    of a batch job and a detection of the extent share every number)."""
    card = load_card(DEFAULT_MODEL)
    predictor = get_predictor(card)
    opts = PL.Options(threshold=0.5, min_area_m2=0, max_hole_m2=0, simplify_m=0,
                      tile_size=256, overlap=64)
    with rasterio.open(VIENNA) as ds:
        grid = plan_grid(ds, [-1700, 338500, -1600, 338570], None, card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        win = Window(130, 170, 200, 240)
        det = PL.RegionDetector(card, predictor, reader, grid, opts, cache_mb=64)
        part = det.probabilities(win)
        cached_again = det.probabilities(win)
        whole = PL.RegionDetector(card, predictor, reader, grid, opts).probabilities(det.whole)
        reader.close()
    assert whole.tiles > 6 and 0 < part.tiles < whole.tiles
    assert part.probs.shape == (predictor.channels, 200, 240)
    assert np.array_equal(part.probs, whole.probs[(slice(None),) + win.slices()])
    assert np.array_equal(part.valid, whole.valid[win.slices()])
    # the second time every tile comes from the cache, and nothing changes
    assert cached_again.run == 0 and cached_again.cached == part.tiles
    assert np.array_equal(cached_again.probs, part.probs)


@pytest.mark.parametrize("name", ["PV01_325228_1203845", "PV01_325192_1204249"])
def test_tiled_and_untiled_detection_agree_on_heldout_tile(name):
    """No object is cut at tile seams: 2x2 overlapping tiles give the objects of one
    whole tile (the tile seams cross the panels of these held-out tiles)."""
    path = heldout(name)
    card = load_card(DEFAULT_MODEL)
    predictor = get_predictor(card)
    with rasterio.open(path) as ds:
        grid = plan_grid(ds, None, None, card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        tiled, valid, n = PL.predict_grid(reader, grid, predictor, 4, tile_size=192, overlap=96)
        whole, _, n1 = PL.predict_grid(reader, grid, predictor, 4, tile_size=256, overlap=0)
        reader.close()
    assert n == 4 and n1 == 1
    opts = PL.Options.resolve(card)
    cm_t, dets_t = PL.detections_from_probs(tiled, valid, grid, card, opts)
    cm_w, dets_w = PL.detections_from_probs(whole, valid, grid, card, opts)
    assert len(dets_w) >= 1
    assert len(dets_t) == len(dets_w)
    agree = compare(cm_t == 1, cm_w == 1).summary()
    assert agree["pixel_iou"] > 0.9
    assert agree["object_f1"] == 1.0
    # and no two tiled polygons share an edge (an object split in two halves would)
    for i, a in enumerate(dets_t):
        for b in dets_t[i + 1:]:
            assert a.geometry.intersection(b.geometry).length == 0


