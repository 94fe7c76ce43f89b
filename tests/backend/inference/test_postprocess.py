"""Post-processing: holes and minimum areas in square metres at GSDs other than 1 m,
object filters and outline regularisation."""

import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import Polygon, box

from backend.inference.postprocess import (clean_masks, filter_objects, orthogonalize,
                                           polygonize)


def _probs(cmap: np.ndarray, p_fg: np.ndarray) -> np.ndarray:
    """(2, H, W) probabilities with foreground probability ``p_fg`` on ``cmap == 1``."""
    fg = np.where(cmap == 1, p_fg, 0.05).astype(np.float32)
    return np.stack([1 - fg, fg])


def test_filters_drop_ragged_and_unsure_objects_and_keep_compact_ones():
    cmap = np.zeros((60, 60), np.uint8)
    cmap[5:15, 5:25] = 1                      # compact rectangle, solidity 1
    for i in range(12):                       # a staircase sliver, solidity about 0.5
        cmap[30 + i, 5 + 2 * i:8 + 2 * i] = 1
    cmap[45:55, 40:50] = 1                    # compact but unsure
    p = np.full(cmap.shape, 0.95, np.float32)
    p[45:55, 40:50] = 0.7
    probs = _probs(cmap, p)

    assert filter_objects(cmap, probs, 1) is cmap
    solid = filter_objects(cmap, probs, 1, min_solidity=0.8)
    assert solid[5:15, 5:25].all() and solid[45:55, 40:50].all()
    assert not solid[30:42].any()
    sure = filter_objects(cmap, probs, 1, min_score=0.8)
    assert sure[5:15, 5:25].all() and sure[30:42].sum() == cmap[30:42].sum()
    assert not sure[45:55, 40:50].any()
    both = filter_objects(cmap, probs, 1, min_solidity=0.8, min_score=0.8)
    assert both.sum() == 200 and both[5:15, 5:25].all()


def test_filters_touch_only_the_class_they_judge():
    cmap = np.zeros((20, 20), np.uint8)
    cmap[2:8, 2:8] = 1
    cmap[10:18, 10:18] = 2
    probs = np.zeros((3, 20, 20), np.float32)
    probs[1][cmap == 1] = 0.6
    probs[2][cmap == 2] = 0.95
    probs[0] = 1 - probs[1] - probs[2]
    out = filter_objects(cmap, probs, 2, min_score=0.8)
    assert not (out == 1).any() and (out == 2).sum() == 64


@pytest.mark.parametrize("angle", [0, 17, 45])
def test_rectangles_keep_the_outline_area_and_centre(angle):
    stairs = Polygon([(0, 0), (10, 0), (10, 4), (9.5, 4), (9.5, 4.5), (0, 4.5)])
    stairs = shapely.affinity.rotate(stairs, angle, origin=(0, 0))
    rect = orthogonalize(stairs, 0.85)
    assert len(rect.exterior.coords) == 5
    assert rect.area == pytest.approx(stairs.area, rel=1e-9)
    assert rect.centroid.distance(stairs.centroid) < 0.1
    assert stairs.intersection(rect).area / stairs.union(rect).area > 0.95


def test_shapes_far_from_a_rectangle_stay_as_traced():
    ell = Polygon([(0, 0), (10, 0), (10, 2), (2, 2), (2, 10), (0, 10)])
    assert orthogonalize(ell, 0.85) is ell


# ----------------------------------------------------------------------------- sizes in m²

def _pixel_box(t: Affine, r0: int, c0: int, r1: int, c1: int):
    """The ground rectangle (shapely) of pixel rows ``r0..r1-1``, columns ``c0..c1-1``
    of a north-up grid with transform ``t``."""
    x0, x1 = t.c + t.a * c0, t.c + t.a * c1
    y0, y1 = t.f + t.e * r0, t.f + t.e * r1
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _probs_of(cmap: np.ndarray) -> np.ndarray:
    return _probs(cmap, np.full(cmap.shape, 0.9, np.float32))


#: 0.25 m pixels in UTM 51N: one pixel is 0.0625 m².
T25 = Affine(0.25, 0, 254000, 0, -0.25, 3601000)


def test_holes_below_the_limit_in_square_metres_are_filled_and_larger_ones_kept():
    """A 10 m x 5 m array (40 x 20 px of 0.25 m) with five holes of 0.25, 0.4375,
    0.5, 0.5625 and 4 m²; holes below 0.5 m² are filled: the polygon is the array minus
    the three others, as shapely computes it from the holes' ground rectangles."""
    max_hole_m2 = 0.5
    px_m2 = abs(T25.a * T25.e)
    cmap = np.zeros((30, 50), np.uint8)
    cmap[5:25, 5:45] = 1
    holes = [(8, 8, 10, 10), (8, 14, 9, 21), (8, 25, 10, 29), (15, 8, 18, 11),
             (14, 30, 22, 38)]  # 4, 7, 8, 9 and 64 px
    for r0, c0, r1, c1 in holes:
        cmap[r0:r1, c0:c1] = 0
    boxes = [_pixel_box(T25, *h) for h in holes]
    assert [round(b.area, 4) for b in boxes] == [0.25, 0.4375, 0.5, 0.5625, 4.0]
    expected = _pixel_box(T25, 5, 5, 25, 45).difference(
        shapely.union_all([b for b in boxes if b.area >= max_hole_m2]))

    cleaned = clean_masks(cmap, 1, 0, int(round(max_hole_m2 / px_m2)))
    dets = polygonize(cleaned, _probs_of(cleaned), T25, simplify_m=0.0, min_area_m2=2.0)
    assert len(dets) == 1
    g = dets[0].geometry
    assert sorted(Polygon(r).area for r in g.interiors) == [0.5, 0.5625, 4.0]
    assert g.symmetric_difference(expected).area < 1e-9
    assert dets[0].area_m2 == pytest.approx(expected.area) == 50 - 5.0625


@pytest.mark.parametrize("gsd", [0.25, 2.0])
def test_objects_below_the_minimum_area_in_square_metres_are_dropped(gsd):
    """Rectangles of 5, 7, 8, 9 and 12 pixels with a minimum of 8 pixels' ground area
    (0.5 m² at 0.25 m, 32 m² at 2 m): the polygons are the rectangles of at least that
    many square metres (shapely areas), whether the class map was cleaned in pixels
    first or not."""
    t = Affine(gsd, 0, 254000, 0, -gsd, 3601000)
    min_area_m2 = 8 * gsd * gsd
    cmap = np.zeros((12, 40), np.uint8)
    rects = [(1, 1, 2, 6), (1, 9, 2, 16), (5, 1, 7, 5), (5, 8, 8, 11), (5, 14, 8, 18)]
    for r0, c0, r1, c1 in rects:
        cmap[r0:r1, c0:c1] = 1
    boxes = [_pixel_box(t, *r) for r in rects]
    want = sorted(round(b.area, 6) for b in boxes if b.area >= min_area_m2)
    assert want == sorted(round(n * gsd * gsd, 6) for n in (8, 9, 12))
    raw = polygonize(cmap, _probs_of(cmap), t, simplify_m=0.0, min_area_m2=min_area_m2)
    cleaned = clean_masks(cmap, 1, int(round(min_area_m2 / (gsd * gsd))), 0)
    assert cleaned.sum() == 8 + 9 + 12
    for dets in (raw, polygonize(cleaned, _probs_of(cleaned), t, 0.0, min_area_m2)):
        assert sorted(round(d.area_m2, 6) for d in dets) == want
        for d in dets:
            assert any(d.geometry.symmetric_difference(b).area < 1e-9 for b in boxes)
