"""The user's corrections as training data.

The plugin sends the *edited* result layer (every polygon still in it after the user
deleted false detections, added missed panels, reshaped or re-classed others) as WKT
features with their ``class`` and the layer's CRS, plus the *reviewed areas*: the
extents the user checked (by default each detection run's extent), all held by a
:class:`protocol.params.RetrainParams`. Inside a reviewed area the corrected layer is
the truth: what is not covered by a polygon is background.

:func:`build_corrections` turns that into training data:

1. features are parsed; invalid geometries are repaired with ``shapely.make_valid``
   (a warning names each repaired feature) or, with ``invalid_geometry="refuse"``,
   refused with an error that names the first invalid feature and why it is invalid;
2. each reviewed area is read at the model's GSD (same grid as a ``detect``), the
   current model is run on it (exactly the ``detect`` pipeline: the polygons the user
   saw), and the corrected polygons are burnt into a target class map
   (``rasterio.features.rasterize``);
3. target and prediction are diffed: false positives (predicted, deleted or shrunk by
   the user), false negatives (added or grown), class changes; both per pixel and per
   object (8-connected components, IoU 0.5 matching as in :mod:`protocol.metrics`);
4. reviewed areas are split into a *train* part and a *held-out* part that is never
   trained on, used to decide whether the retrained model is better
   (:func:`split_areas`): whole spatial groups of areas when there are several, else a
   strip cut off the area with a gap between the parts. A held-out part is read with a
   margin of context around it (:data:`CONTEXT_TILE_FRACTION` of the model's tile,
   within the raster): both models see it as a detection would, with the pixels around,
   and only the part itself is scored (:attr:`AreaData.scored`). Every corrected
   feature that touches the part counts there, clipped to it;
5. :class:`ChipSampler` draws training chips weighted toward the mistakes (hard-example
   mining: most chips are centred on a mistake) with pixel loss weights that are higher
   on mistake pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import protocol as P
from backend.learning.data import single_link_groups
from protocol.errors import CorrectionsError, InputError
from protocol.params import RetrainParams

log = logging.getLogger("ortholens.corrections")

#: Most pixels (at the model GSD) of all reviewed areas together.
MAX_REVIEWED_PIXELS = 64_000_000
#: Smallest mistake component (pixels) that counts as an object-level mistake.
MIN_MISTAKE_PX = 20
#: Context read around a held-out part, as a fraction of the model's tile side: a
#: strip a quarter of an area wide, read alone, would be judged on tiles padded by
#: reflection on three sides, which no detection of the area ever sees.
CONTEXT_TILE_FRACTION = 0.25


@dataclass
class Area:
    """One reviewed area (a request's ``reviewed`` item, or a part of one).

    Attributes:
        index: position in the request's ``reviewed`` list (features with ``area`` set
            belong to that area only).
        source: the raster (the wire form of a protocol ``source``), ``array`` the pixel
            frame index for kind ``pixels``.
        extent, extent_crs: as in ``detect`` (None: the whole raster).
        holdout: True/False when the user chose, None to let :func:`split_areas` decide.
        part: ``""`` for a whole area, ``"train"``/``"holdout"`` for the parts of a
            split one.
    """

    index: int
    source: Dict[str, Any]
    extent: Optional[List[float]] = None
    extent_crs: Optional[str] = None
    holdout: Optional[bool] = None
    array: int = 0
    part: str = ""


@dataclass
class AreaData:
    """A reviewed area read at the model GSD.

    Attributes:
        area: the :class:`Area`.
        grid: the ``backend.inference.raster.Grid`` it was read on.
        image: uint8 (bands, H, W). valid: bool (H, W).
        pred: uint8 (H, W) class map of the current model (cleaned, as ``detect``).
        target: uint8 (H, W) the corrected class map.
        weight: float32 (H, W) pixel loss weights.
        hard: bool (H, W) pixels of object-level mistakes (chip centres are drawn there).
        stats: diff counts (see :func:`diff_maps`).
        scored: bool (H, W) the pixels that are judged (a held-out part read with
            context: the part itself, valid); None: every valid pixel.
    """

    area: Area
    grid: Any
    image: np.ndarray
    valid: np.ndarray
    pred: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    hard: np.ndarray
    stats: Dict[str, Any] = field(default_factory=dict)
    n_features: int = 0
    scored: Optional[np.ndarray] = None

    @property
    def holdout(self) -> bool:
        return bool(self.area.holdout)

    @property
    def scored_mask(self) -> np.ndarray:
        """bool (H, W): the pixels judged (:attr:`scored`, else :attr:`valid`)."""
        return self.valid if self.scored is None else self.scored

    @property
    def area_m2(self) -> float:
        """The judged surface, m²."""
        t = self.grid.transform
        return float(self.scored_mask.sum()) * abs(t.a * t.e)


@dataclass
class Corrections:
    """Everything :func:`build_corrections` produced."""

    train: List[AreaData]
    holdout: List[AreaData]
    warnings: List[str]
    n_features: int
    n_repaired: int

    def summary(self) -> Dict[str, Any]:
        """JSON-safe counts for the report, the lineage and MLflow."""
        def tot(areas: Sequence[AreaData]) -> Dict[str, Any]:
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


# ----------------------------------------------------------------------------- features

def parse_features(features: Sequence[Dict[str, Any]], class_ids: Dict[str, int],
                   invalid: str = "repair") -> Tuple[List[Tuple[Any, int, Optional[int]]],
                                                     List[str], int]:
    """Parse corrected features.

    Args:
        features: ``[{"wkt": str, "class": str, "class_id": int?, "area": int?}]``.
        class_ids: class name -> id of the model card.
        invalid: ``"repair"`` (``shapely.make_valid``, with a warning) or ``"refuse"``.

    Returns:
        ``([(polygonal geometry, class id, area index or None)], warnings, n_repaired)``;
        empty geometries and non-polygon parts are dropped (with a warning).

    Raises:
        CorrectionsError: unreadable WKT, an unknown class, or (``refuse``) an invalid
            geometry; the message names the feature.
    """
    import shapely
    from shapely.validation import explain_validity, make_valid

    ids = set(class_ids.values())
    out: List[Tuple[Any, int, Optional[int]]] = []
    warnings: List[str] = []
    repaired = 0
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("wkt"), str):
            raise CorrectionsError(f"feature {i} has no 'wkt' string", P.E_BAD_REQUEST)
        try:
            g = shapely.from_wkt(f["wkt"])
        except Exception as exc:  # shapely.errors.GEOSException and friends
            raise CorrectionsError(f"feature {i}: unreadable WKT ({exc})",
                                   P.E_BAD_REQUEST) from None
        name = f.get("class")
        if isinstance(name, str) and name in class_ids:
            cid = class_ids[name]
        elif isinstance(f.get("class_id"), int) and f["class_id"] in ids and not name:
            cid = int(f["class_id"])
        else:
            raise CorrectionsError(
                f"feature {i} has class {name!r}, which the model does not know "
                f"(classes: {', '.join(sorted(class_ids))}); fix the 'class' attribute")
        if g is None or g.is_empty:
            warnings.append(f"feature {i} has an empty geometry; ignored")
            continue
        if not g.is_valid:
            why = explain_validity(g)
            if invalid == "refuse":
                raise CorrectionsError(
                    f"feature {i} has an invalid geometry ({why}); fix it (e.g. QGIS "
                    f"Vector > Geometry Tools > Fix Geometries) or let Ortholens repair it")
            g = make_valid(g)
            repaired += 1
            warnings.append(f"feature {i}: invalid geometry ({why}) repaired with "
                            f"make_valid")
        g = _polygonal(g)
        if g is None:
            warnings.append(f"feature {i} is not a polygon; ignored")
            continue
        area = f.get("area")
        out.append((g, cid, int(area) if isinstance(area, int) else None))
    return out, warnings, repaired


def _polygonal(g):
    """The polygonal part of a geometry (None when it has none)."""
    from shapely.geometry import MultiPolygon, Polygon
    if isinstance(g, (Polygon, MultiPolygon)):
        return g if not g.is_empty else None
    parts = [p for p in getattr(g, "geoms", []) if isinstance(p, (Polygon, MultiPolygon))]
    polys = []
    for p in parts:
        polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    polys = [p for p in polys if not p.is_empty and p.area > 0]
    return MultiPolygon(polys) if polys else None


# ----------------------------------------------------------------------------- areas

def parse_areas(params: RetrainParams) -> List[Area]:
    """The request's reviewed areas (``reviewed``; default one area: ``extent`` of the
    request over ``source``). An area without a source or extent CRS of its own takes
    the request's."""
    areas = []
    for i, it in enumerate(params.reviewed or ()):
        areas.append(Area(index=i, source=(it.source or params.source).to_wire(),
                          extent=None if it.extent is None else list(it.extent),
                          extent_crs=(it.extent_crs if it.extent_crs is not None
                                      else params.extent_crs),
                          holdout=it.holdout, array=int(it.array or 0)))
    if not areas:
        areas.append(Area(index=0, source=params.source.to_wire(),
                          extent=None if params.extent is None else list(params.extent),
                          extent_crs=params.extent_crs))
    return areas


