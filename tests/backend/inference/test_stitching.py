"""Stitching and extent reprojection at the level where wrong code shows: the ramp
across an overlap, seams of an engine whose output depends on the position in the
tile, and one box asked for in two CRSs."""

from __future__ import annotations

import numpy as np
import pytest

from backend.inference.tiling import Stitcher, TilePlan, ramp

TILE, OVERLAP = 64, 32


def test_constant_tiles_blend_along_the_ramp_across_the_overlap():
    """A tile of 0s beside a tile of 1s: across the 32 px overlap the stitched value is
    the right tile's share of the ramp weights (each tile's weight rises over 16 px from
    its inner edge), from about 0.03 to 0.97, with exactly 0 and 1 outside."""
    width = 2 * TILE - OVERLAP
    st = Stitcher(1, TILE, width, TILE, OVERLAP)
    st.add(0, 0, np.zeros((1, TILE, TILE), np.float32))
    st.add(0, TILE - OVERLAP, np.ones((1, TILE, TILE), np.float32))
    row = st.result()[0, TILE // 2]
    left_end, right_start = TILE - OVERLAP, TILE            # the overlap is [32, 64)
    assert np.all(row[:left_end] == 0) and np.all(row[right_start:] == 1)
    n = OVERLAP // 2
    w_right = ramp(TILE, OVERLAP, False, True)[:OVERLAP]      # the right tile's left edge
    w_left = ramp(TILE, OVERLAP, True, False)[-OVERLAP:]      # the left tile's right edge
    expected = w_right / (w_right + w_left)
    assert np.allclose(row[left_end:right_start], expected, atol=1e-6)
    assert row[left_end] < 0.05 and row[right_start - 1] > 0.95
    assert np.all(np.diff(row[left_end:right_start]) > 0)
    assert 0.4 < row[left_end + n] < 0.6
    assert row[left_end:right_start].max() < 1 and row[left_end:right_start].min() >= 0


def test_position_dependent_tiles_have_no_seams():
    """An engine whose output is a ramp over the tile (as a model with a border effect
    would give) stitched over a grid: with feathering, the jump between neighbouring
    pixels stays far below the raw tile's jump at its edges."""
    h = w = 200
    ramp_tile = np.tile(np.linspace(0.0, 1.0, TILE, dtype=np.float32), (TILE, 1))[None]
    st = Stitcher(1, h, w, TILE, OVERLAP)
    for r, c in TilePlan(TILE, TILE, OVERLAP, False).offsets(h, w):
        st.add(r, c, ramp_tile)
    out = st.result()[0]
    raw_edge_jump = 1.0          # where one unblended tile ends and the next begins
    jumps = np.abs(np.diff(out, axis=1))
    assert jumps.max() < 0.1 * raw_edge_jump, jumps.max()
    # without feathering (uniform weights) the same tiles leave seams
    hard = np.zeros((h, w), np.float32)
    for r, c in TilePlan(TILE, TILE, OVERLAP, False).offsets(h, w):
        hard[r:r + TILE, c:c + TILE] = ramp_tile[0]
    assert np.abs(np.diff(hard, axis=1)).max() > 0.4


def test_the_same_box_in_two_crss_gives_the_same_grid():
    """A box on the Vienna scene asked for in its own CRS (EPSG:31256) and as its
    corners in WGS 84: the planned grids start within 1 m of each other and cover the
    same ground (a shifted reprojection would move the origin by the shift)."""
    import rasterio
    from rasterio.warp import transform_bounds

    from backend.config import vienna_scene
    from backend.inference.grid import plan_grid

    path = vienna_scene()
    if not path.is_file():
        pytest.fail(f"real orthophoto missing: {path} (set ORTHOLENS_DATA)")
    box = [-1700.0, 338500.0, -1640.0, 338560.0]
    with rasterio.open(path) as ds:
        g1 = plan_grid(ds, box, None, 0.1, 3)
        wgs = transform_bounds("EPSG:31256", "EPSG:4326", *box)
        g2 = plan_grid(ds, list(wgs), "EPSG:4326", 0.1, 3)
    assert abs(g1.transform.c - g2.transform.c) < 1.0
    assert abs(g1.transform.f - g2.transform.f) < 1.0
    assert abs(g1.width - g2.width) <= 10 and abs(g1.height - g2.height) <= 10
