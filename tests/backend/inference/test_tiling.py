"""backend.inference.tiling at exact values: tile starts, tile plans, the blending ramp
and the stitcher's weighted average, each against constants worked out by hand from the
documented rule (stride ``tile - overlap``, last tile flush with the grid edge; weights
``(i + 0.5) / n`` over ``n = overlap // 2`` pixels at every edge not on the grid
border)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from protocol.window import Window
from backend.inference.tiling import (TILE_MULTIPLE, Stitcher, TilePlan, balanced_side,
                                      batches, plan_tiling, positions, ramp, round32)


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("n, expected", [(-5, 32), (0, 32), (1, 32), (31, 32), (32, 32),
                                         (33, 64), (64, 64), (65, 96), (511, 512)])
def test_round32(n, expected):
    assert TILE_MULTIPLE == 32
    assert round32(n) == expected


@pytest.mark.parametrize("length, tile, overlap, expected", [
    (1, 64, 0, [0]),                 # a grid smaller than a tile: one tile
    (64, 64, 32, [0]),               # exactly one tile
    (65, 64, 32, [0, 1]),            # one pixel more: the last tile flush with the edge
    (100, 64, 32, [0, 32, 36]),      # stride 32, then the flush tile
    (128, 64, 32, [0, 32, 64]),      # stride lands on the edge: no duplicate
    (200, 64, 0, [0, 64, 128, 136]),
    (3, 1, 0, [0, 1, 2]),            # one-pixel tiles
    (10, 4, 3, [0, 1, 2, 3, 4, 5, 6]),  # the largest overlap: stride 1
])
def test_positions(length, tile, overlap, expected):
    assert positions(length, tile, overlap) == expected


@pytest.mark.parametrize("length, tile, overlap", [
    (0, 64, 0), (-1, 64, 0), (10, 0, 0), (10, -4, 0), (10, 4, 4), (10, 4, 5), (10, 4, -1)])
def test_positions_refuses_invalid_sizes(length, tile, overlap):
    with pytest.raises(ValueError) as e:
        positions(length, tile, overlap)
    assert str(e.value) == f"invalid tiling: length={length} tile={tile} overlap={overlap}"


# ----------------------------------------------------------------------------- plans

CARD = SimpleNamespace(tile_size=512, overlap=64, shifts=True)


@pytest.mark.parametrize("height, width, kwargs, expected", [
    (100, 60, {}, TilePlan(128, 64, 0, False)),  # inside one tile: its size rounded to 32
    (512, 300, {}, TilePlan(512, 320, 0, False)),  # exactly one tile: no borders to hide
    (300, 512, {}, TilePlan(320, 512, 0, False)),  # the same, one tile wide
    (513, 10, {}, TilePlan(320, 96, 64, True)),  # one pixel more: two rows of 320 px
    (10, 2000, {}, TilePlan(96, 480, 64, True)),  # (2000 - 64) / 448 -> 5 tiles of 480
    (300, 300, {"tile_size": 256}, TilePlan(192, 192, 64, True)),
    (300, 300, {"tile_size": 256, "overlap": 0}, TilePlan(160, 160, 0, True)),  # 0 is a value
    (300, 300, {"tile_size": 256, "overlap": None}, TilePlan(192, 192, 64, True)),
    (200, 200, {"tile_size": 1000}, TilePlan(224, 224, 0, False)),  # capped at the grid
    (1080, 1920, {"tile_size": 1024}, TilePlan(576, 992, 64, True)),  # a screen: 2 x 2
])
def test_plan_tiling(height, width, kwargs, expected):
    assert plan_tiling(CARD, height, width, **kwargs) == expected


@pytest.mark.parametrize("length, max_side, overlap, expected", [
    (1, 512, 64, 96),            # one tile, longer than the overlap
    (1, 512, 31, 32),            # 32 px is already longer than 31 px of overlap
    (20, 512, 63, 64), (100, 512, 63, 128),
    (512, 512, 64, 512), (513, 512, 64, 320), (960, 512, 64, 512), (961, 512, 64, 384),
    (1920, 1024, 64, 992), (1921, 1024, 64, 1024), (5000, 512, 128, 512),
    (5000, 1024, 64, 896)])
def test_balanced_sides_cover_the_axis_with_the_fewest_tiles(length, max_side, overlap,
                                                             expected):
    """As many tiles as sides of ``max_side`` need, each as short as covering allows:
    the tiles of :func:`positions` cover the axis, one tile fewer would not, and a tile
    32 px shorter would need one more."""
    side = balanced_side(length, max_side, overlap)
    assert side == expected and side % 32 == 0 and side <= max_side
    n = len(positions(length, side, overlap))
    starts = positions(length, side, overlap)
    assert starts[0] == 0 and starts[-1] + side >= length
    assert n == len(positions(length, max_side, overlap))
    if side > 32 and length > side:
        assert len(positions(length, side - 32, overlap)) > n


def test_plan_tiling_without_shifts_and_with_numbers_as_strings():
    card = SimpleNamespace(tile_size="256", overlap="32", shifts=0)
    plan = plan_tiling(card, 1000, 1000)
    assert plan == TilePlan(256, 256, 32, False)  # five tiles of 256 cover 1000 px
    assert type(plan.height) is int and type(plan.overlap) is int and plan.shifted is False


def test_tile_plan_shift_axes_and_offsets():
    plain, shifted = TilePlan(64, 64, 32, False), TilePlan(64, 64, 32, True)
    assert (plain.shift, shifted.shift) == ((0, 0), (32, 32))
    assert plain.axes(65, 100) == [([0, 1], [0, 32, 36])]
    assert shifted.axes(65, 100) == [([0, 1], [0, 32, 36]), ([-32, 0, 1], [-32, 0, 32, 36])]
    # row-major, then the shifted tiling, which starts half a tile outside the grid
    assert plain.offsets(65, 100) == [(0, 0), (0, 32), (0, 36), (1, 0), (1, 32), (1, 36)]
    assert shifted.offsets(65, 100) == plain.offsets(65, 100) + [
        (r, c) for r in (-32, 0, 1) for c in (-32, 0, 32, 36)]
    rect = TilePlan(32, 64, 16, True)
    assert rect.shift == (16, 32) and rect.window(3, -2) == Window(3, -2, 32, 64)
    assert rect.axes(40, 100) == [([0, 8], [0, 36]), ([-16, 0, 8], [-32, 16, 36])]


def test_batches():
    assert list(batches([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(batches([1, 2, 3, 4], 4)) == [[1, 2, 3, 4]]
    assert list(batches([], 3)) == []


# ----------------------------------------------------------------------------- ramp

@pytest.mark.parametrize("overlap, at_start, at_end, expected", [
    (4, False, False, [0.25, 0.75, 1, 1, 1, 1, 0.75, 0.25]),
    (4, True, False, [1, 1, 1, 1, 1, 1, 0.75, 0.25]),
    (4, False, True, [0.25, 0.75, 1, 1, 1, 1, 1, 1]),
    (4, True, True, [1] * 8),
    (2, False, False, [0.5, 1, 1, 1, 1, 1, 1, 0.5]),     # n = 1
    (5, False, False, [0.25, 0.75, 1, 1, 1, 1, 0.75, 0.25]),  # n = 5 // 2 = 2
    (1, False, False, [1] * 8),                         # n = 0: no ramp
    (0, False, False, [1] * 8),
    (8, False, False, [0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125]),
])
def test_ramp_weights(overlap, at_start, at_end, expected):
    w = ramp(8, overlap, at_start, at_end)
    assert w.dtype == np.float32 and w.shape == (8,)
    assert w.tolist() == expected


# ----------------------------------------------------------------------------- stitcher

def _blend_two(axis: int) -> np.ndarray:
    """A tile of 0s at offset 0 and a tile of 1s at offset 1 along ``axis`` of a grid of
    9 x 8 pixels (tile 8, overlap 4): the layout ``positions(9, 8, 4) == [0, 1]`` gives."""
    shape = (9, 8) if axis == 0 else (8, 9)
    st = Stitcher(1, *shape, tile=8, overlap=4)
    st.add(0, 0, np.zeros((1, 8, 8), np.float32))
    st.add(*((1, 0) if axis == 0 else (0, 1)), np.ones((1, 8, 8), np.float32))
    out = st.result()
    assert out.dtype == np.float32 and out.shape == (1,) + shape
    return out[0] if axis == 1 else out[0].T


@pytest.mark.parametrize("axis", [0, 1])
def test_two_tiles_blend_with_the_ramp_weights(axis):
    """The first tile touches the grid start (full weight there) and ramps down over its
    last 2 px; the second starts inside the grid (ramps up over its first 2 px) and ends
    on the grid border (full weight). Stitched value = w1 / (w0 + w1)."""
    row = _blend_two(axis)
    expected = [0.0, 0.25 / 1.25, 0.75 / 1.75, 0.5, 0.5, 0.5, 1 / 1.75, 1 / 1.25, 1.0]
    assert np.allclose(row, np.array(expected, np.float32)[None, :], atol=1e-6, rtol=0)


def test_shifted_tile_blends_with_the_plain_one_at_the_grid_start():
    """A plain tile at 0 (full weight at the grid start) and a shifted one at -4: on the
    4 px they share, the plain tile's weights are 1 and the shifted tile's are its ramp
    down, ``[1, 1, 0.75, 0.25]``."""
    st = Stitcher(1, 8, 12, tile=8, overlap=4)
    st.add(0, 0, np.zeros((1, 8, 8), np.float32))
    st.add(0, -4, np.ones((1, 8, 8), np.float32))
    out = st.result()[0]
    expected = [0.5, 0.5, 0.75 / 1.75, 0.25 / 1.25, 0, 0, 0, 0, 0, 0, 0, 0]
    assert np.allclose(out, np.array(expected, np.float32)[None, :], atol=1e-6, rtol=0)


def test_a_lone_tile_is_returned_as_it_is_whatever_its_weights():
    """A tile inside a larger grid has ramped weights on all sides; alone, they cancel:
    its probabilities come back unchanged, and the pixels no tile covers are 0."""
    probs = (np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8) + 1) / 200
    st = Stitcher(2, 20, 20, tile=8, overlap=4)
    st.add(5, 6, probs)
    out = st.result()
    assert out.dtype == np.float32 and out.shape == (2, 20, 20)
    np.testing.assert_allclose(out[:, 5:13, 6:14], probs, rtol=1e-6)
    out[:, 5:13, 6:14] = 0
    assert not out.any()


def test_parts_of_a_tile_outside_the_grid_are_ignored():
    """Tiles hanging over each edge of a 10 x 10 grid: every pixel gets the value of the
    tile pixel that lies on it."""
    base = np.arange(10 * 10, dtype=np.float32).reshape(1, 10, 10)
    for row, col in [(4, 4), (-3, -5), (-2, 6), (5, -1)]:
        tile = np.zeros((1, 8, 8), np.float32)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + 8, 10), min(col + 8, 10)
        tile[:, r0 - row:r1 - row, c0 - col:c1 - col] = base[:, r0:r1, c0:c1]
        st = Stitcher(1, 10, 10, tile=8, overlap=4)
        st.add(row, col, tile)
        out = st.result()
        np.testing.assert_allclose(out[:, r0:r1, c0:c1], base[:, r0:r1, c0:c1], rtol=1e-6)
        assert st.wsum[r0:r1, c0:c1].min() > 0
        out[:, r0:r1, c0:c1] = 0
        assert not out.any(), (row, col)


def test_a_constant_survives_any_tiling():
    """Blending is an average: tiles of one constant stitch to that constant everywhere,
    plain and shifted tilings alike."""
    plan = TilePlan(32, 48, 16, True)
    st = Stitcher(1, 70, 50, plan.shape, plan.overlap)
    for r, c in plan.offsets(70, 50):
        st.add(r, c, np.full((1, 32, 48), 0.3, np.float32))
    np.testing.assert_allclose(st.result(), 0.3, rtol=1e-6)


@pytest.mark.parametrize("height,width,shifts", [(256, 256, False), (600, 1300, False),
                                                  (1500, 700, True), (300, 200, True),
                                                  (1024, 1024, True)])
def test_a_window_gets_the_whole_grids_tiles_in_their_order(height, width, shifts):
    """A region's window is stitched from the whole grid's tiles that meet it, in the
    whole grid's order: what makes a batch job's probabilities those of one detection."""
    card = SimpleNamespace(tile_size=512, overlap=128, shifts=shifts)
    plan = plan_tiling(card, height, width)
    whole = plan.offsets(height, width)
    assert plan.intersecting(Window(0, 0, height, width), height, width) == whole
    win = Window(height // 3, width // 4, 100, 150)
    meet = [(r, c) for r, c in whole if r < win.row_stop and r + plan.height > win.row
            and c < win.col_stop and c + plan.width > win.col]
    assert meet and plan.intersecting(win, height, width) == meet
    assert plan.intersecting(Window(height + plan.height, 0, 10, 10), height, width) == []


def test_intersecting_leaves_out_tiles_that_only_touch_the_window():
    """Tiles of 64 px at stride 32 over 200 x 200 px start at 0, 32, 64, 96, 128, 136.
    A window of rows 64..95 and columns 96..127 shares pixels with the tiles at rows 32
    and 64 and columns 64 and 96; the tiles that end at its first row or column (0,
    32) or start just past its last one (96, 128) only touch it."""
    plan = TilePlan(64, 64, 32, False)
    win = Window(64, 96, 32, 32)
    assert plan.intersecting(win, 200, 200) == [(32, 64), (32, 96), (64, 64), (64, 96)]
    # the same from pixel masks: a tile meets the window where both cover a pixel
    inside = np.zeros((200, 200), bool)
    inside[64:96, 96:128] = True
    meet = [(r, c) for r, c in plan.offsets(200, 200)
            if inside[max(r, 0):r + 64, max(c, 0):c + 64].any()]
    assert plan.intersecting(win, 200, 200) == meet


def _tiles(plan, height, width, channels, seed=0):
    """Random probabilities and valid masks for every tile of ``plan``, in run order."""
    rng = np.random.default_rng(seed)
    return [(r, c, rng.random((channels,) + plan.shape, dtype=np.float32),
             rng.random(plan.shape) < 0.7) for r, c in plan.offsets(height, width)]


def test_a_window_stitches_bit_for_bit_as_the_whole_grid():
    """A window away from the grid's origin, fed every tile of the grid (those that miss
    it are ignored), gives exactly the whole grid's probabilities and valid mask there;
    the mask is the union of the tiles' masks, worked out here pixel by pixel."""
    height, width = 70, 90
    plan = TilePlan(32, 48, 16, True)
    tiles = _tiles(plan, height, width, 2)
    whole = Stitcher(2, height, width, plan.shape, plan.overlap)
    win = Window(13, 21, 30, 40)
    part = Stitcher(2, height, width, plan.shape, plan.overlap, window=win)
    union = np.zeros((height, width), bool)
    for r, c, probs, valid in tiles:
        whole.add(r, c, probs, valid)
        part.add(r, c, probs, valid)
        for i in range(plan.height):
            for j in range(plan.width):
                if 0 <= r + i < height and 0 <= c + j < width and valid[i, j]:
                    union[r + i, c + j] = True
    assert np.array_equal(whole.valid, union) and 0 < union.sum() < union.size
    assert part.result().shape == (2, 30, 40)
    assert np.array_equal(part.result(), whole.result()[:, 13:43, 21:61])
    assert np.array_equal(part.valid, union[13:43, 21:61])
    for tile_row, tile_col in [(-40, 0), (0, 100), (13 + 30, 0), (0, 21 + 40 + 48)]:
        part.add(tile_row, tile_col, np.ones((2,) + plan.shape, np.float32))  # misses it
    assert np.array_equal(part.result(), whole.result()[:, 13:43, 21:61])


