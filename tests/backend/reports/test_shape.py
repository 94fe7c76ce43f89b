"""backend.reports.shape: hand-checked shapes (rectangles at known bearings, an L, a
square, an array missing a module, a rectangle traced on pixels); expected figures come
from the construction of each shape, never from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from backend.reports.shape import IRREGULAR, SQUARE, fold180, rectangle_axes, shape_of
from shapes import X0, Y0, rotated_rectangle

@pytest.mark.parametrize("bearing, expected", [(30.0, 30.0), (150.0, 150.0),
                                               (210.0, 30.0), (0.0, 0.0), (90.0, 90.0),
                                               (179.5, 179.5), (-20.0, 160.0)])
def test_a_rotated_rectangle_gives_its_axis(bearing, expected):
    g = rotated_rectangle(10.0, 4.0, bearing)
    s = shape_of(g, 0.0, 0.8, 1.1)
    assert s.area_m2 == pytest.approx(40.0, abs=1e-6)
    assert (s.length_m, s.width_m) == pytest.approx((10.0, 4.0), abs=1e-6)
    assert s.rectangularity == pytest.approx(1.0, abs=1e-9) and s.flag == ""
    assert s.azimuth_deg == pytest.approx(expected, abs=1e-6) or (
        expected == 0.0 and s.azimuth_deg == pytest.approx(180.0, abs=1e-6))


def test_convergence_turns_a_grid_bearing_into_a_true_one():
    s = shape_of(rotated_rectangle(10.0, 4.0, 30.0), -1.39, 0.8, 1.1)
    assert s.grid_bearing_deg == pytest.approx(30.0, abs=1e-6)
    assert s.azimuth_deg == pytest.approx(28.61, abs=1e-6)
    s = shape_of(rotated_rectangle(10.0, 4.0, 0.5), -1.39, 0.8, 1.1)
    assert s.azimuth_deg == pytest.approx(179.11, abs=1e-6)   # folded, not -0.89


def test_an_l_shape_has_no_azimuth():
    """An L of two arms 1 m wide, 3 m and 2 m long: 4 m² in a 3 x 2 m rectangle."""
    ell = shapely.Polygon([(0, 0), (3, 0), (3, 1), (1, 1), (1, 2), (0, 2)])
    ell = shapely.affinity.translate(ell, X0, Y0)
    s = shape_of(ell, 0.0, 0.8, 1.1)
    assert s.area_m2 == pytest.approx(4.0)
    assert s.rectangularity == pytest.approx(4.0 / 6.0)
    assert s.flag == IRREGULAR and s.azimuth_deg is None
    assert (s.length_m, s.width_m) == pytest.approx((3.0, 2.0))
    # with the limit lowered under its rectangularity it gets the rectangle's axis
    assert shape_of(ell, 0.0, 0.6, 1.1).azimuth_deg == pytest.approx(90.0)


@pytest.mark.parametrize("w, h, flag", [(5.0, 5.0, SQUARE), (5.4, 5.0, SQUARE),
                                        (5.6, 5.0, ""), (6.0, 5.0, "")])
def test_an_almost_square_outline_has_no_azimuth(w, h, flag):
    s = shape_of(shapely.box(X0, Y0, X0 + w, Y0 + h), 0.0, 0.8, 1.1)
    assert s.flag == flag
    assert s.azimuth_deg == (None if flag else pytest.approx(90.0))


def test_an_array_missing_one_module_keeps_its_azimuth():
    """3 rows of 6 modules of 1 x 2 m (grid bearing 0: rows run north), one missing."""
    modules = [shapely.box(X0 + c, Y0 + 2 * r, X0 + c + 1, Y0 + 2 * r + 2)
               for r in range(6) for c in range(3)]
    array = shapely.union_all(modules[1:])
    s = shape_of(array, 0.0, 0.8, 1.1)
    assert s.area_m2 == pytest.approx(34.0)
    assert s.rectangularity == pytest.approx(17.0 / 18.0)
    assert s.azimuth_deg == pytest.approx(0.0, abs=1e-6) or s.azimuth_deg == \
        pytest.approx(180.0, abs=1e-6)


def test_a_rectangle_traced_on_pixels_stays_well_above_the_limit():
    """A 6 x 2 m array at 20° traced on 0.1 m pixels (the union of the pixels whose
    centre it covers), as the model's outlines are: rectangularity >= 0.9, the axis
    within 2°; the justification of the 0.8 limit."""
    g = rotated_rectangle(6.0, 2.0, 20.0)
    x0, y0, x1, y1 = g.bounds
    xs = np.arange(math.floor(x0 * 10) / 10, x1, 0.1)
    ys = np.arange(math.floor(y0 * 10) / 10, y1, 0.1)
    cells = [shapely.box(x, y, x + 0.1, y + 0.1) for x in xs for y in ys
             if g.contains(shapely.Point(x + 0.05, y + 0.05))]
    traced = shapely.union_all(cells)
    s = shape_of(traced, 0.0, 0.8, 1.1)
    assert s.rectangularity >= 0.9
    assert s.azimuth_deg == pytest.approx(20.0, abs=2.0)


def test_fold180_and_degenerate_rectangles():
    for deg, folded in [(0.0, 0.0), (180.0, 0.0), (181.0, 1.0), (-5.0, 175.0),
                        (359.9, 179.9), (540.0, 0.0), (-180.0, 0.0)]:
        assert fold180(deg) == pytest.approx(folded)
    length, width, bearing, area = rectangle_axes(
        shapely.LineString([(X0, Y0), (X0 + 3, Y0 + 3)]))
    assert (width, area) == (0.0, 0.0)
    assert length == pytest.approx(math.hypot(3, 3)) and bearing == pytest.approx(45.0)
