"""backend.reports.change: two detections of the held-out tiles, the later one on the
original tiles and the earlier one on shifted copies with three known edits
(``tools.pv01_inventory.EDITS``: an array covered, half an array covered, an array
pasted onto an empty roof), and hand-checked pairs. Expected areas are computed here
with shapely from the two detections."""

from __future__ import annotations

import pytest
import shapely

from backend.reports.change import compare, match
from backend.reports.job import build_inventory
from protocol.inventory import InventoryParams, VectorLayer
from tools.pv01_inventory import EARLIER_SHIFT_M, EDITS, edit_box_map

from shapes import X0, Y0


def _polys(features):
    return [shapely.from_wkt(f["wkt"]) for f in features]


def _on(box, polys, tile_of, tile):
    """Indices of the polygons detected on ``tile`` that overlap a map box."""
    b = shapely.box(*box)
    return [i for i, g in enumerate(polys)
            if tile_of[i] == tile and g.intersection(b).area > 1.0]


def test_the_known_edits_are_found_between_the_two_dates(heldout, earlier, tmp_path):
    r = build_inventory(InventoryParams(detections=VectorLayer(str(heldout.path)),
                                        earlier=VectorLayer(str(earlier.path)),
                                        out_dir=str(tmp_path)))
    later, before = _polys(heldout.features), _polys(earlier.features)
    by_after = {c.after: c for c in r.changes if c.after is not None}
    removed = [c for c in r.changes if c.status == "removed"]
    tiles = {t.stem: t for t in heldout.tiles}
    dx, dy = EARLIER_SHIFT_M
    for tile, (status, _, _) in EDITS.items():
        box = edit_box_map(tiles[tile])
        if status == "removed":  # in the earlier tiles only, shifted with them
            (i,) = _on((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), before,
                       earlier.tile_of, tile)
            assert [c.before for c in removed] == [i]
            assert removed[0].area_before_m2 == pytest.approx(before[i].area)
            assert removed[0].area_after_m2 == 0.0
            continue
        (j,) = _on(box, later, heldout.tile_of, tile)
        c = by_after[j]
        assert c.status == status, tile
        assert c.area_after_m2 == pytest.approx(later[j].area)
        if status == "new":
            assert c.before is None and c.area_before_m2 == 0.0
        else:  # grown: the earlier detection is the upper part of the array
            assert before[c.before].area < 0.6 * later[j].area
            assert c.area_before_m2 == pytest.approx(before[c.before].area)
            assert c.delta_m2 == pytest.approx(later[j].area - before[c.before].area)
    statuses = [c.status for c in r.changes]
    assert statuses.count("new") == 1 and statuses.count("grown") == 1
    assert statuses.count("removed") == 1 and statuses.count("shrunk") == 0
    assert statuses.count("unchanged") == len(later) - 2 == len(before) - 2
    for c in r.changes:
        if c.status == "unchanged":  # the same pixels, shifted: the same area
            assert abs(c.delta_m2) <= max(0.1 * c.area_before_m2, 1.0)
            assert c.overlap >= 0.5


def test_swapping_the_dates_swaps_the_statuses(heldout, earlier, tmp_path):
    r = build_inventory(InventoryParams(detections=VectorLayer(str(earlier.path)),
                                        earlier=VectorLayer(str(heldout.path)),
                                        out_dir=str(tmp_path)))
    statuses = [c.status for c in r.changes]
    assert (statuses.count("new"), statuses.count("removed"), statuses.count("shrunk"),
            statuses.count("grown")) == (1, 1, 1, 0)


def test_hand_checked_pairs():
    """An array extended (grown), one cut in two (shrunk + new), one moved 0.5 m
    (unchanged), one gone (removed), one small change inside the tolerance."""
    b = [shapely.box(X0, Y0, X0 + 10, Y0 + 2),            # 0: grows to 14 m
         shapely.box(X0, Y0 + 10, X0 + 10, Y0 + 12),      # 1: cut into 6 + 3 m
         shapely.box(X0, Y0 + 20, X0 + 4, Y0 + 22),       # 2: moved 0.5 m east
         shapely.box(X0, Y0 + 30, X0 + 5, Y0 + 32),       # 3: gone
         shapely.box(X0, Y0 + 40, X0 + 20, Y0 + 42)]      # 4: + 1.9 m² (< 10 %)
    a = [shapely.box(X0, Y0, X0 + 14, Y0 + 2),
         shapely.box(X0, Y0 + 10, X0 + 6, Y0 + 12),
         shapely.box(X0 + 7, Y0 + 10, X0 + 10, Y0 + 12),
         shapely.box(X0 + 0.5, Y0 + 20, X0 + 4.5, Y0 + 22),
         shapely.box(X0, Y0 + 40, X0 + 20.95, Y0 + 42)]
    changes = compare(b, a, 0.5, 0.1, 1.0)
    got = [(c.status, c.before, c.after) for c in changes]
    assert got == [("grown", 0, 0), ("shrunk", 1, 1), ("new", None, 2),
                   ("unchanged", 2, 3), ("unchanged", 4, 4), ("removed", 3, None)]
    assert changes[0].delta_m2 == pytest.approx(8.0)
    assert changes[1].delta_m2 == pytest.approx(-8.0)
    assert changes[3].overlap == pytest.approx(3.5 / 4.0)
    # a shift beyond half the array's width leaves no pair: removed and new
    far = [shapely.box(X0 + 2.5, Y0 + 20, X0 + 6.5, Y0 + 22)]
    assert [c.status for c in compare([b[2]], far, 0.5, 0.1, 1.0)] == ["new", "removed"]
    assert match([], a, 0.5) == [] and match(b, [], 0.5) == []