def test_a_later_tile_does_not_unmark_valid_pixels():
    """Two overlapping tiles, the first valid everywhere, the second nowhere: every
    pixel the first covers stays valid; the second's own pixels are not."""
    st = Stitcher(1, 8, 12, tile=8, overlap=4)
    st.add(0, 0, np.zeros((1, 8, 8), np.float32), np.ones((8, 8), bool))
    st.add(0, 4, np.ones((1, 8, 8), np.float32), np.zeros((8, 8), bool))
    expected = np.zeros((8, 12), bool)
    expected[:, :8] = True
    assert np.array_equal(st.valid, expected)


def test_masked_result_sets_pixels_no_tile_marked_valid_to_background():
    """Three channels; one tile over the left part of a 4 x 10 grid, valid on its first
    3 columns: those keep the tile's probabilities, every other pixel (invalid in the
    tile, or covered by no tile) is background, ``[1, 0, 0]``."""
    probs = np.empty((3, 4, 6), np.float32)
    probs[0], probs[1], probs[2] = 0.2, 0.3, 0.5
    valid = np.zeros((4, 6), bool)
    valid[:, :3] = True
    st = Stitcher(3, 4, 10, tile=(4, 6), overlap=0)
    st.add(0, 0, probs, valid)
    out, mask = st.masked_result()
    assert out.dtype == np.float32 and out.shape == (3, 4, 10)
    expected = np.zeros((3, 4, 10), np.float32)
    expected[0] = 1.0
    expected[:, :, :3] = np.array([0.2, 0.3, 0.5], np.float32)[:, None, None]
    np.testing.assert_array_equal(out, expected)
    assert mask.dtype == bool and np.array_equal(mask, expected[1] > 0)


def test_result_divides_once_and_refuses_tiles_that_would_change_it():
    """The result is divided in place once: a second call returns the same numbers, and
    a tile meeting the window after it is refused rather than blended into a result."""
    plan = TilePlan(32, 32, 8, True)
    st = Stitcher(1, 40, 40, plan.shape, plan.overlap)
    for r, c in [(0, 0), (0, 24), (24, 0), (24, 24)]:
        st.add(r, c, np.full((1, 32, 32), 0.25, np.float32))
    first = st.result().copy()
    np.testing.assert_allclose(first, 0.25, rtol=1e-6)
    assert np.array_equal(st.result(), first)
    with pytest.raises(RuntimeError):
        st.add(0, 0, np.ones((1, 32, 32), np.float32))
    st.add(100, 100, np.ones((1, 32, 32), np.float32))  # misses the grid: ignored
