"""Post-processing: class maps, holes and minimum areas in square metres at GSDs other
than 1 m, object filters, outline regularisation, and polygons (scores, member
agreement, valid masks, simplification, rotated and sheared grids, windows)."""

import numpy as np
import pytest
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, box

from backend.inference.postprocess import (class_map, clean_masks, enclosed, filter_objects,
                                           label_sums, orthogonalize, polygonize)
from backend.learning.data import list_tiles
from protocol.metrics import components
from tests.support import DEFAULT_MODEL, INSIDE, needs_tiles
from tests.support.common import HAVE_DATA


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


# ----------------------------------------------------------------------------- class maps

def test_class_map_is_the_best_class_where_it_reaches_the_threshold():
    """One row of five pixels (H = 1): background wins, class 1 exactly at the
    threshold, class 2 above class 1, both below, a tie (the lower class id wins)."""
    fg1 = [0.1, 0.5, 0.3, 0.375, 0.4]
    fg2 = [0.1, 0.25, 0.625, 0.25, 0.4]
    probs = np.array([[1 - a - b for a, b in zip(fg1, fg2)], fg1, fg2],
                     np.float32)[:, None, :]
    assert class_map(probs, 0.5).tolist() == [[0, 1, 2, 0, 0]]
    assert class_map(probs, 0.375).tolist() == [[0, 1, 2, 1, 1]]
    # against a pixel-by-pixel reading of the rule
    p = np.random.default_rng(3).dirichlet(np.ones(4), size=(6, 7)).transpose(2, 0, 1)
    want = np.zeros((6, 7), np.uint8)
    for r in range(6):
        for c in range(7):
            k = 1 + int(np.argmax(p[1:, r, c]))
            want[r, c] = k if p[k, r, c] >= 0.3 else 0
    assert np.array_equal(class_map(p, 0.3), want) and want.any() and not want.all()


@pytest.mark.parametrize("shape", [(4, 4), (1, 4, 4), (2, 2, 4, 4)])
def test_class_map_refuses_what_is_not_classes_by_rows_by_columns(shape):
    with pytest.raises(ValueError, match=r"probs must be \(C>=2, H, W\), got"):
        class_map(np.full(shape, 0.5, np.float32), 0.5)


def test_a_minimum_of_one_pixel_keeps_single_pixels_of_every_class():
    """The clicked-object path cleans with a minimum of 1 px: nothing is dropped."""
    cmap = np.zeros((6, 6), np.uint8)
    cmap[1, 1] = cmap[4, 4] = 1
    cmap[1, 4] = 2
    cmap[3:5, 0:2] = 2
    for min_px in (0, 1):
        assert np.array_equal(clean_masks(cmap, 2, min_px, 0), cmap)
    want = np.zeros_like(cmap)
    want[3:5, 0:2] = 2
    assert np.array_equal(clean_masks(cmap, 2, 2, 0), want)


# ------------------------------------------------------------------------- object filters

def _pixels_polygon(mask: np.ndarray, t: Affine = Affine.identity()):
    """The union of the pixel squares of ``mask`` (shapely), mapped through ``t``."""
    rows, cols = np.nonzero(mask)
    g = shapely.union_all([box(c, r, c + 1, r + 1) for r, c in zip(rows, cols)])
    return shapely.affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f])


