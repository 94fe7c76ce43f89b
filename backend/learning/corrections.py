"""The user's corrections as training data.

The plugin sends the *edited* result layer (every polygon still in it after the user
deleted false detections, added missed panels, reshaped or re-classed others) as WKT
features with their ``class`` and the layer's CRS, plus the *reviewed areas*: the
extents the user checked (by default each detection run's extent), all held by a
:class:`protocol.params.RetrainParams`. Inside a reviewed area the corrected layer is
the truth: what is not covered by a polygon is background. A *partial* review
(``mode`` ``"review"``) labels only the polygons the user reviewed and a margin around
each, the rest being ignored (:mod:`backend.learning.partial`).

:func:`build_corrections` turns that into training data:

1. features are parsed; invalid geometries are repaired with ``shapely.make_valid``
   (a warning names each repaired feature) or, with ``invalid_geometry="refuse"``,
   refused with an error that names the first invalid feature and why it is invalid;
2. reviewed areas are split into a *train* part and a *held-out* part that is never
   trained on, used to decide whether the retrained model is better
   (:func:`backend.learning.reviewed.split_areas`). A held-out part is read with a
   margin of context around it (:data:`CONTEXT_TILE_FRACTION` of the model's tile,
   within the raster): both models see it as a detection would, with the pixels around,
   and only the part itself is scored (``ReviewedData.scored``). Every corrected
   feature that touches the part counts there, clipped to it;
3. each part is read at the model's GSD (same grid as a ``detect``), the current model
   is run on it (exactly the ``detect`` pipeline: the polygons the user saw; the class
   map of a recent detection of the same pixels is reused, ``backend.inference.recent``),
   and the corrected polygons are burnt into a target class map
   (``rasterio.features.rasterize``);
4. target and prediction are diffed: false positives (predicted, deleted or shrunk by
   the user), false negatives (added or grown), class changes; both per pixel and per
   object (8-connected components, IoU 0.5 matching as in :mod:`protocol.metrics`),
   with pixel loss weights that are higher on mistake pixels
   (:mod:`backend.learning.mistakes`).

Training chips are then drawn toward the mistakes (hard-example mining) by
:class:`backend.learning.samplers.ChipSampler`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

import protocol as P
from backend.learning.corrected import Feature, parse_features
from backend.learning.mistakes import diff_maps, mistake_maps
from backend.learning.partial import extent_labels, margin_of, partial_labels, review_windows
from backend.learning.reviewed import (Bounds, ReviewedData, ReviewedPart, grid_bounds,
                                       parse_areas, split_areas)
from protocol.errors import CorrectionsError, InputError, JobCancelled
from protocol.params import RetrainParams
from protocol.results import REVIEWED_STATES

log = logging.getLogger("ortholens.corrections")

#: Most pixels (at the model GSD) of all reviewed areas together.
MAX_REVIEWED_PIXELS = 64_000_000
#: Context read around a held-out part, as a fraction of the model's tile side: a
#: strip a quarter of an area wide, read alone, would be judged on tiles padded by
#: reflection on three sides, which no detection of the area ever sees.
CONTEXT_TILE_FRACTION = 0.25
Progress = Callable[[float, str], None]


@dataclass
class Corrections:
    """Everything :func:`build_corrections` produced."""

    train: List[ReviewedData]
    holdout: List[ReviewedData]
    warnings: List[str]
    n_features: int
    n_repaired: int

    def summary(self) -> Dict[str, Any]:
        """JSON-safe counts for the report, the lineage and MLflow."""
        def tot(areas: Sequence[ReviewedData]) -> Dict[str, Any]:
            keys = ("fp_px", "fn_px", "class_change_px", "fp_objects", "fn_objects",
                    "class_change_objects", "deleted", "added", "reference_objects",
                    "predicted_objects")
            out = {k: int(sum(a.stats.get(k, 0) for a in areas)) for k in keys}
            out["areas"] = len(areas)
            out["area_m2"] = round(sum(a.area_m2 for a in areas), 1)
            out["features"] = int(sum(a.n_features for a in areas))
            return out
        return {"features": self.n_features, "repaired": self.n_repaired,
                "train": tot(self.train), "holdout": tot(self.holdout),
                "reviewed_m2": round(sum(a.area_m2 for a in self.train + self.holdout), 1),
                "warnings": list(self.warnings)}


# ----------------------------------------------------------------------------- areas

def _raster_extent(area: ReviewedPart, ds) -> Bounds:
    """The area's extent in the raster's CRS, clipped to the raster."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds
    rb = ds.bounds
    if area.extent is None:
        return rb.left, rb.bottom, rb.right, rb.top
    x0, y0, x1, y1 = area.extent
    if area.extent_crs:
        ecrs = CRS.from_user_input(area.extent_crs)
        if ecrs != ds.crs:
            x0, y0, x1, y1 = transform_bounds(ecrs, ds.crs, x0, y0, x1, y1, densify_pts=21)
    return max(x0, rb.left), max(y0, rb.bottom), min(x1, rb.right), min(y1, rb.top)