def _bounds(area: Area, ds) -> Tuple[float, float, float, float]:
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


def split_areas(areas: List[Area], bounds: List[Tuple[str, Tuple[float, float, float, float]]],
                fraction: float = 0.25, gap_m: float = 5.0, group_m: float = 30.0
                ) -> List[Area]:
    """Decide which reviewed areas are held out (never trained on).

    Args:
        areas: the reviewed areas.
        bounds: per area, ``(CRS key, (xmin, ymin, xmax, ymax))`` in its raster's CRS.
        fraction: target share of the reviewed surface held out.
        gap_m: for a single area, the width of the strip between the parts that
            neither uses (so neighbouring pixels do not leak).
        group_m: areas closer than this (same CRS) form one spatial group and go to the
            same side.

    Returns:
        The areas with ``holdout`` set; a single area (or a single spatial group) is
        replaced by two parts: the held-out strip (``fraction`` of its longer side,
        at its bottom or right end) and the rest, separated by ``gap_m``.
    """
    if any(a.holdout for a in areas):  # the user chose: the rest is for training
        return [replace(a, holdout=bool(a.holdout)) for a in areas]
    free = [i for i, a in enumerate(areas) if a.holdout is None]
    groups = [sorted(g) for g in single_link_groups(
        free, lambda i, j: (bounds[i][0] == bounds[j][0]
                            and _distance(bounds[i][1], bounds[j][1]) <= group_m))]
    if len(groups) >= 2:
        surf = [sum(_surface(bounds[j][1]) for j in g) for g in groups]
        total = sum(_surface(b) for _, b in bounds)
        # smallest groups first until the held-out share is reached; never all groups
        order = sorted(range(len(groups)), key=lambda k: (surf[k], groups[k][0]))
        chosen, held = set(), 0.0
        for k in order[:-1]:
            if held >= fraction * total:
                break
            chosen.add(k)
            held += surf[k]
        out = [replace(a, holdout=False) for a in areas]
        for k in chosen:
            for j in groups[k]:
                out[j].holdout = True
        return out
    # one group: cut a strip off its long side
    out: List[Area] = []
    for i, a in enumerate(areas):
        if i not in free:
            out.append(replace(a, holdout=False))
            continue
        _, (x0, y0, x1, y1) = bounds[i]
        w, h = x1 - x0, y1 - y0
        if max(w, h) * fraction <= gap_m or max(w, h) < 4 * gap_m:
            raise CorrectionsError(
                f"reviewed area {a.index} ({w:.0f} x {h:.0f} m) is too small to keep a part "
                f"of it for checking the retrained model; review a larger area or several")
        if h >= w:  # held-out strip at the bottom
            cut = y0 + fraction * h
            hold, train = [x0, y0, x1, cut], [x0, cut + gap_m, x1, y1]
        else:  # at the right
            cut = x1 - fraction * w
            hold, train = [cut, y0, x1, y1], [x0, y0, cut - gap_m, y1]
        crs = bounds[i][0]
        out.append(Area(a.index, a.source, train, crs, False, a.array, "train"))
        out.append(Area(a.index, a.source, hold, crs, True, a.array, "holdout"))
    return out


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


