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