def test_score_filter_judges_8_connected_objects_and_keeps_one_at_the_limit():
    """Class 2 only (class 1 absent): two 3 x 3 blocks touching by a corner are one
    object (mean of 0.9375 and 0.625: 0.78125), a block at exactly the limit is kept,
    one below it is dropped."""
    cmap = np.zeros((12, 12), np.uint8)
    probs = np.zeros((3, 12, 12), np.float32)
    blocks = [((1, 4), (1, 4), 0.9375), ((4, 7), (4, 7), 0.625),
              ((8, 11), (8, 11), 0.75), ((8, 10), (1, 3), 0.5)]
    for (r0, r1), (c0, c1), p in blocks:
        cmap[r0:r1, c0:c1] = 2
        probs[2, r0:r1, c0:c1] = p
    probs[0] = 1 - probs[2]
    out = filter_objects(cmap, probs, 2, min_score=0.75)
    objects = [cmap * 0, cmap * 0, cmap * 0]
    objects[0][1:7, 1:7] = cmap[1:7, 1:7]            # the two corner-joined blocks
    objects[1][8:11, 8:11] = 2
    objects[2][8:10, 1:3] = 2
    want = np.zeros_like(cmap)
    for o in objects:
        if probs[2][o > 0].mean() >= 0.75:
            want[o > 0] = 2
    assert np.array_equal(out, want) and want[1, 1] == want[6, 6] == want[8, 8] == 2
    assert not want[8, 1]


def test_solidity_filter_drops_ragged_objects_of_its_class_only():
    """Class 1: a staircase (first in raster order), a rectangle (solidity exactly 1)
    and an L (36 / 42); class 2: a rectangle and a staircase. Solidity (pixels over the
    area of the convex hull of their squares) by shapely; the limit is inclusive."""
    cmap = np.zeros((32, 32), np.uint8)
    for i in range(8):
        cmap[1 + i, 1 + 2 * i:4 + 2 * i] = 1
    cmap[12:16, 2:10] = 1
    cmap[20:28, 2:6] = 1
    cmap[26:28, 6:8] = 1
    cmap[12:20, 20:28] = 2
    for i in range(6):
        cmap[22 + i, 14 + 2 * i:17 + 2 * i] = 2
    probs = _probs((cmap > 0).astype(np.uint8), np.full(cmap.shape, 0.9, np.float32))
    probs = np.concatenate([probs, probs[1:]])
    lab, n = ndimage.label(cmap > 0, structure=np.ones((3, 3), bool))
    assert n == 5
    for limit in (1.0, 0.8):
        want = cmap.copy()
        for i in range(1, n + 1):
            o = lab == i
            if o.sum() / _pixels_polygon(o).convex_hull.area < limit:
                want[o] = 0
        out = filter_objects(cmap, probs, 2, min_solidity=limit)
        assert np.array_equal(out, want)
    assert (want == 2).sum() == 64 and (want == 1).sum() == 32 + 36  # at 0.8
    assert not want[1:9].any()


# ----------------------------------------------------------------------------- rectangles

def test_squaring_is_for_single_polygons_at_or_above_the_limit_of_any_size():
    ell = Polygon([(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)])  # 3/4 of a 2 x 2 box
    h = np.sqrt(3) / 2
    # exactly at the limit, and below one square CRS unit (where 0.03 / 0.04 is a hair
    # under 0.75 as floats)
    for scale, limit in ((1.0, 0.75), (0.1, 0.74)):
        g = shapely.affinity.scale(ell, scale, scale, origin=(0, 0))
        sq = orthogonalize(g, limit)
        want = shapely.affinity.scale(box(1 - h, 1 - h, 1 + h, 1 + h), scale, scale,
                                      origin=(0, 0))
        assert sq.symmetric_difference(want).area < 1e-9 * scale ** 2
        assert orthogonalize(g, 0.76) is g
    two = MultiPolygon([box(0, 0, 10, 5), box(10.5, 0, 20, 5)])
    assert orthogonalize(two, 0.5) is two
    flat = Polygon([(0, 0), (1, 0), (2, 0)])
    assert orthogonalize(flat, 0.5) is flat


# ----------------------------------------------------------------------------- polygons

#: 0.1 m pixels in UTM 51N: every object below is smaller than 1 m².
T01 = Affine(0.1, 0, 254000, 0, -0.1, 3601000)