def _surface(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _distance(a, b) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


# ----------------------------------------------------------------------------- diff

def diff_maps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
              n_classes: int) -> Dict[str, Any]:
    """Pixel and object differences between the model's and the corrected class maps.

    Returns:
        ``fp_px`` (predicted foreground, corrected background: deleted or shrunk),
        ``fn_px`` (added or grown), ``class_change_px`` (foreground in both, other
        class); per object: ``fp_objects`` / ``fn_objects`` (unmatched predicted /
        corrected objects at IoU 0.5, per class), ``deleted`` (predicted objects the
        user removed completely), ``added`` (corrected objects the model missed
        completely), ``class_change_objects`` (corrected objects mostly predicted as
        another class), ``reference_objects``, ``predicted_objects``.
    """
    from protocol.metrics import compare, components
    pred = np.where(valid, pred, 0)
    target = np.where(valid, target, 0)
    pf, tf = pred > 0, target > 0
    s: Dict[str, Any] = {"fp_px": int((pf & ~tf).sum()), "fn_px": int((~pf & tf).sum()),
                         "class_change_px": int((pf & tf & (pred != target)).sum())}
    fp_o = fn_o = ref_o = pred_o = 0
    for k in range(1, n_classes + 1):
        c = compare(pred == k, target == k)
        fp_o += c.fp_obj
        fn_o += c.fn_obj
        ref_o += c.tp_obj + c.fn_obj
        pred_o += c.tp_obj + c.fp_obj
    lp, n_p = components(pf, MIN_MISTAKE_PX)
    lt, n_t = components(tf, MIN_MISTAKE_PX)
    deleted = int(n_p - len(np.unique(lp[(lp > 0) & tf]))) if n_p else 0
    added = int(n_t - len(np.unique(lt[(lt > 0) & pf]))) if n_t else 0
    changed = 0
    for j in range(1, n_t + 1):
        m = lt == j
        tcls = np.bincount(target[m], minlength=n_classes + 1)[1:].argmax() + 1
        pc = np.bincount(pred[m], minlength=n_classes + 1)
        if pc[1:].sum() > m.sum() / 2 and pc[1:].argmax() + 1 != tcls:
            changed += 1
    s.update({"fp_objects": fp_o, "fn_objects": fn_o, "deleted": deleted, "added": added,
              "class_change_objects": changed, "reference_objects": ref_o,
              "predicted_objects": pred_o})
    return s


