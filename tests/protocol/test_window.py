"""protocol.window: the Window value, its arithmetic at the edges, and upload windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

import protocol as P
from protocol.window import Window, upload_window_at, upload_windows


def test_stops_shape_and_slices_cut_the_window_out_of_an_array():
    w = Window(2, 3, 4, 5)
    assert (w.row_stop, w.col_stop, w.shape) == (6, 8, (4, 5))
    assert w == Window.from_stops(2, 3, 6, 8)
    a = np.arange(10 * 12).reshape(10, 12)
    assert a[w.slices()].shape == (4, 5)
    assert a[w.slices()][0, 0] == a[2, 3] and a[w.slices()][-1, -1] == a[5, 7]
    bands = np.arange(3 * 10 * 12).reshape(3, 10, 12)
    assert bands[(slice(None),) + w.slices()].shape == (3, 4, 5)


def test_values_are_checked_and_numpy_integers_accepted():
    assert Window(np.int64(1), np.int32(2), np.uint16(3), 4) == Window(1, 2, 3, 4)
    assert type(Window(np.int64(1), 0, 1, 1).row) is int
    assert hash(Window(1, 2, 3, 4)) == hash(Window(1, 2, 3, 4))
    with pytest.raises(ValueError, match="at least 1 x 1"):
        Window(0, 0, 0, 5)
    with pytest.raises(ValueError, match="at least 1 x 1"):
        Window.from_stops(5, 0, 5, 3)           # empty: row_stop == row
    with pytest.raises(ValueError):
        Window.from_stops(0, 4, 2, 3)           # negative width
    with pytest.raises(TypeError):
        Window(0.5, 0, 1, 1)
    with pytest.raises(TypeError, match="must be an integer"):
        Window(True, 0, 1, 1)
    assert Window(-3, -4, 2, 2).row_stop == -1  # a window may lie outside its grid


def test_intersection():
    a = Window(0, 0, 10, 10)
    assert a.intersection(Window(5, 6, 10, 10)) == Window(5, 6, 5, 4)
    assert Window(5, 6, 10, 10).intersection(a) == Window(5, 6, 5, 4)
    assert a.intersection(Window(2, 2, 3, 3)) == Window(2, 2, 3, 3)     # inside
    assert a.intersection(a) == a
    assert a.intersection(Window(-5, -5, 6, 6)) == Window(0, 0, 1, 1)   # one pixel
    # touching edges share no pixel, and disjoint windows none either
    assert a.intersection(Window(10, 0, 5, 5)) is None
    assert a.intersection(Window(0, 10, 5, 5)) is None
    assert a.intersection(Window(20, 20, 1, 1)) is None
    assert a.intersection(Window(3, 12, 1, 1)) is None                  # rows overlap only


def test_grow_is_clipped_at_zero_and_at_the_grid_edge():
    grid_h, grid_w = 100, 80
    assert Window(10, 20, 5, 6).grow(3, grid_h, grid_w) == Window(7, 17, 11, 12)
    assert Window(2, 1, 5, 5).grow(4, grid_h, grid_w) == Window(0, 0, 11, 10)    # at 0
    assert Window(95, 75, 5, 5).grow(4, grid_h, grid_w) == Window(91, 71, 9, 9)  # at edge
    assert Window(0, 0, 100, 80).grow(16, grid_h, grid_w) == Window(0, 0, 100, 80)
    assert Window(10, 10, 5, 5).grow(0, grid_h, grid_w) == Window(10, 10, 5, 5)
    assert Window(10, 10, 5, 5).grow(-2, grid_h, grid_w) == Window(12, 12, 1, 1)
    with pytest.raises(ValueError):
        Window(10, 10, 5, 5).grow(-3, grid_h, grid_w)        # shrunk to nothing
    with pytest.raises(ValueError):
        Window(200, 0, 5, 5).grow(1, grid_h, grid_w)         # wholly outside the grid


def test_wire_form_round_trips_through_json_and_refuses_garbage():
    w = Window(1, 2, 3, 4)
    assert w.to_wire() == {"row": 1, "col": 2, "height": 3, "width": 4}
    assert Window.from_wire(json.loads(json.dumps(w.to_wire()))) == w
    for bad in ({"row": 1, "col": 2, "height": 3}, [1, 2, 3, 4],
                {"row": 1, "col": 2, "height": 3, "width": 4, "x": 0},
                {"row": 1.5, "col": 2, "height": 3, "width": 4},
                {"row": 1, "col": 2, "height": 0, "width": 4},
                {"row": "1", "col": 2, "height": 3, "width": 4}):
        with pytest.raises(P.ProtocolError) as ei:
            Window.from_wire(bad)
        assert ei.value.code == P.E_BAD_REQUEST


def test_upload_windows_cover_the_image_once():
    for w, h, side in [(200, 150, 64), (64, 64, 64), (1, 1, 64), (1025, 3, 1024)]:
        seen = np.zeros((h, w), int)
        for win in upload_windows(w, h, side):
            assert win.row % side == 0 and win.col % side == 0
            assert win.height <= side and win.width <= side
            assert upload_window_at(w, h, side, win.row, win.col) == win
            seen[win.slices()] += 1
        assert (seen == 1).all()
    wins = upload_windows(200, 150, 64)
    assert len(wins) == 12 and wins[3] == Window(0, 192, 64, 8)
    assert wins[-1] == Window(128, 192, 22, 8)
    assert upload_window_at(200, 150, 64, 0, 10) is None      # not on the grid
    assert upload_window_at(200, 150, 64, 192, 0) is None     # below the image
    assert upload_window_at(200, 150, 64, 0, 256) is None     # right of the image
    assert upload_window_at(200, 150, 64, -64, 0) is None     # above the image
    with pytest.raises(ValueError, match="bad upload grid"):
        upload_windows(0, 5, 64)
    with pytest.raises(ValueError, match="bad upload grid"):
        upload_windows(5, 5, 0)