def test_scores_and_agreement_are_each_object_s_own_means():
    """Two class-1 objects (6 px and 1 px) and a class-2 one, three members: an
    object's score is the mean of its class's probability over its pixels, its
    agreement the share of members whose own mean reaches 0.5 (the default), a mean of
    exactly 0.5 included; both by numpy over each object's pixels."""
    cmap = np.zeros((10, 12), np.uint8)
    objects = [(1, np.s_[1:3, 1:4], (0.8, 0.5, 0.25)),    # 2 of 3 members
               (1, np.s_[6:7, 2:3], (0.625, 0.375, 0.25)),  # 1 of 3
               (2, np.s_[5:8, 6:9], (0.375, 0.125, 0.125))]  # none
    rng = np.random.default_rng(5)
    probs = np.zeros((3, 10, 12), np.float32)
    members = np.zeros((3, 2, 10, 12), np.float32)
    masks = []
    for k, sl, votes in objects:
        cmap[sl] = k
        probs[k][sl] = rng.uniform(0.55, 0.95, probs[k][sl].shape)
        members[:, k - 1][(slice(None),) + sl] = np.array(votes, np.float32)[:, None, None]
        members[:, 2 - k][(slice(None),) + sl] = 0.875  # the other class: all agree
        masks.append(cmap == 0)
        masks[-1][:] = False
        masks[-1][sl] = True
    probs[0] = 1 - probs[1] - probs[2]

    dets = polygonize(cmap, probs, T01, 0.0, member_probs=members)
    assert len(dets) == 3
    for (k, _, _), mask in zip(objects, masks):
        d, = [d for d in dets if d.geometry.equals(_pixels_polygon(mask, T01))]
        assert d.class_id == k
        assert d.score == pytest.approx(float(probs[k][mask].mean()), rel=1e-6)
        assert d.agreement == np.mean([members[m, k - 1][mask].mean() >= 0.5
                                       for m in range(3)])
        assert d.area_m2 == pytest.approx(mask.sum() * 0.01)
    assert sorted(d.agreement for d in dets) == [0, 1 / 3, 2 / 3]
    for none in (None, members[:0]):  # one model: every object has its full agreement
        assert [d.agreement for d in polygonize(cmap, probs, T01, 0.0,
                                                member_probs=none)] == [1.0] * 3


def test_only_valid_pixels_make_polygons():
    """Class 1 lies wholly outside the valid columns, class 2 half: one polygon, the
    valid half's pixel squares, scored over them."""
    cmap = np.zeros((10, 10), np.uint8)
    cmap[1:3, 6:9] = 1
    cmap[5:9, 1:7] = 2
    probs = np.zeros((3, 10, 10), np.float32)
    probs[1][cmap == 1] = 0.9
    probs[2][cmap == 2] = np.linspace(0.6, 0.95, 24)
    probs[0] = 1 - probs[1] - probs[2]
    valid = np.zeros((10, 10), bool)
    valid[:, :4] = True
    d, = polygonize(cmap, probs, T01, 0.0, valid=valid)
    want = (cmap == 2) & valid
    assert d.class_id == 2 and d.geometry.equals(_pixels_polygon(want, T01))
    assert d.score == pytest.approx(float(probs[2][want].mean()), rel=1e-6)


def test_an_object_joined_by_a_corner_is_one_valid_polygon_squared_as_one():
    """A 10 x 20 px rectangle with one pixel touching its corner: one object (8-connected),
    a valid geometry covering exactly its pixel squares; squared, one rectangle of the
    same area (its area over its minimum rotated rectangle's is above 0.85)."""
    cmap = np.zeros((16, 28), np.uint8)
    cmap[2:12, 3:23] = 1
    cmap[12, 23] = 1
    probs = _probs_of(cmap)
    d, = polygonize(cmap, probs, T01, 0.0)
    assert d.geometry.is_valid
    assert d.geometry.symmetric_difference(_pixels_polygon(cmap, T01)).area < 1e-12
    assert d.area_m2 == pytest.approx(2.01)
    sq, = polygonize(cmap, probs, T01, 0.0, ortho=True)
    assert sq.geometry.geom_type == "Polygon" and len(sq.geometry.exterior.coords) == 5
    assert sq.geometry.is_valid and sq.area_m2 == pytest.approx(2.01)
    assert sq.geometry.within(d.geometry.minimum_rotated_rectangle)
    g = sq.geometry
    assert g.intersection(d.geometry).area / g.union(d.geometry).area > 0.85