def _inside(geom, geom_crs, bounds) -> bool:
    """Whether a corrected feature (shapely, in ``geom_crs``) meets a reviewed area
    whose ``bounds`` are ``(raster CRS WKT, (xmin, ymin, xmax, ymax))``."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    crs = CRS.from_wkt(bounds[0])
    if geom_crs is not None and geom_crs != crs:
        geom = shape(transform_geom(geom_crs, crs, mapping(geom)))
    return bool(geom.intersects(box(*bounds[1])))


# ----------------------------------------------------------------------------- build

def build_corrections(params: RetrainParams, arrays: Sequence[np.ndarray], card,
                      predictor=None, progress: Optional[Progress] = None,
                      cancelled: Optional[Callable[[], bool]] = None,
                      mistake_weight: float = 5.0,
                      holdout_fraction: float = 0.25) -> Corrections:
    """Read every reviewed area, run the current model and diff it with the corrections.

    Args:
        params: the ``retrain`` request (``source``, ``crs``, ``features``,
            ``reviewed``, ``extent``, ``invalid_geometry``, ``bands`` are read).
        arrays: the request's pixel frames (for ``pixels`` sources).
        card: the model card being corrected (``backend.models.card.ModelCard``).
        engine: the engine of the current model (default ``get_predictor(card)``: the
            same one ``detect`` uses).
        progress: receives (fraction 0..1, ``"reading reviewed area i/n"``).
        cancelled: polled between the parts and while the model runs.
        mistake_weight: loss weight of mistake pixels (1 elsewhere).
        holdout_fraction: target share of the reviewed surface held out
            (:func:`~backend.learning.reviewed.split_areas`).

    Raises:
        CorrectionsError: invalid features (see :func:`parse_features`), unreadable or
            unusable areas, reviewed areas too large, nothing to hold out.
        JobCancelled: cancelled.
    """
    from backend.inference.pipeline import Options
    from backend.inference.predictors import get_predictor

    progress = progress or (lambda f, m: None)
    predictor = predictor or get_predictor(card)
    class_ids = {c.name: c.id for c in card.classes}
    feats, warnings, repaired = parse_features(
        [f.to_wire() for f in params.features], class_ids,
        params.invalid_geometry or "repair")
    feat_crs = _features_crs(params, bool(feats))
    areas = parse_areas(params)
    _check_areas(areas, arrays)
    bounds = _area_bounds(areas, arrays)
    if params.mode == "review":  # only the windows around what was reviewed, held
        # out whole (each window is one or a few objects)
        read = review_windows(areas, bounds, feats, feat_crs, margin_of(params))
        parts = split_areas(read, _area_bounds(read, arrays), holdout_fraction, group_m=0.0)
    else:
        parts = split_areas(areas, bounds, holdout_fraction)
    if not any(p.holdout for p in parts) or all(p.holdout for p in parts):
        raise CorrectionsError("the reviewed areas cannot be split into a part to train "
                               "on and a part to check the result on")
    opts = Options.resolve(card)
    out_train: List[ReviewedData] = []
    out_hold: List[ReviewedData] = []
    total_px = 0
    used_features: Set[int] = set()
    for pi, a in enumerate(parts):
        if cancelled and cancelled():
            raise JobCancelled()
        progress(pi / len(parts), f"reading reviewed area {a.index + 1}/{len(areas)}"
                                  + (f" ({a.part})" if a.part else ""))
        read, total_px = _read_part(a, arrays, card, params.bands, predictor, opts,
                                    cancelled, total_px)
        ad = _part_data(a, read, feats, feat_crs, card, mistake_weight, used_features, params)
        (out_hold if a.holdout else out_train).append(ad)
    warnings += _unused_warnings(feats, used_features, feat_crs, areas, bounds)
    progress(1.0, "corrections read")
    return Corrections(out_train, out_hold, warnings, len(feats), repaired)


def _features_crs(params: RetrainParams, any_features: bool):
    """The rasterio CRS of the corrected features (None when the request names none).

    Raises:
        CorrectionsError: an invalid CRS, or features without one.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    try:
        feat_crs = CRS.from_user_input(params.crs) if params.crs else None
    except CRSError as exc:
        raise CorrectionsError(f"invalid CRS of the corrected features: {exc}") from None
    if any_features and feat_crs is None:
        raise CorrectionsError("the corrected features need a 'crs'", P.E_BAD_REQUEST)
    return feat_crs


