"""The area of a version taught on one place: what its outline covers, its JSON form
and its description."""

from __future__ import annotations

import json

import pytest

from tests.support import HAVE_TILES, INSIDE, INSIDE_2, OUTSIDE, tile_bounds


def test_area_covers_its_site_and_not_the_next():
    """An area 250 m around one tile covers a tile of the same pv01 site and not one of
    a site a kilometre away; 0 m covers the tile itself but not its neighbour."""
    from backend.models.area import Area, build_area, covers
    if not HAVE_TILES:
        pytest.skip("pv01 held-out tiles missing")
    (b, crs) = tile_bounds(INSIDE)
    s = build_area([b], crs, 250.0)
    assert covers(s, *tile_bounds(INSIDE_2)) and covers(s, b, crs)
    assert not covers(s, *tile_bounds(OUTSIDE))
    # the outline is about (25.6 + 500) m squared with rounded-off corners cut
    assert 0.2 < s.area_km2 < 0.28 and abs(s.reviewed_km2 - 25.6 ** 2 / 1e6) < 1e-5
    tight = build_area([b], crs, 0.0)
    assert covers(tight, b, crs) and not covers(tight, *tile_bounds(INSIDE_2))
    # an extent larger than the area is not covered, even where they overlap
    big = (b[0] - 1000, b[1] - 1000, b[2] + 1000, b[3] + 1000)
    assert not covers(s, big, crs)
    again = Area.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again is not None and covers(again, *tile_bounds(INSIDE_2))
    assert "km² around 32.5228° N, 120.384" in s.describe()
    with pytest.raises(ValueError):
        build_area([], crs)


def test_extents_in_different_crss_make_one_area_in_the_first_ones_crs():
    """Two reviewed extents 100 m apart, the second given in WGS 84: the area is the one
    of both boxes in the first extent's CRS (reviewed km² the sum of the two boxes,
    outline the convex hull of both grown by the margin)."""
    from pyproj import Transformer

    from backend.models.area import area_of_extents, build_area
    utm = "EPSG:32651"
    a = (325000.0, 3560000.0, 325050.0, 3560040.0)          # 50 m x 40 m
    b = (325150.0, 3560000.0, 325180.0, 3560030.0)          # 30 m x 30 m, 100 m east
    to_ll = Transformer.from_crs(utm, "EPSG:4326", always_xy=True)
    (x0, x1), (y0, y1) = to_ll.transform([b[0], b[2]], [b[1], b[3]])
    b_ll = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    area = area_of_extents([(a, utm), (b_ll, "EPSG:4326")], margin_m=10.0)
    assert abs(area.reviewed_km2 - (50 * 40 + 30 * 30) / 1e6) < 0.02 * (2900 / 1e6)
    # the hull of a (grown by 10 m) and b (grown by 10 m): x 324990..325190, y 3559990..3560050
    # minus the corner cut where b is lower; at least the two grown boxes, at most the bbox
    assert (70 * 60 + 50 * 50) / 1e6 < area.area_km2 < (200 * 60) / 1e6
    same = build_area([a, b], utm, 10.0)
    assert abs(area.area_km2 - same.area_km2) < 0.01 * same.area_km2
    assert area_of_extents([(a, utm)], 10.0).reviewed_km2 == pytest.approx(0.002)
    with pytest.raises(ValueError, match="^a scope needs at least one reviewed extent$"):
        area_of_extents([], 10.0)
    with pytest.raises(ValueError, match=r"^the site margin must be >= 0 m, not -1\.0$"):
        area_of_extents([(a, utm)], -1.0)


@pytest.mark.parametrize("margin,step", [(10.0, 2.5), (2.0, 1.0), (0.0, 1.0)])
def test_the_outline_is_the_box_grown_square_with_a_vertex_every_quarter_margin(margin, step):
    """One 50 m x 40 m extent: the outline is the box grown by the margin with square
    corners ((50 + 2m) x (40 + 2m) m exactly), stored in lon/lat with a vertex at least
    every margin / 4 metres (1 m at the least) along its edges, so that it follows the
    metric outline; brought back into the metric CRS (pyproj) every vertex lies on that
    box's boundary, evenly spaced."""
    import numpy as np
    import shapely
    from pyproj import Transformer
    from shapely.geometry import Polygon, box

    from backend.models.area import build_area
    utm = "EPSG:32651"
    a = (325000.0, 3560000.0, 325050.0, 3560040.0)
    s = build_area([a], utm, margin)
    w, h = 50 + 2 * margin, 40 + 2 * margin
    assert s.area_km2 == pytest.approx(w * h / 1e6, rel=1e-9)
    assert s.reviewed_km2 == pytest.approx(2000 / 1e6, rel=1e-9)
    assert s.margin_m == margin
    to_utm = Transformer.from_crs("EPSG:4326", utm, always_xy=True)
    ring = np.array(shapely.from_wkt(s.outline_wkt).exterior.coords)
    x, y = to_utm.transform(ring[:, 0], ring[:, 1])
    grown = box(a[0] - margin, a[1] - margin, a[2] + margin, a[3] + margin)
    assert grown.exterior.distance(shapely.points(x, y)).max() < 1e-6
    assert len(ring) - 1 == 2 * round(w / step) + 2 * round(h / step)
    assert np.hypot(np.diff(x), np.diff(y)) == pytest.approx(step, abs=1e-6)
    assert Polygon(np.c_[x, y]).area == pytest.approx(w * h, rel=1e-9)