def test_squared_polygons_replace_the_traced_staircase_unsimplified():
    """A staircase rectangle (a 12 x 30 px block with a 1 px step): squared with the
    default limit, a 4-corner rectangle of the traced area, whatever the tolerance."""
    cmap = np.zeros((20, 40), np.uint8)
    cmap[3:15, 5:35] = 1
    cmap[3, 30:35] = 0
    probs = _probs_of(cmap)
    traced, = polygonize(cmap, probs, T01, 0.0)
    for tol in (0.0, 0.05, 0.3):
        sq, = polygonize(cmap, probs, T01, tol, ortho=True)
        assert len(sq.geometry.exterior.coords) == 5
        assert sq.area_m2 == pytest.approx(traced.area_m2) == pytest.approx(3.55)
        r = sq.geometry.minimum_rotated_rectangle
        assert sq.geometry.symmetric_difference(r).area < 1e-9


def test_simplification_stays_within_the_tolerance_and_keeps_thin_objects():
    """A staircase band (12 steps of 2 x 3 px, 0.25 m pixels) and a 1 px line of 27 px:
    simplified at 0.5 m the band has fewer corners and stays within 0.5 m of its pixel
    outline; the line, thinner than the tolerance, is still an object."""
    cmap = np.zeros((20, 40), np.uint8)
    for i in range(12):
        cmap[2 + i, 2 + 2 * i:5 + 2 * i] = 1
    cmap[17, 5:32] = 1
    probs = _probs_of(cmap)
    exact = polygonize(cmap, probs, T25, 0.0)
    simple = polygonize(cmap, probs, T25, 0.5)
    assert len(exact) == len(simple) == 2
    band = _pixels_polygon(cmap[:15], T25)
    (e_band, e_line), (s_band, s_line) = [
        sorted(ds, key=lambda d: -d.geometry.intersection(band).area)
        for ds in (exact, simple)]
    assert e_band.geometry.equals(band)
    assert len(s_band.geometry.exterior.coords) < len(e_band.geometry.exterior.coords) // 2
    assert s_band.geometry.hausdorff_distance(band) <= 0.5 + 1e-9
    assert s_band.geometry.is_valid and s_line.geometry.is_valid
    assert s_line.area_m2 > 0 and s_line.geometry.hausdorff_distance(e_line.geometry) <= 0.5


_C = 0.5 / np.sqrt(2)


@pytest.mark.parametrize("t", [Affine(_C, _C, 254000, _C, -_C, 3601000),       # 45°
                               Affine(0.5, 0.25, 254000, -1.0, -2.0, 3601000)],  # sheared
                         ids=["rotated", "sheared"])
def test_rotated_and_sheared_grids_map_pixel_corners_exactly_in_windows_too(t):
    """An L of pixels polygonized on the whole grid and on a window of it (traced in the
    grid's pixel coordinates): both are its pixel squares mapped through the transform
    (shapely), of area pixels x |determinant|."""
    cmap = np.zeros((12, 14), np.uint8)
    cmap[3:9, 2:5] = 1
    cmap[7:9, 5:10] = 1
    probs = _probs_of(cmap)
    want = _pixels_polygon(cmap, t)
    px_area = abs(t.a * t.e - t.b * t.d)
    assert want.area == pytest.approx(28 * px_area)
    whole, = polygonize(cmap, probs, t, 0.0)
    part, = polygonize(cmap[2:11, 1:12], probs[:, 2:11, 1:12], t, 0.0, pixel_offset=(2, 1))
    for d in (whole, part):
        assert d.geometry.symmetric_difference(want).area < 1e-9 * want.area
        assert d.area_m2 == pytest.approx(want.area)
    assert part.geometry.equals_exact(whole.geometry, 0.0)


def test_a_transform_that_flattens_the_grid_gives_no_polygons():
    cmap = np.zeros((6, 6), np.uint8)
    cmap[1:4, 1:4] = 1
    assert polygonize(cmap, _probs_of(cmap), Affine(0.1, 0, 0, 0, 0, 0), 0.0) == []


