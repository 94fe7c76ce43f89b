"""What a retrain sends, built on the UI thread from a corrected result layer.

A result layer carries what its detection searched (custom layer properties written by
:func:`.memory.remember_detection`); :func:`prepare_retrain` reads them back with the
layer's polygons into a :class:`RetrainPlan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)

from protocol.errors import InputError
from protocol.holdout import HOLDOUT_FRACTION, MIN_HOLDOUT_OBJECTS, holdout_strip
from protocol.params import (
    CorrectedFeature,
    FileSource,
    RetrainParams,
    ReviewedArea,
    Source,
    source_from_wire,
)

from ..detect.crs import crs_from_text, extent_tuple
from ..detect.plan import RenderPlan, prepare_detect
from ..layers.review import review_of
from .memory import (PROP, Edits, class_of, clip_to_raster, count_edits, is_result_layer,
                     stored_reviewed)

#: The margin of a partial review, as the dialogs say it
#: (``backend.learning.partial.MARGIN_M``).
MARGIN_TEXT = "2 m"


@dataclass
class RetrainPlan:
    """What a retrain will send (built on the UI thread by :func:`prepare_retrain`).

    Attributes:
        layer_id, layer_name: the corrected result layer.
        model: the model (version) to fine-tune.
        detected_model: the model the layer was detected with.
        source: the raster file, or None when pixels must be rendered.
        render: the render plan for non-file rasters, else None.
        crs: the layer CRS (WKT): the CRS of ``features``.
        features: every polygon of the layer (inside the reviewed areas they are the
            truth, edited or not).
        reviewed: the reviewed areas (clipped to the raster).
        by_class: feature count per class name.
        reviewed_m2: surface of the reviewed area(s), m².
        invalid: number of features with an invalid geometry.
        edits: the user's edits since the detection, or None when unknown.
        notes: remarks for the user (classes filled in, ...).
        reviewed_count, pending_count: polygons whose ``review`` state the user gave,
            and those still pending (0 and 0 for a layer without the field).
        unvouched: indices into ``features`` of the candidate misses still pending:
            not objects the user vouched for, so a whole-extent review leaves them out.
        queued: polygons the user accepted, edited or deleted in the Review section
            (``added`` alone is what drawing by hand gives too).
        mode: ``"review"`` when the user reviewed polygons in the Review section and
            left others pending (a partial review: only the reviewed ones teach), else
            ``"extent"``.
    """

    layer_id: str
    layer_name: str
    model: str
    source: Optional[FileSource]
    render: Optional[RenderPlan]
    crs: str
    features: List[CorrectedFeature]
    reviewed: List[ReviewedArea]
    by_class: Dict[str, int] = field(default_factory=dict)
    reviewed_m2: float = 0.0
    invalid: int = 0
    edits: Optional[Edits] = None
    detected_model: str = ""
    notes: List[str] = field(default_factory=list)
    reviewed_count: int = 0
    pending_count: int = 0
    queued: int = 0
    unvouched: List[int] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """``"review"`` for a partial review, else ``"extent"`` (see the attributes)."""
        return "review" if self.queued and self.pending_count else "extent"

    def area_text(self) -> str:
        """The reviewed surface: ``"0.250 km²"`` from 0.1 km², else ``"400 m²"``."""
        return (f"{self.reviewed_m2 / 1e6:.3f} km²" if self.reviewed_m2 >= 1e5
                else f"{self.reviewed_m2:,.0f} m²")

    def edits_text(self) -> str:
        """``"Your edits: 1 deleted, 1 added, 0 reshaped, 0 reclassified."``, or why
        they are not known."""
        if self.edits is None:
            return ("Your edits cannot be counted: this layer does not remember its "
                    "detection's features.")
        if not self.edits.total:
            return ("You have not edited this layer: there is nothing to correct, the "
                    "new version would only repeat the detection.")
        return f"Your edits: {self.edits.text()}."

    def summary(self, mode: Optional[str] = None) -> str:
        """Two sentences: the user's edits, then what is sent (polygons, reviewed
        area; invalid geometries) in ``mode`` (default :attr:`mode`)."""
        if (mode or self.mode) == "review":
            return (f"You reviewed {self.reviewed_count} polygon"
                    f"{'s' if self.reviewed_count != 1 else ''} and left "
                    f"{self.pending_count} pending. Only the reviewed ones and "
                    f"{MARGIN_TEXT} around each teach the model; the rest of "
                    f"{self.area_text()} is ignored, and a quarter is kept apart to "
                    f"check the new version.")
        n = len(self.features)
        n_areas = len(self.reviewed)
        inv = f" ({self.invalid} with an invalid geometry)" if self.invalid else ""
        where = (f"the reviewed area of {self.area_text()}" if n_areas == 1 else
                 f"{n_areas} reviewed areas of {self.area_text()} in all")
        return (f"{self.edits_text()} In {where}, the layer's {n} "
                f"polygon{'s' if n != 1 else ''}{inv} are the truth and what none covers "
                f"is background; a quarter is kept apart to check the new version.")

    def held_out_objects(self) -> int:
        """About how many of the layer's polygons the part held out to judge the new
        version will hold: for one reviewed area, those meeting its held-out strip
        (``protocol.holdout.holdout_strip``, the engine's own cut); for several, a
        quarter of them (``HOLDOUT_FRACTION``: whole areas are held out). A lower
        bound: the engine also counts the model's detections the user deleted there."""
        if len(self.reviewed) != 1 or not self.reviewed[0].extent:
            return int(round(len(self.features) * HOLDOUT_FRACTION))
        area = self.reviewed[0]
        strip = QgsGeometry.fromRect(QgsRectangle(*holdout_strip(area.extent)[0]))
        src, dst = crs_from_text(area.extent_crs or ""), crs_from_text(self.crs)
        if src.isValid() and dst.isValid() and src != dst:
            try:
                strip.transform(QgsCoordinateTransform(src, dst, QgsProject.instance()))
            except QgsCsException:
                return int(round(len(self.features) * HOLDOUT_FRACTION))
        return sum(1 for f in self.features if QgsGeometry.fromWkt(f.wkt).intersects(strip))

    def holdout_warning(self) -> str:
        """A warning when the held-out part will hold fewer objects than a verdict needs
        (``protocol.holdout.MIN_HOLDOUT_OBJECTS``), said before the budget is spent;
        ``""`` otherwise."""
        n = self.held_out_objects()
        if n >= MIN_HOLDOUT_OBJECTS:
            return ""
        return (f"The part of your corrections held out to judge the new version will hold "
                f"about {n} object{'s' if n != 1 else ''}; a verdict needs at least "
                f"{MIN_HOLDOUT_OBJECTS}. With fewer the retrain ends without a verdict "
                f"(you may still keep the new version). Review a larger area, or several, "
                f"for a verdict.")

    def params(self, source: Source, budget_s: float, **options: Any) -> RetrainParams:
        """The retrain request of this plan.

        Args:
            source: :attr:`source`, or the pixel source of the rendered raster.
            budget_s: time of the whole retrain, seconds.
            **options: further :class:`~protocol.params.RetrainParams` fields
                (``invalid_geometry``, ``activate``, ``mode``...; ``mode`` default
                :attr:`mode`). Candidate misses still pending are sent only in
                ``review`` mode (they are not objects the user vouched for).
        """
        options.setdefault("mode", self.mode)
        skip = set() if options["mode"] == "review" else set(self.unvouched)
        feats = tuple(f for i, f in enumerate(self.features) if i not in skip)
        return RetrainParams(source, self.model, feats, crs=self.crs,
                             reviewed=tuple(self.reviewed), budget_s=float(budget_s),
                             **options)


def _extent_area_m2(area: ReviewedArea, layer_crs: QgsCoordinateReferenceSystem,
                    project: QgsProject) -> float:
    """The surface of a reviewed area, in square units of ``layer_crs`` (a metre CRS)."""
    rect = QgsRectangle(*area.extent)
    src = crs_from_text(area.extent_crs) if area.extent_crs else layer_crs
    if src.isValid() and layer_crs.isValid() and src != layer_crs:
        try:
            rect = QgsCoordinateTransform(src, layer_crs, project).transformBoundingBox(rect)
        except QgsCsException:
            pass  # an approximate surface in the area's own units is better than none
    return rect.width() * rect.height()


def _clip_reviewed(reviewed: List[ReviewedArea], view: QgsRectangle,
                   view_crs: QgsCoordinateReferenceSystem, project: QgsProject
                   ) -> List[ReviewedArea]:
    """The parts of ``reviewed`` inside the map view; areas outside it are dropped."""
    out = []
    for r in reviewed:
        if not r.extent:
            continue
        r_crs = crs_from_text(r.extent_crs or "")
        v = QgsRectangle(view)
        if r_crs.isValid() and r_crs != view_crs:
            try:
                v = QgsCoordinateTransform(view_crs, r_crs, project).transformBoundingBox(v)
            except QgsCsException:
                continue
        inter = QgsRectangle(*r.extent).intersect(v)
        if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
            continue
        out.append(ReviewedArea(extent_tuple(inter), r.extent_crs, r.source, r.holdout,
                                r.array))
    return out


def _raster_of(layer: QgsMapLayer, source: Optional[FileSource],
               project: QgsProject) -> Optional[QgsRasterLayer]:
    """The raster a result layer was detected in: the project's layer, else the
    remembered file opened (only its extent and CRS are used); None when neither."""
    raster = project.mapLayer(str(layer.customProperty(PROP + "raster_layer_id", "")))
    if isinstance(raster, QgsRasterLayer) and raster.isValid():
        return raster
    if isinstance(source, FileSource):
        opened = QgsRasterLayer(source.path, "reviewed raster", "gdal")
        return opened if opened.isValid() else None
    return None


def prepare_retrain(layer: Optional[QgsMapLayer], classes: Optional[List[Dict[str, Any]]] = None,
                    model: Optional[str] = None, project: Optional[QgsProject] = None,
                    view_extent: Optional[QgsRectangle] = None,
                    view_crs: Optional[QgsCoordinateReferenceSystem] = None) -> RetrainPlan:
    """Check a corrected result layer and collect what a retrain sends (UI thread).

    Args:
        layer: the corrected result layer.
        classes: the model card's classes (to fill a missing ``class`` when the model
            has a single class, and to check names).
        model: the model to fine-tune (default: the one the layer was detected with).
        project: default ``QgsProject.instance()``.
        view_extent, view_crs: when given, only the part of the detection extent inside
            this map view counts as reviewed.

    The reviewed areas are clipped to the raster (layers remembered before that was
    done included); the user's edits are counted against the detection
    (:func:`.memory.count_edits`).

    Raises:
        InputError: not a result layer, a raster that is gone, features without a
            class in a multi-class model, an unknown class name, no reviewed area.
    """
    project = project or QgsProject.instance()
    _check_result_layer(layer)
    detected = str(layer.customProperty(PROP + "model"))
    names = [str(c.get("name")) for c in (classes or []) if c.get("name")]
    source, render = _detected_source(layer, project)
    reviewed = _reviewed_areas(layer, source, project, view_extent, view_crs)
    found = _corrected_features(layer, names)
    plan = RetrainPlan(layer_id=layer.id(), layer_name=layer.name(), model=model or detected,
                       source=source, render=render, crs=layer.crs().toWkt(),
                       features=found.features, reviewed=reviewed, by_class=found.by_class,
                       invalid=found.invalid, edits=count_edits(layer),
                       reviewed_count=found.reviewed, pending_count=found.pending,
                       queued=found.queued, unvouched=found.unvouched,
                       detected_model=detected)
    plan.reviewed_m2 = sum(_extent_area_m2(r, layer.crs(), project)
                           for r in reviewed if r.extent)
    if found.missing:
        plan.notes.append(f"{found.missing} feature(s) without a class count as "
                          f"'{names[0]}'.")
    return plan


def _check_result_layer(layer: Optional[QgsMapLayer]) -> None:
    """Raise :class:`InputError` unless ``layer`` is a polygon result layer of a
    detection (:func:`.memory.is_result_layer`)."""
    if layer is None:
        raise InputError("Select the corrected Ortholens result layer first.")
    if not is_result_layer(layer):
        raise InputError(
            f"'{layer.name()}' is not an Ortholens result layer of this project: retrain "
            "from a layer made by 'Detect in extent' (its detection extent and raster are "
            "remembered there).")
    if QgsWkbTypes.geometryType(layer.wkbType()) != QgsWkbTypes.PolygonGeometry:
        raise InputError(f"'{layer.name()}' is not a polygon layer.")


def _detected_source(layer: QgsMapLayer, project: QgsProject
                     ) -> Tuple[Optional[FileSource], Optional[RenderPlan]]:
    """What the detection of ``layer`` searched: ``(file source, None)``, or
    ``(None, render plan)`` for a raster QGIS rendered (its pixels are rendered again).

    Raises:
        InputError: the rendered raster is no longer in the project.
    """
    source_txt = str(layer.customProperty(PROP + "source", "") or "")
    source = source_from_wire(json.loads(source_txt)) if source_txt else None
    if source is not None:
        return source, None
    raster = project.mapLayer(str(layer.customProperty(PROP + "raster_layer_id", "")))
    if raster is None:
        raise InputError(
            "The raster this layer was detected in is no longer in the project; add "
            "it again (it was rendered by QGIS, so the daemon needs QGIS to read it).")
    r_crs = crs_from_text(str(layer.customProperty(PROP + "render_crs", "")))
    r_ext = QgsRectangle(*json.loads(str(layer.customProperty(PROP + "render_extent"))))
    return None, prepare_detect(raster, r_ext, r_crs, project.transformContext(),
                                force_pixels=True).render


def _reviewed_areas(layer: QgsMapLayer, source: Optional[FileSource], project: QgsProject,
                    view_extent: Optional[QgsRectangle],
                    view_crs: Optional[QgsCoordinateReferenceSystem]) -> List[ReviewedArea]:
    """The reviewed areas remembered on ``layer``, clipped to its raster and, when
    given, to the map view.

    Raises:
        InputError: none is left.
    """
    raster = _raster_of(layer, source, project)
    reviewed = [c for c in (clip_to_raster(r, raster, project)
                            for r in stored_reviewed(layer)) if c]
    if view_extent is not None and view_crs is not None:
        reviewed = _clip_reviewed(reviewed, view_extent, view_crs, project)
    if not reviewed:
        raise InputError("No reviewed area: the map view does not overlap the "
                         "detection extent of this layer on its raster.")
    return reviewed


@dataclass
class _Corrections:
    """The polygons of a corrected layer (:func:`_corrected_features`).

    Attributes:
        features: each polygon with its class.
        by_class: polygon count per class name.
        invalid: polygons with an invalid geometry.
        missing: polygons without a class, given the model's only class.
    """

    features: List[CorrectedFeature] = field(default_factory=list)
    by_class: Dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    missing: int = 0
    reviewed: int = 0
    pending: int = 0
    queued: int = 0
    unvouched: List[int] = field(default_factory=list)


def _corrected_features(layer: QgsVectorLayer, names: List[str]) -> _Corrections:
    """Every polygon of ``layer`` with its class (WKT to the millimetre); a polygon
    without a class gets the model's only class.

    Args:
        layer: the corrected result layer.
        names: the model's class names (empty: any class is accepted).

    Raises:
        InputError: a polygon has no class and the model has several (or none), or a
            class is not one of ``names``.
    """
    found, unknown = _Corrections(), set()
    ci = layer.fields().indexOf("class")
    ri, oi = layer.fields().indexOf("review"), layer.fields().indexOf("origin")
    for f in layer.getFeatures():
        g = f.geometry()
        if g is None or g.isNull() or g.isEmpty():
            continue
        name = class_of(f, ci)
        if name is None:
            if len(names) == 1:
                name = names[0]
                found.missing += 1
            else:
                raise InputError(
                    f"Feature {f.id()} has no 'class'; set it to one of "
                    f"{', '.join(names) or 'the model classes'} before retraining.")
        if names and name not in names:
            unknown.add(name)
        if not g.isGeosValid():
            found.invalid += 1
        state, unvouched = review_of(f, ri, oi)
        if unvouched:
            found.unvouched.append(len(found.features))
        found.features.append(CorrectedFeature(g.asWkt(3), class_name=name, review=state))
        if state == "pending":
            found.pending += 1
        elif state is not None:
            found.reviewed += 1
            found.queued += state != "added"
        found.by_class[name] = found.by_class.get(name, 0) + 1
    if unknown:
        raise InputError(f"Unknown class(es) {', '.join(sorted(unknown))}: the model "
                         f"knows {', '.join(names)}. Fix the 'class' attribute.")
    return found


__all__ = ["RetrainPlan", "prepare_retrain"]
