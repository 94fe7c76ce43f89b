"""From stitched probabilities of a window to the objects it owns, and their features.

One function chain serves a detection of one extent and every region of a batch job:

1. :func:`class_maps`: the class map thresholded from the fused class probabilities,
   nodata set to background (``raw``), and the same cleaned of small holes and objects
   (``backend.inference.postprocess.clean_masks``); one map per class family
   (``ModelCard.families``: one for a model Ortholens trained, one per output of an
   imported model, whose objects may overlap those of another family);
2. :func:`owned_objects`: the **exactly-once rule** of regions. An object (8-connected
   component of one class) belongs to the region whose core holds its *first pixel in
   raster order* (its top row, leftmost pixel there). Cores partition the grid, so every
   object has one owner. The check of whether an owned object may continue outside the
   window runs on ``raw``, because clean-up decides on whole components: a component
   cut by the window could lose its small visible part and vanish although the region
   owns it. A window that is the whole grid owns everything and cuts nothing;
3. :func:`polygons`: object filters, then polygons traced in the whole grid's pixel
   coordinates, so a window gives the polygons of the whole grid bit for bit;
4. :func:`features`: the protocol's result features (``protocol.results``), in the
   raster's own CRS (:func:`to_source_crs`), with each object's uncertainty
   (``protocol.review.uncertainty``) when the threshold is given.

:func:`candidate_objects` runs steps 1 to 3 once more at a low threshold
(``protocol.review.CANDIDATE_LOW``) for the review queue's candidate misses: the
objects of the relaxed class map that meet no detection.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from backend.inference.postprocess import (Detection, class_map, clean_masks, filter_objects,
                                          polygonize)
from backend.models.card import ModelCard
from protocol.review import uncertainty
from protocol.window import Window

_EIGHT = np.ones((3, 3), bool)


def split_probs(probs: np.ndarray, card: ModelCard
                ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(class_probs, member_probs)`` of stitched probabilities.

    Args:
        probs: float32 (channels, H, W): the ``1 + classes`` class probabilities, then
            (ensembles) each member's foreground probabilities.

    Returns:
        float32 (1 + classes, H, W), and float32 (members, classes, H, W) or None
        for a single model.
    """
    c, k = card.num_outputs, len(card.classes)
    members = probs[c:].reshape(-1, k, *probs.shape[1:]) if probs.shape[0] > c else None
    return probs[:c], members


def min_sizes_px(opts, transform) -> Tuple[int, int]:
    """``(min_area_px, max_hole_px)``: ``opts.min_area_m2`` and ``opts.max_hole_m2``
    (square metres) in pixels of a grid with this affine transform (metres per pixel)."""
    px_area = transform.a * -transform.e
    return (int(round(opts.min_area_m2 / px_area)), int(round(opts.max_hole_m2 / px_area)))


def class_maps(class_probs: np.ndarray, valid: np.ndarray, card: ModelCard, opts,
               transform) -> Tuple[np.ndarray, np.ndarray]:
    """``(raw, cleaned)`` class maps of a window, uint8 (families, H, W): per class
    family (``card.families()``), its classes' ids where its best class reaches the
    threshold (:func:`~backend.inference.postprocess.class_map` over the family's
    channels), 0 elsewhere.

    Args:
        class_probs: float32 (1 + classes, H, W).
        valid: bool (H, W) valid-data mask; invalid pixels are background.
        opts: ``threshold``, ``min_area_m2``, ``max_hole_m2`` (``pipeline.Options``).
        transform: the grid's affine transform (metres per pixel).
    """
    sizes = min_sizes_px(opts, transform)
    raws, cleans = [], []
    for ids in card.families():
        if list(ids) == list(range(1, class_probs.shape[0])):  # every class: as it is
            raw = class_map(class_probs, opts.threshold)
        else:
            lut = np.array([0] + list(ids), np.uint8)
            raw = lut[class_map(class_probs[[0] + list(ids)], opts.threshold)]
        raw[~valid] = 0
        raws.append(raw)
        cleans.append(clean_masks(raw, len(card.classes), *sizes))
    return np.stack(raws), np.stack(cleans)


def merged(cmaps: np.ndarray) -> np.ndarray:
    """One uint8 (H, W) class map of per-family maps (families, H, W): each pixel takes
    the first family's class that is not background there (a single family: its map)."""
    out = cmaps[0].copy()
    for m in cmaps[1:]:
        out[out == 0] = m[out == 0]
    return out