def _check_areas(areas: List[ReviewedPart], arrays: Sequence[np.ndarray]) -> None:
    """Check the pixel frames the areas name; a holdout the user chose becomes a bool.

    Raises:
        CorrectionsError: an area names a pixel frame the request does not have.
    """
    for a in areas:
        if a.source.get("kind") == "pixels" and not 0 <= a.array < len(arrays):
            raise CorrectionsError(f"reviewed area {a.index} uses pixel frame {a.array}, "
                                   f"but the request has {len(arrays)}", P.E_BAD_REQUEST)
        if a.holdout is not None:
            a.holdout = bool(a.holdout)


def _open(a: ReviewedPart, arrays: Sequence[np.ndarray]):
    """The raster of a reviewed area, opened (``backend.inference.raster.open_source``)."""
    from backend.inference.raster import open_source
    return open_source(a.source, arrays[a.array] if a.source.get("kind") == "pixels"
                       else None)


def _area_bounds(areas: List[ReviewedPart], arrays: Sequence[np.ndarray]
                 ) -> List[Tuple[str, Bounds]]:
    """Per area, ``(raster CRS WKT, its extent in that CRS clipped to the raster)``.

    Raises:
        CorrectionsError: an unreadable raster, one without a CRS, an area outside its
            raster, an invalid extent CRS.
    """
    from rasterio.errors import CRSError
    bounds = []
    try:
        for a in areas:
            with _open(a, arrays) as ds:
                if ds.crs is None:
                    raise CorrectionsError(f"the raster of reviewed area {a.index} has no "
                                           f"CRS")
                b = _raster_extent(a, ds)
                if not (b[0] < b[2] and b[1] < b[3]):
                    raise CorrectionsError(f"reviewed area {a.index} does not intersect "
                                           f"its raster")
                bounds.append((ds.crs.to_wkt(), b))
    except CorrectionsError:
        raise
    except InputError as exc:
        raise CorrectionsError(exc.message, exc.code) from None
    except CRSError as exc:
        raise CorrectionsError(f"invalid extent CRS: {exc}") from None
    return bounds


@dataclass
class _Read:
    """A reviewed part as read: its grid, the bands with the alpha band last
    (``(B + 1, H, W)``), the valid mask (data and alpha), the current model's cleaned
    class map there (run, or reused from a detection of the same pixels), its own
    extent and the extent read (with context around a held-out part), both in the
    raster's CRS, and the raster's and the grid's CRS."""

    grid: Any
    data: np.ndarray
    valid: np.ndarray
    pred: np.ndarray
    own: Bounds
    read: Bounds
    ds_crs: Any
    raster_crs: Any


def _read_part(a: ReviewedPart, arrays: Sequence[np.ndarray], card, bands, predictor,
               opts, cancelled, total_px: int) -> Tuple[_Read, int]:
    """Read a part (a held-out one with :data:`CONTEXT_TILE_FRACTION` of context) on
    the model's grid and run the current model on it (the ``detect`` pipeline with
    ``opts``), unless a recent detection's class map covers it on the same pixels
    (``backend.inference.recent``: then that map is used and its time credited to
    ``predictor`` when it is a ``TimedPredictor``); returns it and the pixels read so
    far, ``total_px`` included.

    Raises:
        CorrectionsError: the areas hold more than :data:`MAX_REVIEWED_PIXELS`, or the
            raster cannot be read.
    """
    from rasterio.crs import CRS

    from backend.inference import recent
    from backend.inference.grid import plan_grid
    from backend.inference.pipeline import detections_from_probs, predict_grid
    from backend.inference.raster import WindowReader
    try:
        with _open(a, arrays) as ds:
            own = _raster_extent(a, ds)
            read = own
            if a.holdout:  # with context around it (clipped to the raster by plan_grid)
                m = CONTEXT_TILE_FRACTION * card.tile_size * card.gsd_m
                if ds.crs.is_geographic:
                    m /= 111_320.0
                read = (own[0] - m, own[1] - m, own[2] + m, own[3] + m)
            ds_crs = ds.crs
            grid = plan_grid(ds, list(read), None, card.gsd_m, card.bands, bands)
            total_px += grid.width * grid.height
            if total_px > MAX_REVIEWED_PIXELS:
                raise CorrectionsError(
                    f"the reviewed areas hold more than {MAX_REVIEWED_PIXELS / 1e6:.0f} "
                    f"Mpx at the model's {card.gsd_m} m GSD; review smaller areas")
            reused = recent.find(recent.map_key(card, predictor, a.source, grid, opts), grid)
            reader = WindowReader(ds, grid)
            try:
                data = reader.vrt.read(grid.bands + [reader.alpha])
                if reused is None:
                    probs, valid, _ = predict_grid(reader, grid, predictor, opts.batch_size,
                                                   None, cancelled)
            finally:
                reader.close()
            raster_crs = CRS.from_wkt(grid.crs_wkt)  # the grid's (UTM for degrees)
    except CorrectionsError:
        raise
    except InputError as exc:
        raise CorrectionsError(f"reviewed area {a.index}: {exc.message}", exc.code) from None
    if reused is None:
        valid &= data[-1] > 0
        pred, _ = detections_from_probs(probs, valid, grid, card, opts)
    else:
        if hasattr(predictor, "credit"):
            predictor.credit(reused.seconds_per_px * grid.width * grid.height)
        valid = reused.valid & (data[-1] > 0)
        pred = reused.class_map
        pred[~valid] = 0
    return _Read(grid, data, valid, pred, own, read, ds_crs, raster_crs), total_px


