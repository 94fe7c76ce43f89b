"""The class maps of recent detections: kept per model, raster, grid and options, found
again only for a grid on the same pixels, and reused by a retrain of the area instead of
running the model there again."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine

from backend.inference import recent
from backend.inference.pipeline import Options
from tests.support import DEFAULT_MODEL, VIENNA, FakePredictor, needs_real


@pytest.fixture(autouse=True)
def _fresh():
    recent.forget()
    yield
    recent.forget()


def _grid(x0: float, y1: float, w: int, h: int, gsd: float = 0.1):
    return SimpleNamespace(transform=Affine(gsd, 0.0, x0, 0.0, -gsd, y1), width=w, height=h,
                           crs_wkt="EPSG:31256", bands=[1, 2, 3], stretch=None)


def _card(tmp_path):
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"w")
    return SimpleNamespace(id="m", version="1.0.0", weights_path=weights)


def test_a_kept_map_is_found_only_on_the_same_pixels_model_raster_and_options(tmp_path):
    raster = tmp_path / "ortho.tif"
    raster.write_bytes(b"r")
    card, pred = _card(tmp_path), SimpleNamespace(graph="model.onnx", device="cpu")
    opts = Options(threshold=0.5, min_area_m2=2.0, max_hole_m2=0.0, simplify_m=0.1)
    src = {"kind": "file", "path": str(raster)}
    grid = _grid(100.0, 200.0, 60, 40)
    cmap = (np.arange(40 * 60).reshape(40, 60) % 7 == 0).astype(np.uint8)
    valid = np.ones((40, 60), bool)
    valid[:, :3] = False
    recent.remember(recent.map_key(card, pred, src, grid, opts), grid, cmap, valid, 1.2)

    sub = _grid(100.0 + 0.1 * 7, 200.0 - 0.1 * 5, 20, 30)  # rows 5.., cols 7..
    got = recent.find(recent.map_key(card, pred, src, sub, opts), sub)
    assert got is not None and np.array_equal(got.class_map, cmap[5:35, 7:27])
    assert np.array_equal(got.valid, valid[5:35, 7:27])
    assert got.seconds_per_px == pytest.approx(1.2 / cmap.size)
    got.class_map[:] = 9  # a copy: the kept map is unchanged
    again = recent.find(recent.map_key(card, pred, src, sub, opts), sub)
    assert np.array_equal(again.class_map, cmap[5:35, 7:27])
    # the batch size changes no pixel
    bigger = Options(threshold=0.5, min_area_m2=2.0, max_hole_m2=0.0, simplify_m=0.1,
                     batch_size=64)
    assert recent.find(recent.map_key(card, pred, src, sub, bigger), sub) is not None

    misses = {
        "half a pixel off": (_grid(100.05, 199.5, 20, 30), opts, pred, src),
        "beyond the map": (_grid(100.0 + 0.1 * 50, 200.0, 20, 30), opts, pred, src),
        "other threshold": (sub, Options(threshold=0.4, min_area_m2=2.0, max_hole_m2=0.0,
                                         simplify_m=0.1), pred, src),
        "other graph": (sub, opts, SimpleNamespace(graph="model.int8.onnx", device="cpu"),
                        src),
        "other GSD": (_grid(100.0, 200.0, 20, 30, gsd=0.2), opts, pred, src),
    }
    for why, (g, o, p, s) in misses.items():
        assert recent.find(recent.map_key(card, p, s, g, o), g) is None, why
    assert recent.map_key(card, pred, {"kind": "pixels"}, sub, opts) is None
    assert recent.map_key(card, pred, {"kind": "file", "path": str(tmp_path / "no.tif")},
                          sub, opts) is None
    # the raster written again, or the weights: not the same map any more
    st = os.stat(raster)
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert recent.find(recent.map_key(card, pred, src, sub, opts), sub) is None


def test_the_oldest_maps_go_first_beyond_the_memory_bound(tmp_path, monkeypatch):
    raster = tmp_path / "ortho.tif"
    raster.write_bytes(b"r")
    card, pred = _card(tmp_path), SimpleNamespace(graph="g", device="cpu")
    opts = Options(threshold=0.5, min_area_m2=0.0, max_hole_m2=0.0, simplify_m=0.0)
    src = {"kind": "file", "path": str(raster)}
    monkeypatch.setattr(recent, "MAX_MB", 2 * 2 * 500 * 500 / 1e6)  # two maps of 500 x 500
    grids = [_grid(1000.0 * i, 0.0, 500, 500) for i in range(3)]
    for g in grids:
        recent.remember(recent.map_key(card, pred, src, g, opts), g,
                        np.ones((500, 500), np.uint8), np.ones((500, 500), bool), 1.0)
    found = [recent.find(recent.map_key(card, pred, src, g, opts), g) is not None
             for g in grids]
    assert found == [False, True, True]
    assert recent.kept_mb() == pytest.approx(1.0)
    huge = _grid(0.0, 5000.0, 1000, 1000)  # larger than the bound alone: not kept
    recent.remember(recent.map_key(card, pred, src, huge, opts), huge,
                    np.ones((1000, 1000), np.uint8), np.ones((1000, 1000), bool), 1.0)
    assert recent.find(recent.map_key(card, pred, src, huge, opts), huge) is None


@needs_real
def test_a_retrain_after_a_detection_reads_the_detection_s_map_not_the_model():
    """A detection of a real Vienna area, then the corrections of that area: the part
    trained on (on the detection's pixels) takes the detection's class map, the model
    runs only on the held-out part (whose grid is off the detection's pixels), the time
    the model would have taken is credited, and the class map equals the one the model
    gives when run again."""
    from backend.inference.detect import run_detect
    from backend.learning.corrections import build_corrections
    from backend.learning.time_plan import TimedPredictor
    from backend.models.catalog import load_card
    from protocol.params import RetrainParams
    card = load_card(DEFAULT_MODEL)
    x0, y0 = -1700.0, 338500.0
    area = [x0, y0, x0 + 100, y0 + 40]
    src = {"kind": "file", "path": str(VIENNA)}
    params = RetrainParams(src, DEFAULT_MODEL, [], crs="EPSG:31256",
                           reviewed=[{"extent": area}])

    fresh = FakePredictor(card, gain=1.6)
    before = build_corrections(params, [], card, fresh)
    assert recent.kept_mb() == 0.0

    res = run_detect({"type": "detect", "model": DEFAULT_MODEL, "source": src,
                      "extent": area, "extent_crs": "EPSG:31256"}, [],
                     predictor=FakePredictor(card, gain=1.6))
    assert res["features"] and recent.kept_mb() > 0

    again = FakePredictor(card, gain=1.6)
    timed = TimedPredictor(again)
    after = build_corrections(params, [], card, timed)
    assert 0 < sum(again.calls) < sum(fresh.calls)  # the held-out part only
    assert timed.seconds > 0.0
    for a, b in zip(after.train + after.holdout, before.train + before.holdout):
        assert a.pred.shape == b.pred.shape
        assert a.pred.any() and np.array_equal(a.pred, b.pred)
        assert a.stats == b.stats
