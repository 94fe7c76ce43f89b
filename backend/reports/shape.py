"""The shape of one installation: its minimum rotated rectangle, long-axis azimuth and
how rectangular it is.

The minimum rotated rectangle is shapely's (``minimum_rotated_rectangle``: the
smallest-area rectangle enclosing the polygon, found over the convex hull's edge
directions). Its long side gives the installation's axis. The grid bearing of that
axis (degrees clockwise from the CRS's grid north) plus the meridian convergence at the
polygon's centroid (``backend.reports.crs.convergence_deg``) is its azimuth from true
north. A rectangle's axis has no direction, so azimuths are folded into [0, 180): an
array running east-west has 90, one running north-south 0.

No azimuth is given (``azimuth_deg`` None) when the axis says nothing about the array:

* ``irregular``: rectangularity (polygon area / rectangle area) below the limit
  (default 0.8, ``protocol.inventory.MIN_RECTANGULARITY``). A rectangle traced on
  pixels keeps about 0.9 or more even when small and rotated; an array missing one
  module of 18 has 0.94; an L of two equal arms 3 and 2 widths long has 0.67, a T or
  a U less: their rectangle's axis is not the modules' axis.
* ``square``: the rectangle's length / width below the limit (default 1.1,
  ``protocol.inventory.MIN_ASPECT``): its long axis flips with a pixel of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import shapely

#: The flags of :attr:`Shape.flag`: the reason there is no azimuth.
IRREGULAR, SQUARE = "irregular", "square"


@dataclass(frozen=True)
class Shape:
    """The shape figures of one polygon.

    Attributes:
        area_m2: polygon area, m² (planar, in the working CRS).
        length_m, width_m: long and short sides of the minimum rotated rectangle, m.
        rectangularity: ``area_m2`` / the rectangle's area, 0..1.
        grid_bearing_deg: the long side's bearing from grid north, degrees clockwise,
            in [0, 180).
        azimuth_deg: the long side's bearing from true north, degrees clockwise, in
            [0, 180); None when ``flag`` is set.
        flag: ``""``, :data:`IRREGULAR` or :data:`SQUARE`.
    """

    area_m2: float
    length_m: float
    width_m: float
    rectangularity: float
    grid_bearing_deg: float
    azimuth_deg: Optional[float]
    flag: str


def fold180(deg: float) -> float:
    """An axis direction in degrees folded into [0, 180) (181 -> 1, -5 -> 175)."""
    out = math.fmod(deg, 180.0)
    out = out + 180.0 if out < 0 else out
    return 0.0 if out >= 180.0 else out


def rectangle_axes(geom: Any) -> Tuple[float, float, float, float]:
    """``(length_m, width_m, grid_bearing_deg, rectangle_area_m2)`` of a polygon's
    minimum rotated rectangle (see the module's docstring); a degenerate rectangle (a
    segment) has width 0. Computed about the geometry's first vertex: map coordinates
    of millions of metres would cost the rectangle its last digits."""
    origin = shapely.get_coordinates(geom)[0]
    rect = shapely.minimum_rotated_rectangle(shapely.transform(geom, lambda c: c - origin))
    coords = list(rect.exterior.coords) if rect.geom_type == "Polygon" else \
        list(rect.coords)
    (x0, y0), (x1, y1) = coords[0], coords[1]
    e1 = (x1 - x0, y1 - y0)
    if len(coords) >= 3:
        x2, y2 = coords[2]
        e2 = (x2 - x1, y2 - y1)
    else:
        e2 = (0.0, 0.0)
    l1, l2 = math.hypot(*e1), math.hypot(*e2)
    (dx, dy), length, width = (e1, l1, l2) if l1 >= l2 else (e2, l2, l1)
    bearing = fold180(math.degrees(math.atan2(dx, dy)))
    return length, width, bearing, length * width


def shape_of(geom: Any, convergence_deg: float, min_rectangularity: float,
             min_aspect: float) -> Shape:
    """The :class:`Shape` of a polygon of a projected metre CRS.

    Args:
        geom: a Polygon or MultiPolygon with an area.
        convergence_deg: the meridian convergence at its centroid (degrees clockwise
            from true north to grid north).
        min_rectangularity: the ``irregular`` limit, 0..1.
        min_aspect: the ``square`` limit, length / width >= 1.
    """
    area = float(geom.area)
    length, width, bearing, rect_area = rectangle_axes(geom)
    rectangularity = min(1.0, area / rect_area) if rect_area > 0 else 0.0
    flag = ""
    if rectangularity < min_rectangularity:
        flag = IRREGULAR
    elif width > 0 and length / width < min_aspect:
        flag = SQUARE
    azimuth = None if flag else fold180(bearing + convergence_deg)
    return Shape(area, length, width, rectangularity, bearing, azimuth, flag)


__all__ = ["IRREGULAR", "SQUARE", "Shape", "fold180", "rectangle_axes", "shape_of"]
