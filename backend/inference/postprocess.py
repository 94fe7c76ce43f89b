"""From fused class probabilities to clean, typed polygons.

Steps (all in pixel space at the model's GSD, then mapped through the affine
transform of the stitched probability grid):

1. class map: ``argmax`` over classes, kept where that class's probability is at least
   ``threshold`` (background otherwise);
2. per class, holes smaller than ``max_hole_px`` are filled and 8-connected components
   smaller than ``min_area_px`` are dropped (:func:`clean_masks`);
3. each remaining component is polygonized with ``rasterio.features.shapes`` (pixel
   edges, exact), simplified with shapely (Douglas-Peucker, ``simplify_m`` metres,
   topology preserved) and given ``score`` = mean class probability over its pixels and
   ``area_m2`` (:func:`polygonize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from affine import Affine
from scipy import ndimage

from protocol.metrics import components


@dataclass
class Detection:
    """One polygon, in the CRS of the transform it was polygonized with.

    Attributes:
        geometry: shapely Polygon or MultiPolygon.
        class_id: 1-based class id of the model card.
        score: mean probability of ``class_id`` over the object's pixels, 0..1.
        area_m2: area in square metres (CRS units must be metres).
        agreement: fraction of ensemble members whose own mean probability of
            ``class_id`` over the object's pixels reaches the threshold (1.0 for a
            single model).
    """

    geometry: object
    class_id: int
    score: float
    area_m2: float
    agreement: float = 1.0


def class_map(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pixel class ids from probabilities.

    Args:
        probs: float (C, H, W), C = 1 + number of classes, channel 0 = background;
            values are probabilities (sum to 1 over C).
        threshold: a pixel is foreground when its best non-background class has a
            probability >= threshold.

    Returns:
        uint8 (H, W): 0 background, k = class k.
    """
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (C>=2, H, W), got {probs.shape}")
    if probs.shape[0] == 2:  # one class: no argmax to take
        return (probs[1] >= threshold).view(np.uint8)
    fg = probs[1:]
    best = np.argmax(fg, axis=0).astype(np.uint8)
    best += 1
    best[~(fg.max(axis=0) >= threshold)] = 0  # NaN is background too
    return best


def clean_masks(cmap: np.ndarray, n_classes: int, min_area_px: int,
                max_hole_px: int) -> np.ndarray:
    """Fill small holes and drop small components, class by class.

    Args:
        cmap: uint8 (H, W) class map from :func:`class_map`.
        n_classes: number of foreground classes.
        min_area_px: components below this many pixels are removed.
        max_hole_px: enclosed background holes below this many pixels are filled.

    Returns:
        uint8 (H, W) cleaned class map.
    """
    out = np.zeros_like(cmap)
    for k in range(1, n_classes + 1):
        m = cmap == k
        if not m.any():
            continue
        if max_hole_px > 0:
            holes = enclosed(m)
            if holes.any():
                hl, nh = components(holes, 1)
                sizes = np.bincount(hl.ravel())
                small = sizes < max_hole_px
                small[0] = False
                m |= small[hl]
        lab, _ = components(m, max(1, min_area_px))
        out[(lab > 0) & (out == 0)] = k
    return out


def enclosed(mask: np.ndarray) -> np.ndarray:
    """The holes of a mask: bool (H, W), the background pixels of ``mask`` (bool (H,
    W)) not 4-connected to the array's edge; what ``scipy.ndimage.binary_fill_holes``
    adds with its default structure, found by one labelling of the background instead
    of its repeated dilation (about 4 times faster on a 25 Mpx grid)."""
    lab, n = ndimage.label(~mask)
    if n == 0:
        return np.zeros_like(mask, bool)
    outside = np.zeros(n + 1, bool)
    for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        outside[edge] = True
    outside[0] = True
    return ~outside[lab]


