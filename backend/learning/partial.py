"""The labels of a partial review: only what the user looked at teaches the model.

A retrain in ``review`` mode (``protocol.params.RetrainParams.mode``) gets the result
layer with each polygon's ``review`` state (``protocol.results.REVIEW_STATES``). Of a
reviewed area it labels, pixel by pixel (:func:`partial_labels`):

* the polygons the user accepted, edited or added: their class;
* the polygons the user deleted: background;
* a margin of :data:`MARGIN_M` metres around each of them: background where no
  polygon the user kept covers it, so that the edge of an object is taught, and a
  missed panel is not a hole in it;

and leaves everything else unlabelled: the loss weight there is 0
(``backend.learning.losses.weighted_dice_ce_loss`` ignores it) and the gate does not
judge it. A polygon still ``pending`` is never labelled, even inside another's margin:
the user has not said whether it is a panel. A retrain in ``extent`` mode (the default)
keeps the older contract: the whole reviewed area is labelled, what no polygon covers
being background (a ``deleted`` polygon too).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

#: The margin around each reviewed polygon labelled background, metres: about two
#: panel rows' spacing on the pv01 roofs, and 20 pixels at the shipped model's 0.1 m,
#: well beyond the 1-2 pixel edge error of a traced outline.
MARGIN_M = 2.0
#: The states that label a polygon with its class; ``deleted`` labels it background.
POSITIVE_STATES = ("accepted", "edited", "added")
#: Ground read around a reviewed polygon's margin, metres: the context a detection of
#: the polygon would see, so that the model runs on it as it did in the detection.
WINDOW_CONTEXT_M = 10.0


def partial_labels(reviewed: Sequence[Tuple[Any, int, str]], pending: Sequence[Any],
                   grid: Any, margin_m: float = MARGIN_M
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """The target and the labelled pixels of a partial review on ``grid``.

    Args:
        reviewed: ``(polygonal shapely geometry in the grid's CRS, class id, state)``
            of each reviewed polygon; state one of ``protocol.results.REVIEWED_STATES``.
        pending: the geometries (grid CRS) of the polygons not reviewed.
        grid: the ``backend.inference.grid.Grid`` (``transform``, ``height``,
            ``width``; metres per pixel).
        margin_m: the margin labelled background around each reviewed polygon, metres.

    Returns:
        ``(target uint8 (H, W), labelled bool (H, W))``: ``target`` the class of the
        kept polygons (larger first, so a small one on top of a large one shows), 0
        elsewhere; ``labelled`` the reviewed polygons, their margins less the pending
        polygons' pixels (pixels are burnt when their centre lies inside, as
        ``rasterio.features.rasterize`` does).
    """
    shape = (grid.height, grid.width)
    target = np.zeros(shape, np.uint8)
    labelled = np.zeros(shape, bool)
    if not reviewed:
        return target, labelled
    kept = [(g, int(c)) for g, c, s in reviewed if s in POSITIVE_STATES]
    kept.sort(key=lambda s: -s[0].area)
    if kept:
        target = _burn(kept, grid)
    own = _burn([(g, 1) for g, _, _ in reviewed], grid) > 0
    ring = _burn([(g.buffer(margin_m), 1) for g, _, _ in reviewed], grid) > 0
    blocked = _burn([(g, 1) for g in pending], grid) > 0 if pending else np.zeros(shape, bool)
    labelled = own | (ring & ~blocked)
    target[~labelled] = 0
    return target, labelled


def margin_of(params: Any) -> float:
    """The margin of a partial review, metres: a ``protocol.params.RetrainParams``'s
    ``margin_m``, else :data:`MARGIN_M`."""
    return MARGIN_M if params.margin_m is None else float(params.margin_m)


def review_windows(areas: Sequence[Any], bounds: Sequence[Tuple[str, Tuple[float, ...]]],
                   feats: Sequence[Tuple[Any, int, Optional[int], Optional[str]]],
                   feat_crs: Any, margin_m: float = MARGIN_M,
                   context_m: float = WINDOW_CONTEXT_M) -> List[Any]:
    """What a partial review prepares: per reviewed area, the windows around its
    reviewed polygons instead of the whole area (nothing else is labelled, so reading
    and predicting the rest would be lost time).

    Each reviewed polygon's bounding box, grown by ``margin_m + context_m`` metres, is
    merged with the boxes it overlaps; each merged box, clipped to its area, becomes a
    part of that area (``backend.learning.reviewed.ReviewedPart`` with the area's
    index, source and holdout, its extent in the raster's CRS). An area without a
    reviewed polygon is left out. The held-out part of a partial review is whole
    windows (``backend.learning.reviewed.split_areas`` with windows apart as groups).

    Raises:
        CorrectionsError: no area holds a reviewed polygon.

    Args:
        areas: the request's reviewed areas (``ReviewedPart``).
        bounds: per area, ``(raster CRS WKT, (xmin, ymin, xmax, ymax))`` clipped to the
            raster.
        feats: the parsed features ``(geometry, class id, area index, review state)``.
        feat_crs: their rasterio CRS (None: the raster's).
        margin_m, context_m: metres (a raster in degrees: divided by 111 320).
    """
    from dataclasses import replace

    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    from shapely.ops import unary_union

    from protocol.results import REVIEWED_STATES
    out = []
    for a, (crs_wkt, b) in zip(areas, bounds):
        crs = CRS.from_wkt(crs_wkt)
        grow = (margin_m + context_m) / (111_320.0 if crs.is_geographic else 1.0)
        frame = box(*b)
        boxes = []
        for g, _, idx, state in feats:
            if state not in REVIEWED_STATES or (idx is not None and idx != a.index):
                continue
            if feat_crs is not None and feat_crs != crs:
                g = shape(transform_geom(feat_crs, crs, mapping(g)))
            x0, y0, x1, y1 = g.bounds
            w = box(x0 - grow, y0 - grow, x1 + grow, y1 + grow).intersection(frame)
            if not w.is_empty:
                boxes.append(w)
        merged = unary_union(boxes) if boxes else None
        parts = [] if merged is None else getattr(merged, "geoms", [merged])
        # merging boxes can leave L shapes whose boxes overlap again: merge until stable
        while True:
            env = unary_union([box(*p.bounds) for p in parts]) if parts else None
            again = [] if env is None else list(getattr(env, "geoms", [env]))
            if len(again) == len(parts):
                break
            parts = again
        for p in sorted(parts, key=lambda q: q.bounds):
            out.append(replace(a, extent=list(p.bounds), extent_crs=crs_wkt))
    if not out:
        from protocol.errors import CorrectionsError
        raise CorrectionsError("no polygon of the layer is reviewed (accepted, edited, "
                               "added or deleted): nothing to learn from")
    return out


def extent_labels(features: Sequence[Tuple[Any, int, Optional[str]]], grid: Any
                  ) -> np.ndarray:
    """The target, uint8 (H, W), of a whole-extent review: every feature (geometry in
    the grid's CRS, class id, review state) but the deleted ones burnt with its class,
    larger polygons first (a small polygon of another class on top of a big one stays
    visible), background elsewhere."""
    shapes = [(g, int(c)) for g, c, st in features if st != "deleted"]
    shapes.sort(key=lambda s: -s[0].area)
    return _burn(shapes, grid)


def _burn(shapes: List[Tuple[Any, int]], grid: Any) -> np.ndarray:
    """``shapes`` burnt into uint8 (H, W) on ``grid``, 0 elsewhere."""
    from rasterio.features import rasterize
    if not shapes:
        return np.zeros((grid.height, grid.width), np.uint8)
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform,
                     fill=0, dtype="uint8")
