"""What a retrain sends, built on the UI thread from a corrected result layer.

A result layer carries what its detection searched (custom layer properties written by
:func:`remember_detection`); :func:`prepare_retrain` reads them back with the layer's
polygons into a :class:`RetrainPlan`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

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
from protocol.params import (
    CorrectedFeature,
    FileSource,
    RetrainParams,
    ReviewedArea,
    Source,
    source_from_wire,
)

from ..detect.crs import crs_from_text, crs_wkt, extent_tuple
from ..detect.plan import DetectPlan, RenderPlan, prepare_detect

#: Prefix of the custom layer properties of a result layer.
PROP = "ortholens/"
#: Custom layer properties written by :func:`remember_detection`.
PROPS = ("model", "raster_layer_id", "source", "reviewed", "render_crs", "render_extent",
         "original")


def _digest(geom: QgsGeometry) -> str:
    """A short fingerprint of a geometry (its WKT to the millimetre)."""
    return hashlib.sha1(geom.asWkt(3).encode()).hexdigest()[:12]


def _class_of(feature: Any, index: int) -> Optional[str]:
    """The ``class`` attribute of ``feature`` (field ``index``, -1: none), None when
    empty or NULL."""
    value = feature.attribute(index) if index >= 0 else None
    return None if value is None or str(value) in ("", "NULL") else str(value)


def _snapshot(layer: QgsVectorLayer) -> Dict[str, List[Any]]:
    """``{feature id: [class, geometry fingerprint]}`` of every feature of ``layer``."""
    ci = layer.fields().indexOf("class")
    out = {}
    for f in layer.getFeatures():
        g = f.geometry()
        out[str(f.id())] = [_class_of(f, ci), "" if g is None or g.isNull() else _digest(g)]
    return out


def clip_to_raster(area: ReviewedArea, raster: Optional[QgsRasterLayer],
                   project: Optional[QgsProject] = None) -> Optional[ReviewedArea]:
    """The part of a reviewed area on its raster, in the raster's CRS.

    Args:
        area: the reviewed area (``extent`` in ``extent_crs``; None: the whole raster).
        raster: the raster it lies on; None or invalid: ``area`` is returned unchanged.
        project: for the transform context (default ``QgsProject.instance()``).

    Returns:
        The area with ``extent`` = its bounding box in the raster CRS intersected with
        the raster's extent, ``extent_crs`` the raster CRS (WKT); None when they do not
        overlap (or the transform fails).
    """
    if raster is None or not raster.isValid():
        return area
    project = project or QgsProject.instance()
    r_crs = raster.crs()
    rect = QgsRectangle(*area.extent) if area.extent else QgsRectangle(raster.extent())
    src = crs_from_text(area.extent_crs) if area.extent and area.extent_crs else r_crs
    if src.isValid() and r_crs.isValid() and src != r_crs:
        try:
            rect = QgsCoordinateTransform(src, r_crs, project).transformBoundingBox(rect)
        except QgsCsException:
            return None
    inter = rect.intersect(raster.extent())
    if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
        return None
    return ReviewedArea(extent_tuple(inter), crs_wkt(r_crs), area.source, area.holdout,
                        area.array)


def remember_detection(layer: QgsMapLayer, plan: DetectPlan, model_id: str,
                       project: Optional[QgsProject] = None) -> None:
    """Store on a result layer what the detection searched and found (UI thread).

    The reviewed area is the searched extent clipped to the raster (a map view wider
    than the raster covers blank canvas, which nobody reviewed); the features as
    detected (class and geometry fingerprint per feature id) let :func:`count_edits`
    tell the user's edits apart later.

    Args:
        layer: the result layer.
        plan: the plan of the detection.
        model_id: the model it used.
        project: where the raster layer is (default ``QgsProject.instance()``).
    """
    project = project or QgsProject.instance()
    layer.setCustomProperty(PROP + "model", str(model_id))
    layer.setCustomProperty(PROP + "raster_layer_id", str(plan.layer_id))
    if isinstance(layer, QgsVectorLayer):
        layer.setCustomProperty(PROP + "original", json.dumps(_snapshot(layer)))
    if plan.source is not None:
        layer.setCustomProperty(PROP + "source", json.dumps(plan.source.to_wire()))
        reviewed = ReviewedArea(plan.extent, plan.extent_crs)
        raster = project.mapLayer(str(plan.layer_id))
        reviewed = clip_to_raster(reviewed, raster if isinstance(raster, QgsRasterLayer)
                                  else None, project) or reviewed
    else:  # rendered pixels: the extent in the render CRS (clipped to the layer)
        r = plan.render
        ext = extent_tuple(r.extent)
        layer.setCustomProperty(PROP + "source", "")
        layer.setCustomProperty(PROP + "render_crs", r.crs_wkt)
        layer.setCustomProperty(PROP + "render_extent", json.dumps(ext))
        reviewed = ReviewedArea(ext, r.crs_wkt)
    layer.setCustomProperty(PROP + "reviewed", json.dumps([reviewed.to_wire()]))


def is_result_layer(layer: Optional[QgsMapLayer]) -> bool:
    """True for a vector layer written by a detection (see :func:`remember_detection`)."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and bool(layer.customProperty(PROP + "model", "")))


