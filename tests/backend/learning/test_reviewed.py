"""The reviewed areas of a retrain: which are held out."""

from __future__ import annotations


def test_split_areas_holds_out_whole_groups_or_a_strip():
    from backend.learning.reviewed import ReviewedPart, split_areas
    crs = "EPSG:32651"
    # three sites: two tiles side by side, and two lone tiles far away
    bounds = [(crs, (0, 0, 25, 25)), (crs, (25, 0, 50, 25)), (crs, (1000, 0, 1025, 25)),
              (crs, (5000, 0, 5025, 25))]
    areas = [ReviewedPart(i, {"kind": "file", "path": f"/t{i}.tif"}) for i in range(4)]
    out = split_areas(areas, bounds, 0.25)
    held = [a.index for a in out if a.holdout]
    assert held == [2]  # the smallest group first, until a quarter is held out
    assert out[0].holdout is False and out[1].holdout is False  # neighbours stay together
    # one area: a strip at the bottom (taller than wide), 5 m gap, parts disjoint
    out = split_areas([ReviewedPart(0, {"kind": "file", "path": "/a.tif"}, [0, 0, 100, 200])],
                      [(crs, (0, 0, 100, 200))], 0.25)
    train, hold = [a for a in out if not a.holdout], [a for a in out if a.holdout]
    assert hold[0].extent == [0, 0, 100, 50] and train[0].extent == [0, 55, 100, 200]
    # the user's own choice wins
    areas = [ReviewedPart(0, {}, holdout=None), ReviewedPart(1, {}, holdout=True)]
    out = split_areas(areas, [(crs, (0, 0, 10, 10)), (crs, (10, 0, 20, 10))])
    assert [a.holdout for a in out] == [False, True]


def test_whole_extents_merge_the_parts_of_a_split_area():
    """A version's area is built from the reviewed areas as given, not from the held-out
    strip and the rest as two extents."""
    from types import SimpleNamespace as NS
    from backend.learning.reviewed import whole_extents
    crs = "EPSG:32651"

    def part(index, bounds):
        return NS(reviewed=NS(index=index), bounds=bounds, grid=NS(crs_wkt=crs))
    parts = [part(0, (0, 55, 100, 200)), part(0, (0, 0, 100, 50)), part(1, (500, 0, 600, 80))]
    assert whole_extents(parts) == [((0, 0, 100, 200), crs), ((500, 0, 600, 80), crs)]