def mistake_maps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
                 mistake_weight: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(weight float32 (H, W), hard bool (H, W))``.

    ``weight`` is 1 on correct pixels, ``mistake_weight`` on every pixel where the model
    and the correction disagree (including slivers along shifted edges), 0 outside the
    valid data. ``hard`` marks the object-level mistakes only (disagreement components
    of at least :data:`MIN_MISTAKE_PX` pixels after removing 1-pixel edge slivers):
    that is where chip centres are drawn.
    """
    from scipy import ndimage

    from protocol.metrics import components
    wrong = (pred != target) & valid
    weight = np.where(wrong, np.float32(mistake_weight), np.float32(1.0)).astype(np.float32)
    weight[~valid] = 0.0
    core = ndimage.binary_opening(wrong, structure=np.ones((3, 3), bool))
    lab, _ = components(core, MIN_MISTAKE_PX)
    return weight, lab > 0


# ----------------------------------------------------------------------------- build

Progress = Callable[[float, str], None]


def build_corrections(params: RetrainParams, arrays: Sequence[np.ndarray], card,
                      engine=None, progress: Optional[Progress] = None,
                      cancelled: Optional[Callable[[], bool]] = None,
                      mistake_weight: float = 5.0,
                      holdout_fraction: float = 0.25) -> Corrections:
    """Read every reviewed area, run the current model and diff it with the corrections.

    Args:
        params: the ``retrain`` request (``source``, ``crs``, ``features``,
            ``reviewed``, ``extent``, ``invalid_geometry``, ``bands`` are read).
        arrays: the request's pixel frames (for ``pixels`` sources).
        card: the model card being corrected (``backend.models.card.ModelCard``).
        engine: the engine of the current model (default ``get_engine(card)``: the
            same one ``detect`` uses).
        mistake_weight: loss weight of mistake pixels (1 elsewhere).
        holdout_fraction: target share of the reviewed surface held out
            (:func:`split_areas`).

    Raises:
        CorrectionsError: invalid features (see :func:`parse_features`), unreadable or
            unusable areas, reviewed areas too large, nothing to hold out.
        JobCancelled: cancelled.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    from backend.inference.pipeline import Options, detections_from_probs, predict_grid
    from protocol.errors import JobCancelled
    from backend.inference.engines import get_engine
    from backend.inference.bands import to_uint8
    from backend.inference.grid import plan_grid
    from backend.inference.raster import WindowReader, open_source

    progress = progress or (lambda f, m: None)
    engine = engine or get_engine(card)
    class_ids = {c.name: c.id for c in card.classes}
    feats, warnings, repaired = parse_features(
        [f.to_wire() for f in params.features], class_ids,
        params.invalid_geometry or "repair")
    try:
        feat_crs = CRS.from_user_input(params.crs) if params.crs else None
    except CRSError as exc:
        raise CorrectionsError(f"invalid CRS of the corrected features: {exc}") from None
    if feats and feat_crs is None:
        raise CorrectionsError("the corrected features need a 'crs'", P.E_BAD_REQUEST)
    areas = parse_areas(params)
    n_areas = len(areas)
    for a in areas:
        if a.source.get("kind") == "pixels" and not 0 <= a.array < len(arrays):
            raise CorrectionsError(f"reviewed area {a.index} uses pixel frame {a.array}, "
                                   f"but the request has {len(arrays)}", P.E_BAD_REQUEST)
        if a.holdout is not None:
            a.holdout = bool(a.holdout)

    # bounds of each area in its raster's CRS, to split train / held-out
    bounds = []
    try:
        for a in areas:
            with open_source(a.source, arrays[a.array] if a.source.get("kind") == "pixels"
                             else None) as ds:
                if ds.crs is None:
                    raise CorrectionsError(f"the raster of reviewed area {a.index} has no "
                                           f"CRS")
                b = _bounds(a, ds)
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
    parts = split_areas(areas, bounds, holdout_fraction)
    if not any(p.holdout for p in parts) or all(p.holdout for p in parts):
        raise CorrectionsError("the reviewed areas cannot be split into a part to train "
                               "on and a part to check the result on")

    opts = Options.resolve(card)
    n_classes = len(card.classes)
    out_train: List[AreaData] = []
    out_hold: List[AreaData] = []
    total_px = 0
    used_features = set()
    for pi, a in enumerate(parts):
        if cancelled and cancelled():
            raise JobCancelled()
        progress(pi / len(parts), f"reading reviewed area {a.index + 1}/{n_areas}"
                                  + (f" ({a.part})" if a.part else ""))
        try:
            with open_source(a.source, arrays[a.array] if a.source.get("kind") == "pixels"
                             else None) as ds:
                own = _bounds(a, ds)
                read = own
                if a.holdout:  # with context around it (clipped to the raster by plan_grid)
                    m = CONTEXT_TILE_FRACTION * card.tile_size * card.gsd_m
                    if ds.crs.is_geographic:
                        m /= 111_320.0
                    read = (own[0] - m, own[1] - m, own[2] + m, own[3] + m)
                ds_crs = ds.crs
                grid = plan_grid(ds, list(read), None, card.gsd_m, card.bands,
                                 params.bands)
                total_px += grid.width * grid.height
                if total_px > MAX_REVIEWED_PIXELS:
                    raise CorrectionsError(
                        f"the reviewed areas hold more than {MAX_REVIEWED_PIXELS / 1e6:.0f} "
                        f"Mpx at the model's {card.gsd_m} m GSD; review smaller areas")
                reader = WindowReader(ds, grid)
                try:
                    data = reader.vrt.read(grid.bands + [reader.alpha])
                    probs, valid, _ = predict_grid(reader, grid, engine, opts.batch_size,
                                                   None, cancelled)
                finally:
                    reader.close()
                raster_crs = CRS.from_wkt(grid.crs_wkt)  # the grid's (UTM for degrees)
        except CorrectionsError:
            raise
        except InputError as exc:
            raise CorrectionsError(f"reviewed area {a.index}: {exc.message}", exc.code) from None
        image = np.ascontiguousarray(to_uint8(data[:-1], grid.stretch))
        valid = valid & (data[-1] > 0)
        pred, _ = detections_from_probs(probs, valid, grid, card, opts)
        # corrected polygons of this area, in the grid's CRS
        x0, y1 = grid.transform.c, grid.transform.f
        x1 = x0 + grid.width * grid.transform.a
        y0 = y1 + grid.height * grid.transform.e
        frame = box(x0, y0, x1, y1)
        scored = None
        if read != own:  # judge the part itself, not its context
            part = box(*own)
            if ds_crs != raster_crs:
                part = shape(transform_geom(ds_crs, raster_crs, mapping(part)))
            inside = rasterize([(part, 1)], out_shape=(grid.height, grid.width),
                               transform=grid.transform, fill=0, dtype="uint8") > 0
            scored = valid & inside
            frame = part
        shapes = []
        n_here = 0
        for fi, (g, cid, area_idx) in enumerate(feats):
            if area_idx is not None and area_idx != a.index:
                continue
            if feat_crs is not None and feat_crs != raster_crs:
                g = shape(transform_geom(feat_crs, raster_crs, mapping(g)))
            if not g.intersects(box(x0, y0, x1, y1)):
                continue
            shapes.append((g, cid))
            if g.intersects(frame):
                used_features.add(fi)
                n_here += 1
        target = np.zeros((grid.height, grid.width), np.uint8)
        if shapes:
            # larger polygons first, so a small polygon of another class drawn on top
            # of a big one stays visible
            shapes.sort(key=lambda s: -s[0].area)
            target = rasterize(shapes, out_shape=target.shape, transform=grid.transform,
                               fill=0, dtype="uint8")
        target[~valid] = 0
        judged = valid if scored is None else scored
        weight, hard = mistake_maps(pred, target, judged, mistake_weight)
        stats = diff_maps(pred, target, judged, n_classes)
        ad = AreaData(a, grid, image, valid, pred, target, weight, hard, stats, n_here,
                      scored)
        (out_hold if a.holdout else out_train).append(ad)
    unused = [(g, ai) for fi, (g, _, ai) in enumerate(feats) if fi not in used_features]
    in_gap = sum(1 for g, ai in unused
                 if any(_inside(g, feat_crs, b) for a, b in zip(areas, bounds)
                        if ai is None or ai == a.index))
    if len(unused) - in_gap:
        warnings.append(f"{len(unused) - in_gap} corrected feature(s) lie outside every "
                        f"reviewed area and were not used")
    if in_gap:
        warnings.append(f"{in_gap} corrected feature(s) lie in the strip left between the "
                        f"part trained on and the held-out part, so neither used them")
    progress(1.0, "corrections read")
    return Corrections(out_train, out_hold, warnings, len(feats), repaired)