@dataclass
class Edits:
    """The user's edits of a result layer since its detection (:func:`count_edits`).

    Attributes:
        deleted: detected features no longer in the layer.
        added: features that were not detected (drawn by the user).
        reshaped: detected features whose geometry changed.
        reclassified: detected features whose ``class`` changed (a feature both
            reshaped and reclassified counts in both).
        kept: detected features left as they were.
    """

    deleted: int = 0
    added: int = 0
    reshaped: int = 0
    reclassified: int = 0
    kept: int = 0

    @property
    def total(self) -> int:
        """All edits (deleted + added + reshaped + reclassified)."""
        return self.deleted + self.added + self.reshaped + self.reclassified

    def text(self) -> str:
        """``"1 deleted, 1 added, 0 reshaped, 0 reclassified"``."""
        return (f"{self.deleted} deleted, {self.added} added, {self.reshaped} reshaped, "
                f"{self.reclassified} reclassified")


def count_edits(layer: QgsVectorLayer) -> Optional[Edits]:
    """Compare ``layer`` (with unsaved edits) with its features as detected.

    Returns:
        The counts, or None when the layer does not remember its detection's features
        (remembered before this was recorded).
    """
    try:
        original = json.loads(str(layer.customProperty(PROP + "original", "") or "null"))
    except ValueError:
        return None
    if not isinstance(original, dict):
        return None
    now = _snapshot(layer)
    e = Edits()
    e.deleted = sum(1 for fid in original if fid not in now)
    for fid, (cls, digest) in now.items():
        if fid not in original:
            e.added += 1
            continue
        o_cls, o_digest = original[fid]
        changed = False
        if digest != o_digest:
            e.reshaped += 1
            changed = True
        if cls != o_cls and cls is not None:
            e.reclassified += 1
            changed = True
        e.kept += 0 if changed else 1
    return e


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

    def summary(self) -> str:
        """Two sentences: the user's edits, then what is sent (polygons, reviewed
        area; invalid geometries)."""
        n = len(self.features)
        n_areas = len(self.reviewed)
        inv = f" ({self.invalid} with an invalid geometry)" if self.invalid else ""
        where = (f"the reviewed area of {self.area_text()}" if n_areas == 1 else
                 f"{n_areas} reviewed areas of {self.area_text()} in all")
        return (f"{self.edits_text()} In {where}, the layer's {n} "
                f"polygon{'s' if n != 1 else ''}{inv} are the truth and what none covers "
                f"is background; a quarter is kept apart to check the new version.")

    def params(self, source: Source, budget_s: float, **options: Any) -> RetrainParams:
        """The retrain request of this plan.

        Args:
            source: :attr:`source`, or the pixel source of the rendered raster.
            budget_s: time of the whole retrain, seconds.
            **options: further :class:`~protocol.params.RetrainParams` fields
                (``invalid_geometry``, ``activate``...).
        """
        return RetrainParams(source, self.model, tuple(self.features), crs=self.crs,
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


def _stored_reviewed(layer: QgsMapLayer) -> List[ReviewedArea]:
    """The reviewed areas remembered on ``layer`` (none when the property is unreadable)."""
    try:
        return [ReviewedArea.from_wire(r)
                for r in json.loads(str(layer.customProperty(PROP + "reviewed", "[]")))]
    except (ValueError, TypeError, KeyError):
        return []


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
    (:func:`count_edits`).

    Raises:
        InputError: not a result layer, a raster that is gone, features without a
            class in a multi-class model, an unknown class name, no reviewed area.
    """
    project = project or QgsProject.instance()
    if layer is None:
        raise InputError("Select the corrected Ortholens result layer first.")
    if not is_result_layer(layer):
        raise InputError(
            f"'{layer.name()}' is not an Ortholens result layer of this project: retrain "
            "from a layer made by 'Detect in extent' (its detection extent and raster are "
            "remembered there).")
    if QgsWkbTypes.geometryType(layer.wkbType()) != QgsWkbTypes.PolygonGeometry:
        raise InputError(f"'{layer.name()}' is not a polygon layer.")
    detected = str(layer.customProperty(PROP + "model"))
    model = model or detected
    names = [str(c.get("name")) for c in (classes or []) if c.get("name")]
    source_txt = str(layer.customProperty(PROP + "source", "") or "")
    source = source_from_wire(json.loads(source_txt)) if source_txt else None
    render = None
    if source is None:
        raster = project.mapLayer(str(layer.customProperty(PROP + "raster_layer_id", "")))
        if raster is None:
            raise InputError(
                "The raster this layer was detected in is no longer in the project; add "
                "it again (it was rendered by QGIS, so the daemon needs QGIS to read it).")
        r_crs = crs_from_text(str(layer.customProperty(PROP + "render_crs", "")))
        r_ext = QgsRectangle(*json.loads(str(layer.customProperty(PROP + "render_extent"))))
        render = prepare_detect(raster, r_ext, r_crs, project.transformContext(),
                                force_pixels=True).render
    reviewed = _stored_reviewed(layer)
    raster = _raster_of(layer, source, project)
    reviewed = [c for c in (clip_to_raster(r, raster, project) for r in reviewed) if c]
    if view_extent is not None and view_crs is not None:
        reviewed = _clip_reviewed(reviewed, view_extent, view_crs, project)
    if not reviewed:
        raise InputError("No reviewed area: the map view does not overlap the "
                         "detection extent of this layer on its raster.")
    feats, by_class, invalid, missing, unknown = [], {}, 0, 0, set()
    ci = layer.fields().indexOf("class")
    for f in layer.getFeatures():
        g = f.geometry()
        if g is None or g.isNull() or g.isEmpty():
            continue
        name = _class_of(f, ci)
        if name is None:
            if len(names) == 1:
                name = names[0]
                missing += 1
            else:
                raise InputError(
                    f"Feature {f.id()} has no 'class'; set it to one of "
                    f"{', '.join(names) or 'the model classes'} before retraining.")
        if names and name not in names:
            unknown.add(name)
        if not g.isGeosValid():
            invalid += 1
        feats.append(CorrectedFeature(g.asWkt(3), class_name=name))
        by_class[name] = by_class.get(name, 0) + 1
    if unknown:
        raise InputError(f"Unknown class(es) {', '.join(sorted(unknown))}: the model "
                         f"knows {', '.join(names)}. Fix the 'class' attribute.")
    plan = RetrainPlan(layer_id=layer.id(), layer_name=layer.name(), model=model,
                       source=source, render=render, crs=layer.crs().toWkt(),
                       features=feats, reviewed=reviewed, by_class=by_class,
                       invalid=invalid, edits=count_edits(layer),
                       detected_model=detected)
    plan.reviewed_m2 = sum(_extent_area_m2(r, layer.crs(), project)
                           for r in reviewed if r.extent)
    if missing:
        plan.notes.append(f"{missing} feature(s) without a class count as "
                          f"'{names[0]}'.")
    return plan


__all__ = ["PROP", "PROPS", "clip_to_raster", "remember_detection", "is_result_layer",
           "Edits", "count_edits", "RetrainPlan", "prepare_retrain"]
