"""backend.inference.batch.regions: a batch grid cut into regions that partition it,
the plan stored with a job (and the grid read back from it), and a region's result as
plain data (region-by-region detection equal to one of the extent:
tests/backend/daemon/test_batch_runner.py)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from backend.inference.batch.regions import (RegionGrid, RegionResult, grid_from_plan,
                                             grid_to_plan, make_plan)
from backend.inference.grid import Grid, plan_grid
from backend.inference.raster import open_source
from backend.models.catalog import load_card
from protocol.params import BatchParams, DetectParams, FileSource
from protocol.window import Window
from tests.support import DEFAULT_MODEL, write_raster


def test_regions_partition_the_grid_in_raster_order():
    g = RegionGrid(height=250, width=330, region_px=100)
    assert (g.rows, g.cols, len(g)) == (3, 4, 12)
    assert g.core(0) == Window(0, 0, 100, 100) and g.core(5) == Window(100, 100, 100, 100)
    assert g.core(11) == Window.from_stops(200, 300, 250, 330)
    hits = np.zeros((250, 330), int)
    for i in range(len(g)):
        hits[g.core(i).slices()] += 1
    assert (hits == 1).all()
    for bad in (-1, 12):
        with pytest.raises(IndexError):
            g.core(bad)
    assert len(RegionGrid(100, 100, 100)) == 1 and len(RegionGrid(101, 1, 100)) == 2


def test_a_plan_is_json_and_gives_its_grid_back():
    grid = Grid(Affine(0.1, 0, 254315.0, 0, -0.1, 3601415.0), 300, 250,
                CRS.from_epsg(32651).to_wkt(), [3, 2, 1], 0.3, ["resampled"],
                source_crs_wkt=CRS.from_epsg(4326).to_wkt(),
                stretch=[(0.0, 1000.0), (5.0, 2000.0), (0.0, 3000.0)],
                stretch_info={"mode": "minmax", "dtype": "uint16"})
    plan = json.loads(json.dumps(grid_to_plan(grid)))
    assert plan["transform"] == [0.1, 0, 254315.0, 0, -0.1, 3601415.0]
    assert grid_from_plan(plan) == grid
    plain = Grid(grid.transform, 10, 20, grid.crs_wkt, [1, 2, 3], 0.1)
    assert grid_from_plan(json.loads(json.dumps(grid_to_plan(plain)))) == plain


def test_a_plan_holds_the_detection_grid_regions_and_halo(tmp_path):
    """The grid of a batch job is the one a detection of the same extent plans."""
    img = np.zeros((3, 250, 330), np.uint8)
    path = write_raster(tmp_path / "small.tif", img, {
        "driver": "GTiff", "width": 330, "height": 250, "crs": "EPSG:32651",
        "transform": Affine(0.1, 0, 254315.0, 0, -0.1, 3601415.0)})
    card = load_card(DEFAULT_MODEL)
    params = BatchParams(DetectParams(FileSource(str(path)), DEFAULT_MODEL),
                         out_path=str(tmp_path / "out.gpkg"), region_px=100, halo_px=16)
    plan = make_plan(params, card)
    with open_source(FileSource(str(path))) as ds:
        assert grid_from_plan(plan) == plan_grid(ds, None, None, card.gsd_m, card.bands)
    assert (plan["width"], plan["height"], plan["n_regions"]) == (330, 250, 12)
    assert (plan["region_px"], plan["halo_px"]) == (100, 16)
    assert plan["max_halo_px"] >= 16
    made = dt.datetime.fromisoformat(plan["detected_at"])
    assert made.tzinfo is not None and abs(
        (dt.datetime.now(dt.timezone.utc) - made).total_seconds()) < 600
    json.dumps(plan)


def test_a_region_result_travels_as_plain_data():
    r = RegionResult(7, [{"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))", "score": 0.5}],
                     tiles_run=4, tiles_cached=2, halo_px=32, truncated=1, seconds=0.25,
                     warnings=["w"], unreadable="t3.tif")
    d = r.to_dict()
    assert d == json.loads(json.dumps(d)) and d["index"] == 7
    assert RegionResult.from_dict(d) == r
    assert RegionResult(0, []).to_dict() == {
        "index": 0, "features": [], "tiles_run": 0, "tiles_cached": 0, "halo_px": 0,
        "truncated": 0, "seconds": 0.0, "warnings": [], "unreadable": "", "empty": False}
