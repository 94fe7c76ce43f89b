"""Shapes the inventory tests build by hand: rectangles at known bearings in a metre
CRS."""

from __future__ import annotations

import math

import numpy as np
import shapely

X0, Y0 = 258000.0, 3600900.0  # UTM 51N, near the pv01 held-out tiles


def rotated_rectangle(length: float, width: float, bearing_deg: float,
                      cx: float = X0, cy: float = Y0) -> shapely.Polygon:
    """A rectangle whose long side runs at ``bearing_deg`` clockwise from grid north."""
    b = math.radians(bearing_deg)
    u = np.array([math.sin(b), math.cos(b)]) * length / 2   # along the long side
    v = np.array([math.cos(b), -math.sin(b)]) * width / 2   # across it
    c = np.array([cx, cy])
    return shapely.Polygon([c - u - v, c + u - v, c + u + v, c - u + v])