# ----------------------------------------------------------------------------- sampling

class ChipSampler:
    """Training chips from corrected areas, weighted toward the mistakes.

    A chip is centred on a random *hard* pixel (an object-level mistake) with
    probability ``hard_fraction`` when the area has any, else placed uniformly; areas
    are drawn in proportion to ``sqrt(hard pixels) + sqrt(valid pixels) / 10`` so that
    areas with more mistakes give more chips. Chips smaller than ``chip`` (small areas)
    are padded by reflection with zero weight.

    Args:
        areas: training :class:`AreaData`.
        chip: side in pixels.
        rng: numpy generator.
        hard_fraction: share of chips centred on a mistake.
    """

    def __init__(self, areas: Sequence[AreaData], chip: int, rng: np.random.Generator,
                 hard_fraction: float = 0.7):
        self.areas = [a for a in areas if a.valid.any()]
        self.chip = int(chip)
        self.rng = rng
        self.hard_fraction = float(hard_fraction)
        self._hard = [np.flatnonzero(a.hard) for a in self.areas]
        self._valid = [np.flatnonzero(a.valid) for a in self.areas]
        w = np.array([math.sqrt(len(h)) + math.sqrt(len(v)) / 10.0
                      for h, v in zip(self._hard, self._valid)], np.float64)
        self.p = w / w.sum() if len(w) and w.sum() > 0 else None

    def __len__(self) -> int:
        return len(self.areas)

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 (B, chip, chip), target int64 (chip, chip), weight float32)``."""
        i = int(self.rng.choice(len(self.areas), p=self.p))
        a = self.areas[i]
        h, w = a.valid.shape
        pool = self._hard[i] if len(self._hard[i]) and self.rng.random() < self.hard_fraction \
            else self._valid[i]
        flat = int(pool[self.rng.integers(0, len(pool))])
        cy, cx = divmod(flat, w)
        c = self.chip
        # jitter so the mistake is not always in the centre
        cy += int(self.rng.integers(-c // 4, c // 4 + 1))
        cx += int(self.rng.integers(-c // 4, c // 4 + 1))
        r0 = int(np.clip(cy - c // 2, 0, max(0, h - c)))
        c0 = int(np.clip(cx - c // 2, 0, max(0, w - c)))
        img = a.image[:, r0:r0 + c, c0:c0 + c]
        tgt = a.target[r0:r0 + c, c0:c0 + c]
        wt = a.weight[r0:r0 + c, c0:c0 + c]
        ph, pw = c - tgt.shape[0], c - tgt.shape[1]
        if ph or pw:
            mode = "reflect" if min(tgt.shape) > max(ph, pw) else "edge"
            img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode=mode)
            tgt = np.pad(tgt, ((0, ph), (0, pw)), mode=mode)
            wt = np.pad(wt, ((0, ph), (0, pw)), constant_values=0.0)
        return img, tgt.astype(np.int64), wt.astype(np.float32)