def _first_pixels(mask: np.ndarray, win: Window, core: Window, height: int, width: int):
    """Labels of ``mask``'s 8-connected components and, for each, whether the core owns
    it (first pixel in raster order inside ``core``) and whether it touches an inner edge
    of the window (may continue outside it) of an ``height`` x ``width`` grid."""
    lab, n = ndimage.label(mask, structure=_EIGHT)
    owned = np.zeros(n + 1, bool)
    touches = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        rs, cs = sl
        row = rs.start
        col = cs.start + int(np.argmax(lab[row, cs] == i))
        gr, gc = win.row + row, win.col + col
        owned[i] = core.row <= gr < core.row_stop and core.col <= gc < core.col_stop
        touches[i] = ((rs.start == 0 and win.row > 0) or (cs.start == 0 and win.col > 0)
                      or (rs.stop == win.height and win.row_stop < height)
                      or (cs.stop == win.width and win.col_stop < width))
    return lab, owned, touches


def owned_objects(raw: np.ndarray, cleaned: np.ndarray, win: Window, core: Window,
                  height: int, width: int) -> Tuple[np.ndarray, int]:
    """The cleaned class maps with only the objects ``core`` owns, and the number of
    owned components of ``raw`` that touch an inner edge of the window.

    A cleaned object has the first pixel (and bounding box) of its raw component, as
    filled holes are enclosed by it.

    Args:
        raw, cleaned: uint8 (families, h, w) class maps of the window
            (:func:`class_maps`).
        win: the window, pixels of the grid; core: the region's core inside it.
        height, width: the whole grid, pixels.

    Returns:
        ``(uint8 (families, h, w) class maps, touching count)``; ``(cleaned, 0)`` when
        the core is the whole grid (a window grown to the whole grid around a smaller
        core still keeps only what the core owns).
    """
    whole = Window(0, 0, height, width)
    if core == whole and win == whole:
        return cleaned, 0
    out = np.zeros_like(cleaned)
    touching = 0
    for f in range(raw.shape[0]):
        for k in np.unique(raw[f]):
            if k == 0:
                continue
            _, owned, touches = _first_pixels(raw[f] == k, win, core, height, width)
            touching += int((owned & touches).sum())
        for k in np.unique(cleaned[f]):
            if k == 0:
                continue
            lab, owned, _ = _first_pixels(cleaned[f] == k, win, core, height, width)
            out[f][owned[lab]] = k
    return out, touching


def polygons(cmap: np.ndarray, probs: np.ndarray, card: ModelCard, opts, transform,
             win: Window, height: int, width: int) -> Tuple[np.ndarray, List[Detection]]:
    """The object filters (minimum solidity and score), then the polygons of a window's
    class maps, family after family.

    Args:
        cmap: uint8 (families, h, w) cleaned (and owned) class maps of the window.
        probs: float32 (channels, h, w) stitched probabilities (:func:`split_probs`).
        opts: ``pipeline.Options``.
        transform: the whole grid's affine transform.
        win: the window, pixels of the grid (``height`` x ``width``): polygons are
            traced in the grid's pixel coordinates, so they equal the whole grid's.

    Returns:
        ``(filtered class maps (families, h, w), detections in the grid's CRS)``.
    """
    class_probs, members = split_probs(probs, card)
    offset = None if win == Window(0, 0, height, width) else (win.row, win.col)
    maps, dets = [], []
    for m in cmap:
        m = filter_objects(m, class_probs, len(card.classes), opts.min_solidity,
                           opts.min_score)
        dets += polygonize(m, class_probs, transform, opts.simplify_m, opts.min_area_m2,
                           member_probs=members, threshold=opts.threshold,
                           ortho=opts.orthogonalize, pixel_offset=offset,
                           clip=grid_bounds(transform, height, width))
        maps.append(m)
    return np.stack(maps), dets