def label_sums(values: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Per label 1..n the sum of ``values`` (float (H, W)) over its pixels, float64
    (n,); ``lab``: int (H, W) labels, 0 none. The sums of
    ``scipy.ndimage.sum_labels(values, lab, index=arange(1, n + 1))``, bit for bit (the
    same float64 accumulation in the same pixel order), over the labelled pixels only."""
    sel = lab > 0
    return np.bincount(lab[sel], weights=values[sel], minlength=n + 1)[1:n + 1]


def filter_objects(cmap: np.ndarray, probs: np.ndarray, n_classes: int,
                   min_solidity: float = 0.0, min_score: float = 0.0) -> np.ndarray:
    """Drop objects whose shape or confidence is unlike the class's, class by class.

    Panel arrays are compact convex shapes (rectangles, L shapes): on the pv01 train
    masks 99 % of the objects of 1 m² or more have a solidity of 0.86 or more, while
    false detections on light roofs and roof edges are ragged. Both limits are card
    fields chosen by cross-validation (``tools.cv``).

    Args:
        cmap: uint8 (H, W) cleaned class map (:func:`clean_masks`).
        probs: float (C, H, W) probabilities; an object's score is the mean probability
            of its class over its pixels, as :func:`polygonize` reports it.
        n_classes: number of foreground classes.
        min_solidity: objects whose area over the area of their convex hull (both of the
            8-connected pixel outline) is below this are removed (0: keep all).
        min_score: objects whose score is below this are removed (0: keep all).

    Returns:
        uint8 (H, W) class map without the removed objects (``cmap`` itself when both
        limits are 0).
    """
    if min_solidity <= 0 and min_score <= 0:
        return cmap
    from rasterio import features
    from shapely.geometry import shape

    out = cmap.copy()
    for k in range(1, n_classes + 1):
        lab, n = ndimage.label(cmap == k, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        counts = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
        drop = np.zeros(n + 1, bool)
        if min_score > 0:
            drop[1:] |= label_sums(probs[k], lab, n) / counts < min_score
        if min_solidity > 0:
            hulls: Dict[int, list] = {}
            for geom, val in features.shapes(lab.astype(np.int32, copy=False), mask=lab > 0,
                                             connectivity=8):
                hulls.setdefault(int(val), []).append(shape(geom))
            for lid, parts in hulls.items():
                g = parts[0] if len(parts) == 1 else _union(parts)
                hull = g.convex_hull.area
                if hull > 0 and counts[lid - 1] / hull < min_solidity:
                    drop[lid] = True
        out[drop[lab]] = 0
    return out


def polygonize(cmap: np.ndarray, probs: np.ndarray, transform: Affine,
               simplify_m: float, min_area_m2: float = 0.0,
               valid: Optional[np.ndarray] = None,
               member_probs: Optional[np.ndarray] = None,
               threshold: float = 0.5, ortho: bool = False,
               pixel_offset: Optional[Sequence[int]] = None,
               clip: Optional[Sequence[float]] = None) -> List[Detection]:
    """Polygons of the 8-connected components of a cleaned class map.

    Args:
        cmap: uint8 (H, W) cleaned class map.
        probs: float (C, H, W) probabilities (for ``score``).
        transform: affine pixel -> CRS transform of the grid (metres per pixel).
        simplify_m: Douglas-Peucker tolerance in CRS units (metres); 0 keeps pixel
            edges.
        min_area_m2: polygons below this area after simplification are dropped.
        valid: optional bool (H, W) restricting which pixels may produce polygons
            (e.g. the requested extent inside a padded grid).
        member_probs: optional float (M, classes, H, W), each ensemble member's
            probability of each foreground class, for ``agreement``.
        threshold: the probability a member's mean must reach to vote for an object.
        ortho: replace near-rectangular polygons by rectangles (:func:`orthogonalize`).
        pixel_offset: ``(row, col)`` of ``cmap``'s first pixel in a larger grid whose
            transform is ``transform`` (a window of that grid, as the region-by-region batch
            path uses). Outlines are then traced in that grid's pixel coordinates
            (exact integers) and mapped through ``transform`` with the same arithmetic
            as polygonizing the whole grid, so a window gives bit-identical polygons.
        clip: ``(xmin, ymin, xmax, ymax)`` in the transform's CRS, the grid's extent:
            a rectangle or a simplified outline that reaches past it is cut there
            (``shapely.clip_by_rect``), so no polygon covers ground the imagery does
            not show; None: not cut.

    Returns:
        list of :class:`Detection`, in the transform's CRS.
    """
    import shapely
    from shapely.validation import make_valid

    dets: List[Detection] = []
    px_area = abs(transform.a * transform.e - transform.b * transform.d)
    for k in np.unique(cmap):
        if k == 0:
            continue
        m = cmap == k
        if valid is not None:
            m &= valid
        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        sums = label_sums(probs[k], lab, n)
        counts = np.bincount(lab[lab > 0], minlength=n + 1)[1:]
        votes = _votes(lab, idx, counts, member_probs, int(k), threshold)
        for lid, parts in _outlines(lab, transform, pixel_offset).items():
            g = parts[0] if len(parts) == 1 else _union(parts)
            rect = orthogonalize(g) if ortho else g
            if rect is not g:
                g = rect  # a rectangle: nothing to simplify
            elif simplify_m > 0:
                g = g.simplify(simplify_m, preserve_topology=True)
            if clip is not None and not shapely.contains(shapely.box(*clip), g):
                g = shapely.clip_by_rect(g, *clip)
            if not g.is_valid:
                g = make_valid(g)
            area = g.area
            if g.is_empty or area < min_area_m2 or area <= 0:
                continue
            dets.append(Detection(geometry=g, class_id=int(k),
                                  score=float(sums[lid - 1] / max(counts[lid - 1], 1)),
                                  area_m2=float(area if px_area else 0.0),
                                  agreement=float(votes[lid - 1])))
    return dets


def _votes(lab: np.ndarray, idx: np.ndarray, counts: np.ndarray,
           member_probs: Optional[np.ndarray], k: int, threshold: float) -> np.ndarray:
    """Per labelled object, the fraction of ensemble members whose mean probability of
    class ``k`` over its pixels reaches ``threshold`` (float64 (n,); ones without
    members)."""
    if member_probs is None or not len(member_probs):
        return np.ones(len(idx), np.float64)
    means = np.stack([label_sums(mp[k - 1], lab, len(idx))
                      for mp in member_probs]) / np.maximum(counts, 1)
    return (means >= threshold).mean(axis=0)


def _outlines(lab: np.ndarray, transform: Affine, pixel_offset: Optional[Sequence[int]]
              ) -> Dict[int, list]:
    """``{label: [polygon parts]}`` of a label image (int, (H, W)) traced by
    ``rasterio.features.shapes`` with 8-connectivity (4, its default, would split a
    component labelled 8-connected), in the CRS of ``transform`` (see
    :func:`polygonize`'s ``pixel_offset``)."""
    from rasterio import features
    from shapely.geometry import shape

    geoms: Dict[int, list] = {}
    trace = transform if pixel_offset is None else Affine(
        1.0, 0.0, float(pixel_offset[1]), 0.0, 1.0, float(pixel_offset[0]))
    for geom, val in features.shapes(lab.astype(np.int32, copy=False), mask=lab > 0,
                                     transform=trace, connectivity=8):
        g = shape(geom)
        if pixel_offset is not None:
            g = _pixels_to_crs(g, transform)
        geoms.setdefault(int(val), []).append(g)
    return geoms


def _pixels_to_crs(geom, transform: Affine):
    """Map a geometry in pixel coordinates through ``transform`` as GDAL's polygonize
    does (``c + a*x + b*y``, ``f + d*x + e*y``), so results match bit for bit."""
    import shapely

    t = transform

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.c + t.a * x + t.b * y, t.f + t.d * x + t.e * y])

    return shapely.transform(geom, fn)


def orthogonalize(geom, min_rectangularity: float = 0.85):
    """Replace a near-rectangular polygon by its minimum rotated rectangle.

    Panels and flat roofs are rectangles; pixel-traced outlines are staircases. A
    polygon whose area fills at least ``min_rectangularity`` of its minimum-area
    rotated rectangle (shapely ``minimum_rotated_rectangle``, rotating calipers) is
    replaced by that rectangle, scaled about its centre to the polygon's area (the
    enclosing rectangle holds every stair corner, so it is larger than the object);
    other shapes (L-shaped arrays, merged rows) are kept.

    Args:
        geom: shapely Polygon (CRS units).
        min_rectangularity: area / rectangle area needed, 0..1.

    Returns:
        the rectangle or ``geom`` unchanged.
    """
    if geom.geom_type != "Polygon" or geom.is_empty:
        return geom
    from shapely import affinity
    rect = geom.minimum_rotated_rectangle
    if rect.area > 0 and geom.area / rect.area >= min_rectangularity:
        f = float(np.sqrt(geom.area / rect.area))
        return affinity.scale(rect, f, f, origin=rect.centroid)
    return geom


def _union(parts: Sequence[object]):
    from shapely.ops import unary_union
    return unary_union(parts)
