"""backend.inference.region: the object grown from a click, on synthetic probabilities
and on the shipped model's real probabilities of a pv01 tile, run directly and as the
daemon's ``region`` request."""

from __future__ import annotations

import numpy as np

from backend.inference.region import grow, run_region
from protocol.params import FileSource
from protocol.review import RegionParams
from tests.support import (DEFAULT_MODEL, OUTSIDE, VIENNA, needs_real, needs_tiles,
                           running_server)


def _probs(fg: np.ndarray) -> np.ndarray:
    return np.stack([1 - fg, fg]).astype(np.float32)


def test_grow_keeps_the_object_under_the_click_and_snaps_to_a_near_one():
    fg = np.zeros((20, 20), np.float32)
    fg[2:6, 2:8] = 0.4      # the object clicked, above the relaxed threshold
    fg[3, 4] = 0.9
    fg[10:14, 10:14] = 0.8  # another object
    valid = np.ones_like(fg, bool)
    cmap, seed = grow(_probs(fg), valid, 3, 3, 0.3)  # the core: the peak, grown back
    assert seed == (3, 4) and cmap.sum() == 24 and cmap[2:6, 2:8].all()
    assert not cmap[10:14, 10:14].any()
    cmap, seed = grow(_probs(fg), valid, 8, 5, 0.3, snap_px=3)  # 3 rows below
    assert seed == (5, 5) and cmap.sum() == 24
    cmap, seed = grow(_probs(fg), valid, 17, 2, 0.3, snap_px=3)  # nothing near
    assert seed is None and not cmap.any()
    cmap, seed = grow(_probs(fg), valid, 3, 3, 0.5)  # stricter: only the peak
    assert cmap.sum() == 1
    valid[3, 4] = False  # an invalid pixel is never part of it
    cmap, seed = grow(_probs(fg), valid, 3, 4, 0.3, snap_px=1)
    assert cmap[3, 4] == 0 and cmap.sum() == 23


def test_grow_splits_arrays_side_by_side_at_their_valley():
    """Two arrays merged at the detection's threshold, with a valley of 0.7 between
    them: a click on one outlines that one."""
    fg = np.zeros((12, 30), np.float32)
    fg[2:10, 2:14] = 0.99
    fg[2:10, 14:16] = 0.7   # the gap between them
    fg[2:10, 16:28] = 0.98
    fg[1, 2:28] = 0.35      # the edge, below the threshold
    valid = np.ones_like(fg, bool)
    cmap, seed = grow(_probs(fg), valid, 5, 6, 0.3)
    obj = cmap > 0
    assert obj[2:10, 2:14].all() and obj[1, 2:14].all()
    assert not obj[2:10, 16:].any()  # the core stops at the valley; the other array stays out


def _click():
    import rasterio
    import shapely
    from backend.inference.detect import run_detect
    from protocol.params import DetectParams
    out = run_detect(DetectParams(FileSource(str(OUTSIDE)), model=DEFAULT_MODEL), [])
    panel = shapely.from_wkt(out["features"][0]["wkt"])
    with rasterio.open(OUTSIDE) as ds:
        crs = ds.crs.to_wkt()
    return panel, panel.representative_point(), crs


class _CountingPredictor:
    """A predictor that counts the pixels it is given (``pixels``); everything else is
    the wrapped one's."""

    def __init__(self, predictor):
        self._predictor, self.pixels = predictor, 0

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def predict_raw(self, tiles):
        self.pixels += tiles.shape[0] * tiles.shape[2] * tiles.shape[3]
        return self._predictor.predict_raw(tiles)


@needs_real
def test_a_click_runs_the_model_on_one_window_of_a_large_raster():
    """A click in the 500 m x 500 m Vienna scene (0.3 m, read at the model's 0.1 m):
    the model sees one window of ``REGION_WINDOW_PX`` pixels, not more, which keeps a
    click quick (its seconds: ``build.py bench``, ``click``)."""
    import rasterio
    from backend.inference.predictors import get_predictor
    from backend.models.catalog import load_card
    from protocol.review import REGION_WINDOW_PX
    with rasterio.open(VIENNA) as ds:
        crs = ds.crs.to_wkt()
    counting = _CountingPredictor(get_predictor(load_card(DEFAULT_MODEL)))
    out = run_region(RegionParams(FileSource(str(VIENNA)), DEFAULT_MODEL, -1600.0, 338500.0,
                                  crs), [], predictor=counting)
    assert counting.pixels == REGION_WINDOW_PX ** 2 == out["stats"]["window_px"] ** 2


@needs_tiles
def test_a_click_on_a_panel_grows_its_outline_from_real_probabilities():
    import shapely
    panel, p, crs = _click()
    out = run_region(RegionParams(FileSource(str(OUTSIDE)), DEFAULT_MODEL, p.x, p.y, crs,
                                  threshold=0.5), [])
    f, = out["features"]
    g = shapely.from_wkt(f["wkt"])
    assert g.intersection(panel).area / g.union(panel).area > 0.8
    assert f["class"] == "photovoltaic" and f["score"] > 0.5 and out["stats"]["found"]
    # a click on bare ground far from any panel finds nothing
    away = run_region(RegionParams(FileSource(str(OUTSIDE)), DEFAULT_MODEL,
                                   panel.bounds[0] - 12.0, panel.bounds[3] + 12.0, crs), [])
    assert away["features"] == [] and away["stats"]["seed"] is None


@needs_tiles
def test_the_daemon_answers_a_region_request_with_the_grown_polygon():
    import shapely
    from protocol.client import OrtholensClient
    panel, p, crs = _click()
    with running_server() as (server, _):
        with OrtholensClient(server.endpoint, timeout_s=60) as c:
            out = c.region(RegionParams(FileSource(str(OUTSIDE)), DEFAULT_MODEL, p.x, p.y,
                                        crs))
    assert out["type"] == "result" and out["stats"]["found"]
    g = shapely.from_wkt(out["features"][0]["wkt"])
    assert g.intersection(panel).area / panel.area > 0.8