def grid_bounds(transform, height: int, width: int) -> Tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a north-up grid of ``height`` x ``width`` pixels
    with the affine ``transform``, in its CRS: what detections are cut to
    (``postprocess.polygonize``'s ``clip``)."""
    xs = (transform.c, transform.c + width * transform.a)
    ys = (transform.f, transform.f + height * transform.e)
    return min(xs), min(ys), max(xs), max(ys)


def candidate_objects(probs: np.ndarray, valid: np.ndarray, detected: np.ndarray,
                      card: ModelCard, opts, transform, win: Window, core: Window,
                      height: int, width: int, low: float) -> List[Detection]:
    """Candidate misses of a window: the objects of the class map at threshold ``low``
    (cleaned and owned as detections are, :func:`class_maps`, :func:`owned_objects`)
    that share no pixel with a detection, polygonized like detections
    (``score``: their mean class probability, below the threshold unless an object
    filter removed them; no solidity or score filter).

    Args:
        probs: float32 (channels, h, w) stitched probabilities of the window.
        valid: bool (h, w) valid-data mask.
        detected: uint8 (families, h, w) the window's filtered class maps of
            detections (:func:`polygons`' first output); a pixel of any family's
            detection is a detection.
        card, opts, transform, win, core, height, width: as :func:`polygons` and
            :func:`owned_objects`.
        low: the candidates' lowest probability, 0..1, below ``opts.threshold``.

    Returns:
        Detections in the grid's CRS (``agreement`` as for detections, at
        ``opts.threshold``).
    """
    class_probs, members = split_probs(probs, card)
    relaxed = dataclasses.replace(opts, threshold=low)
    raw, cleaned = class_maps(class_probs, valid, card, relaxed, transform)
    owned, _ = owned_objects(raw, cleaned, win, core, height, width)
    found = (detected > 0).any(0) if detected.ndim == 3 else detected > 0
    offset = None if win == Window(0, 0, height, width) else (win.row, win.col)
    out: List[Detection] = []
    for m in owned:  # family after family, as detections
        lab, _ = ndimage.label(m > 0, structure=_EIGHT)
        hit = np.unique(lab[found & (lab > 0)])
        m = np.where(np.isin(lab, hit) | (lab == 0), 0, m).astype(np.uint8)
        out += polygonize(m, class_probs, transform, opts.simplify_m, opts.min_area_m2,
                          member_probs=members, threshold=opts.threshold,
                          ortho=opts.orthogonalize, pixel_offset=offset,
                          clip=grid_bounds(transform, height, width))
    return out


def to_source_crs(dets: List[Detection], grid) -> List[Detection]:
    """The detections with their geometries in the raster's own CRS when the grid was
    reprojected (``grid.source_crs_wkt``; see ``backend.inference.grid.grid_crs``), else
    unchanged.

    ``area_m2`` stays the grid's (ground square metres). Geometries are transformed
    vertex by vertex by GDAL (``rasterio.warp.transform_geom``).
    """
    if not grid.source_crs_wkt:
        return dets
    import shapely.geometry
    from rasterio.warp import transform_geom

    return [dataclasses.replace(d, geometry=shapely.geometry.shape(transform_geom(
        grid.crs_wkt, grid.source_crs_wkt, shapely.geometry.mapping(d.geometry),
        precision=-1))) for d in dets]


def output_crs(grid) -> str:
    """The CRS of a detection's polygons, as WKT: the raster's own."""
    return grid.source_crs_wkt or grid.crs_wkt


def wkt_precision(crs_wkt: str) -> int:
    """Decimals kept in result WKT: 3 (millimetres) for a projected CRS, 9 (about
    0.1 mm) for degrees."""
    from rasterio.crs import CRS
    return 3 if CRS.from_wkt(crs_wkt).is_projected else 9


def features(dets: List[Detection], card: ModelCard, grid=None,
             precision: Optional[int] = None,
             threshold: Optional[float] = None) -> List[Dict]:
    """Protocol ``result`` features for detections: ``wkt`` plus the attributes of
    ``protocol.results.RESULT_FIELDS`` except ``detected_at``, and with ``threshold``
    each one's ``uncertainty`` (``protocol.review.uncertainty`` of its score and
    agreement; the agreement counts for an ensemble only).

    Args:
        dets: detections in the grid's CRS.
        grid: the grid they were found on: geometries go to the raster's CRS
            (:func:`to_source_crs`) and ``precision`` defaults to its
            :func:`wkt_precision`; None: as they are, 3 decimals.
        precision: decimals of the WKT coordinates.
        threshold: the detection's probability threshold, 0..1; None: no
            ``uncertainty``.
    """
    import shapely
    if grid is not None:
        dets = to_source_crs(dets, grid)
        precision = wkt_precision(output_crs(grid)) if precision is None else precision
    precision = 3 if precision is None else precision
    members = len(card.members) if card.is_ensemble else 1
    out = []
    for d in dets:
        f = {"wkt": shapely.to_wkt(d.geometry, rounding_precision=precision),
             "class": card.class_name(d.class_id), "class_id": d.class_id,
             "score": round(d.score, 4), "agreement": round(d.agreement, 4),
             "area_m2": round(d.area_m2, 3), "model": card.id,
             "model_version": card.version}
        if threshold is not None:
            f["uncertainty"] = uncertainty(d.score, threshold, d.agreement, members)
        out.append(f)
    return out