def _real_masks():
    """Reference masks of the pv01 held-out tiles and, for dense shapes with holes, their
    complements and the tiles' bright pixels (uint8 (3, H, W) -> bool (H, W))."""
    out = []
    for t in list_tiles("heldout")[:6]:
        img, mask = t.read()
        bright = img.mean(axis=0) > 150
        out += [mask > 0, mask == 0, bright, ~bright]
    return out


@pytest.mark.skipif(not HAVE_DATA, reason="pv01 held-out tiles (ORTHOLENS_DATA) missing")
def test_fast_holes_sums_and_components_equal_scipys_on_real_masks():
    """``enclosed`` is what ``binary_fill_holes`` adds, ``label_sums`` what
    ``ndimage.sum_labels`` sums (bit for bit), and ``components`` labels as
    ``ndimage.label`` with small components dropped, on real masks with many holes."""
    masks = _real_masks()
    assert sum(int(enclosed(m).sum()) for m in masks) > 0  # some holes to find
    for m in masks:
        assert np.array_equal(enclosed(m), ndimage.binary_fill_holes(m) & ~m)
        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        values = np.random.default_rng(n).random(m.shape).astype(np.float32)
        assert np.array_equal(label_sums(values, lab, n),
                              ndimage.sum_labels(values, lab, index=np.arange(1, n + 1)))
        for min_px in (1, 50, 2000):
            got, k = components(m, min_px)
            sizes = np.bincount(lab.ravel())
            keep = np.flatnonzero(sizes >= min_px)
            keep = keep[keep > 0]
            assert k == len(keep) and got.dtype == np.int32
            # same objects, numbered in the same order
            want = np.zeros(n + 1, np.int32)
            want[keep] = np.arange(1, len(keep) + 1)
            assert np.array_equal(got, want[lab])
    assert not enclosed(np.zeros((5, 5), bool)).any()
    assert not enclosed(np.ones((5, 5), bool)).any()


def test_class_map_of_several_classes_is_the_argmax_above_the_threshold():
    """With several classes the best class where its probability reaches the threshold,
    the first of equals, background below it and on NaN; one class: a threshold."""
    rng = np.random.default_rng(3)
    p = rng.random((4, 40, 50)).astype(np.float32)
    p[2, :5] = p[1, :5]  # ties: the first class wins
    p[1:, 10, 10] = np.nan
    p /= np.nansum(p, axis=0)
    for thr in (0.2, 0.35, 0.5):
        fg = np.nan_to_num(p[1:], nan=-1.0)
        best = fg.argmax(axis=0) + 1
        want = np.where(fg.max(axis=0) >= thr, best, 0)
        assert np.array_equal(class_map(p, thr), want)
        two = np.stack([1 - p[1], p[1]])
        assert np.array_equal(class_map(two, thr), (p[1] >= thr).astype(np.uint8))
    assert class_map(p, 0.2)[10, 10] == 0 and class_map(p, 0.2)[:5].max() > 0


@needs_tiles
def test_no_polygon_reaches_past_the_imagery():
    """A held-out tile whose arrays run to its edge: the rectangles that replace their
    outlines would reach up to 0.65 m past the raster; they are cut at its extent, and
    the cut ones still touch it."""
    import rasterio
    from shapely import box, wkt

    from backend.inference.detect import run_detect
    from protocol.params import DetectParams, FileSource
    tile = INSIDE.with_name("PV01_325190_1204243.tif")
    with rasterio.open(tile) as ds:
        extent = box(*ds.bounds)
    res = run_detect(DetectParams(FileSource(str(tile)), DEFAULT_MODEL), [])
    geoms = [wkt.loads(f["wkt"]) for f in res["features"]]
    assert geoms and all(extent.buffer(1e-6).contains(g) for g in geoms)
    assert any(g.intersects(extent.exterior) for g in geoms)  # arrays at the edge