def _part_data(a: ReviewedPart, r: _Read, feats: List[Feature], feat_crs, card,
               mistake_weight: float, used_features: Set[int],
               params: RetrainParams) -> ReviewedData:
    """The part's image, the current model's cleaned class map, the corrected target,
    the pixels judged, the loss weights and the diff counts; the features it uses are
    added to ``used_features``. In ``review`` mode only the pixels a partial review
    labels (``backend.learning.partial``) are judged and weighted."""
    from shapely.geometry import box

    from backend.inference.bands import to_uint8
    grid = r.grid
    image = np.ascontiguousarray(to_uint8(r.data[:-1], grid.stretch))
    valid, pred = r.valid, r.pred
    scored, frame = None, box(*grid_bounds(grid))
    if r.read != r.own:  # judge the part itself, not its context
        frame = _part_outline(r)
        scored = valid & (_rasterize([(frame, 1)], grid) > 0)
    here, n_here = _part_features(a, r, feats, feat_crs, frame, used_features)
    judged = valid if scored is None else scored
    if params.mode == "review":
        target, labelled = partial_labels(
            [(g, c, st) for g, c, st in here if st in REVIEWED_STATES],
            [g for g, _, st in here if st not in REVIEWED_STATES], grid,
            margin_of(params))
        judged = scored = judged & labelled
    else:
        target = extent_labels(here, grid)
    target[~valid] = 0
    weight, hard = mistake_maps(pred, target, judged, mistake_weight)
    stats = diff_maps(pred, target, judged, len(card.classes))
    return ReviewedData(a, grid, image, valid, pred, target, weight, hard, stats, n_here,
                        scored)


def _part_outline(r: _Read):
    """The part's own extent (without its context) as a polygon in the grid's CRS."""
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    part = box(*r.own)
    if r.ds_crs != r.raster_crs:
        part = shape(transform_geom(r.ds_crs, r.raster_crs, mapping(part)))
    return part


def _rasterize(shapes: List[Tuple[Any, int]], grid) -> np.ndarray:
    """``shapes`` (geometry, value) burnt into uint8 (H, W) on ``grid``, 0 elsewhere."""
    from rasterio.features import rasterize
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform,
                     fill=0, dtype="uint8")


def _part_features(a: ReviewedPart, r: _Read, feats: List[Feature], feat_crs, frame,
                   used_features: Set[int]) -> Tuple[List[Tuple[Any, int, Optional[str]]], int]:
    """``(geometry in the grid's CRS, class id, review state)`` of the features of area
    ``a`` that meet the grid, and how many meet ``frame`` (the part judged; they are
    added to ``used_features``)."""
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    whole = box(*grid_bounds(r.grid))
    shapes = []
    n_here = 0
    for fi, (g, cid, area_idx, state) in enumerate(feats):
        if area_idx is not None and area_idx != a.index:
            continue
        if feat_crs is not None and feat_crs != r.raster_crs:
            g = shape(transform_geom(feat_crs, r.raster_crs, mapping(g)))
        if not g.intersects(whole):
            continue
        shapes.append((g, cid, state))
        if g.intersects(frame):
            used_features.add(fi)
            n_here += 1
    return shapes, n_here


def _unused_warnings(feats: List[Feature], used_features: Set[int], feat_crs,
                     areas: List[ReviewedPart], bounds: List[Tuple[str, Bounds]]
                     ) -> List[str]:
    """Warnings on the corrected features no part used: outside every reviewed area,
    or in the strip left between the part trained on and the held-out part."""
    unused = [(g, ai) for fi, (g, _, ai, _) in enumerate(feats) if fi not in used_features]
    in_gap = sum(1 for g, ai in unused
                 if any(_inside(g, feat_crs, b) for a, b in zip(areas, bounds)
                        if ai is None or ai == a.index))
    warnings = []
    if len(unused) - in_gap:
        warnings.append(f"{len(unused) - in_gap} corrected feature(s) lie outside every "
                        f"reviewed area and were not used")
    if in_gap:
        warnings.append(f"{in_gap} corrected feature(s) lie in the strip left between the "
                        f"part trained on and the held-out part, so neither used them")
    return warnings
