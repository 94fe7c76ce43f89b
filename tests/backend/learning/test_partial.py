"""backend.learning.partial: the labels of a partial review, pixel by pixel, on a small
synthetic grid and on a real pv01 tile (through ``build_corrections``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import box

from backend.learning.partial import MARGIN_M, extent_labels, partial_labels
from tests.support import DEFAULT_MODEL, OUTSIDE, VIENNA, FakePredictor, needs_real, needs_tiles


def _centres(grid):
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    t = grid.transform
    return shapely.points(t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e)


def _expected(reviewed, pending, grid, margin):
    """The labels computed another way: from each pixel centre's distance to the
    polygons (shapely), not by burning buffers."""
    pts = _centres(grid)
    inside = lambda g: shapely.contains_xy(g, shapely.get_x(pts), shapely.get_y(pts))  # noqa: E731
    own = np.zeros(pts.shape, bool)
    near = np.zeros(pts.shape, bool)
    dist = np.full(pts.shape, np.inf)
    target = np.zeros(pts.shape, np.uint8)
    for g, c, state in sorted(reviewed, key=lambda r: -r[0].area):
        own |= inside(g)
        d = shapely.distance(pts, g)
        dist = np.minimum(dist, d)
        near |= d <= margin
        if state != "deleted":
            target[inside(g)] = c
    blocked = np.zeros(pts.shape, bool)
    for g in pending:
        blocked |= inside(g)
    labelled = own | (near & ~blocked)
    target[~labelled] = 0
    return target, labelled, dist


def test_partial_labels_on_a_small_grid_pixel_by_pixel():
    grid = SimpleNamespace(transform=Affine(1, 0, 0, 0, -1, 20), height=20, width=20)
    accepted, deleted, pending = box(2, 2, 5, 5), box(12, 12, 14, 14), box(6, 2, 8, 4)
    reviewed = [(accepted, 1, "accepted"), (deleted, 1, "deleted")]
    target, labelled = partial_labels(reviewed, [pending], grid, 2.0)
    want_t, want_l, _ = _expected(reviewed, [pending], grid, 2.0)
    assert np.array_equal(target, want_t) and np.array_equal(labelled, want_l)
    # by hand: the accepted square (rows 15-17, cols 2-4) is the class, nothing else
    assert np.argwhere(target == 1).tolist() == [[r, c] for r in (15, 16, 17) for c in (2, 3, 4)]
    # its margin reaches 2 m out: col 0 and col 6 (centres 0.5 and 6.5 m: 1.5 m away)
    assert labelled[15, 0] and labelled[15, 6] and not labelled[15, 7]
    # the pending square (cols 6-7, rows 16-17) stays unlabelled inside that margin
    assert not labelled[16:18, 6:8].any() and labelled[15, 6]
    # the deleted square is labelled background, with its margin
    assert labelled[6:8, 12:14].all() and not target[6:8, 12:14].any() and labelled[5, 11]
    # far from every reviewed polygon: ignored
    assert not labelled[0, 19] and not labelled[10, 8]
    assert labelled.sum() == want_l.sum() < 0.5 * labelled.size


def test_nothing_reviewed_labels_nothing_and_whole_extent_labels_all_but_deleted():
    grid = SimpleNamespace(transform=Affine(1, 0, 0, 0, -1, 10), height=10, width=10)
    target, labelled = partial_labels([], [box(1, 1, 3, 3)], grid)
    assert not target.any() and not labelled.any()
    t = extent_labels([(box(1, 1, 3, 3), 1, "deleted"), (box(5, 5, 7, 7), 1, None),
                       (box(5, 1, 7, 3), 1, "pending")], grid)
    assert t.sum() == 8 and not t[7:9, 1:3].any() and t[3:5, 5:7].all()


@needs_tiles
def test_a_partial_review_of_a_real_tile_labels_only_what_was_reviewed():
    """pv01 tile: the reference panels as the result layer; the largest accepted, a
    false polygon deleted, the others and one more in the accepted one's margin left
    pending. Every part read (trained on and
    held out) is labelled exactly as :func:`partial_labels` says and as pixel
    distances say (to 1 cm at the margin's edge, where a buffer's arcs are polygons);
    the loss weight is 0 and nothing is judged outside the labelled pixels."""
    import rasterio
    from rasterio import features as rf
    from shapely.geometry import shape

    from backend.learning.corrections import build_corrections
    from backend.models.catalog import load_card
    from protocol.params import RetrainParams
    card = load_card(DEFAULT_MODEL)
    with rasterio.open(str(OUTSIDE).replace(".tif", "_mask.tif")) as m:
        mask, t, crs = m.read(1), m.transform, m.crs.to_wkt()
        b = m.bounds
    panels = sorted((shape(g) for g, v in rf.shapes((mask > 0).astype(np.uint8),
                                                   mask=mask > 0, transform=t)),
                    key=lambda g: -g.area)
    false = box(b.left + 2, b.top - 5, b.left + 4, b.top - 3)
    x0, y0, x1, y1 = panels[0].bounds  # a pending polygon inside the panel's margin
    panels.append(box(x0 + 1.0, y1 + 0.5, x0 + 3.0, y1 + 1.5))
    feats = [{"wkt": panels[0].wkt, "class": "photovoltaic", "review": "accepted"},
             {"wkt": false.wkt, "class": "photovoltaic", "review": "deleted"}]
    feats += [{"wkt": p.wkt, "class": "photovoltaic", "review": "pending"}
              for p in panels[1:]]
    params = RetrainParams({"kind": "file", "path": str(OUTSIDE)}, DEFAULT_MODEL, feats,
                           crs=crs, mode="review")
    corr = build_corrections(params, [], card, FakePredictor(card, gain=0.0))
    reviewed = [(panels[0], 1, "accepted"), (false, 1, "deleted")]
    for part in corr.train + corr.holdout:
        target, labelled = partial_labels(reviewed, panels[1:], part.grid, MARGIN_M)
        labelled &= part.valid
        target[~part.valid] = 0
        assert np.array_equal(part.target, target)
        assert np.array_equal(part.weight > 0, part.scored_mask)
        assert not part.scored_mask[~labelled].any()
        if not part.holdout:  # a held-out part is judged on its own extent only
            assert np.array_equal(part.scored_mask, labelled)
        want_t, want_l, dist = _expected(reviewed, panels[1:], part.grid, MARGIN_M)
        want_l &= part.valid
        off = labelled != want_l
        assert np.all(np.abs(dist[off] - MARGIN_M) < 0.01), dist[off]
        assert np.array_equal(target[~off], want_t[~off])
    parts = corr.train + corr.holdout
    panel_px = sum(int((p.target == 1).sum()) for p in parts)
    assert panel_px > 0
    assert sum(int(p.scored_mask.sum()) for p in parts) < 0.6 * sum(p.valid.size for p in parts)
    # the whole-extent review of the same layer labels every valid pixel
    whole = build_corrections(RetrainParams({"kind": "file", "path": str(OUTSIDE)},
                                            DEFAULT_MODEL, feats, crs=crs), [], card,
                              FakePredictor(card, gain=0.0))
    assert np.array_equal(whole.train[0].weight > 0, whole.train[0].valid)
    assert sum(int((p.target == 1).sum()) for p in whole.train + whole.holdout) > panel_px


@needs_real
def test_a_partial_review_reads_only_the_windows_around_what_was_reviewed():
    """Vienna, a 200 m x 100 m reviewed area with two reviewed squares 100 m apart and
    one pending: two windows of (3 + 2 * 12) m are read, not the area; features of no
    reviewed state give a clear error."""
    from backend.learning.corrections import CONTEXT_TILE_FRACTION, build_corrections
    from backend.learning.partial import WINDOW_CONTEXT_M
    from backend.models.catalog import load_card
    from protocol.errors import CorrectionsError
    from protocol.params import RetrainParams
    card = load_card(DEFAULT_MODEL)
    x0, y0 = -1700.0, 338500.0
    sq = lambda x, y: box(x, y, x + 3, y + 3).wkt  # noqa: E731
    feats = [{"wkt": sq(x0 + 40, y0 + 40), "class": "photovoltaic", "review": "accepted"},
             {"wkt": sq(x0 + 140, y0 + 40), "class": "photovoltaic", "review": "deleted"},
             {"wkt": sq(x0 + 90, y0 + 40), "class": "photovoltaic", "review": "pending"}]
    params = RetrainParams({"kind": "file", "path": str(VIENNA)}, DEFAULT_MODEL, feats,
                           crs="EPSG:31256", mode="review",
                           reviewed=[{"extent": [x0, y0, x0 + 200, y0 + 100]}])
    corr = build_corrections(params, [], card, FakePredictor(card, gain=0.0))
    parts = corr.train + corr.holdout
    side = 3 + 2 * (MARGIN_M + WINDOW_CONTEXT_M)
    assert len(parts) == 2 and sorted(p.holdout for p in parts) == [False, True]
    for p in parts:  # a held-out part is read with its context (corrections.py)
        b = p.bounds
        want = side + (2 * CONTEXT_TILE_FRACTION * card.tile_size * card.gsd_m
                       if p.holdout else 0.0)
        assert b[2] - b[0] == pytest.approx(want, abs=0.2)
        assert b[3] - b[1] == pytest.approx(want, abs=0.2)
    assert sum(p.valid.size for p in parts) < 0.2 * (2000 * 1000)  # the area: 2 Mpx
    with pytest.raises(CorrectionsError, match="no polygon of the layer is reviewed"):
        build_corrections(RetrainParams({"kind": "file", "path": str(VIENNA)}, DEFAULT_MODEL,
                                        feats[2:], crs="EPSG:31256", mode="review",
                                        reviewed=[{"extent": [x0, y0, x0 + 200,
                                                              y0 + 100]}]),
                          [], card, FakePredictor(card, gain=0.0))
