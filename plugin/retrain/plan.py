"""What a retrain sends, built on the UI thread from a corrected result layer.

A result layer carries what its detection searched (custom layer properties written by
:func:`remember_detection`); :func:`prepare_retrain` reads them back with the layer's
polygons into a :class:`RetrainPlan`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsMapLayer,
    QgsProject,
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

from ..detect.crs import crs_from_text, extent_tuple
from ..detect.plan import DetectPlan, RenderPlan, prepare_detect

#: Prefix of the custom layer properties of a result layer.
PROP = "ortholens/"
#: Custom layer properties written by :func:`remember_detection`.
PROPS = ("model", "raster_layer_id", "source", "reviewed", "render_crs", "render_extent")


def remember_detection(layer: QgsMapLayer, plan: DetectPlan, model_id: str) -> None:
    """Store on a result layer what the detection searched (UI thread).

    Args:
        layer: the result layer.
        plan: the plan of the detection.
        model_id: the model it used.
    """
    layer.setCustomProperty(PROP + "model", str(model_id))
    layer.setCustomProperty(PROP + "raster_layer_id", str(plan.layer_id))
    if plan.source is not None:
        layer.setCustomProperty(PROP + "source", json.dumps(plan.source.to_wire()))
        reviewed = ReviewedArea(plan.extent, plan.extent_crs)
    else:  # rendered pixels: the extent in the render CRS
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
class RetrainPlan:
    """What a retrain will send (built on the UI thread by :func:`prepare_retrain`).

    Attributes:
        layer_id, layer_name: the corrected result layer.
        model: the model (version) to fine-tune.
        source: the raster file, or None when pixels must be rendered.
        render: the render plan for non-file rasters, else None.
        crs: the layer CRS (WKT): the CRS of ``features``.
        features: every polygon of the layer.
        reviewed: the reviewed areas.
        by_class: feature count per class name.
        reviewed_m2: surface of the reviewed area(s), m².
        invalid: number of features with an invalid geometry.
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
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph: features per class and reviewed area."""
        n = len(self.features)
        classes = ", ".join(f"{v} {k}" for k, v in sorted(self.by_class.items())) or "none"
        area = (f"{self.reviewed_m2 / 1e6:.3f} km²" if self.reviewed_m2 >= 1e5
                else f"{self.reviewed_m2:,.0f} m²")
        inv = f"; {self.invalid} with an invalid geometry" if self.invalid else ""
        return (f"{n} corrected feature{'s' if n != 1 else ''} ({classes}){inv} in "
                f"{len(self.reviewed)} reviewed area{'s' if len(self.reviewed) != 1 else ''}"
                f" of {area}. Inside the reviewed area, whatever no polygon covers counts "
                f"as background; a quarter of it is kept apart to check the new version.")

    def params(self, source: Source, budget_s: float, **options: Any) -> RetrainParams:
        """The retrain request of this plan.

        Args:
            source: :attr:`source`, or the pixel source of the rendered raster.
            budget_s: fine-tuning time, seconds.
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
    model = model or str(layer.customProperty(PROP + "model"))
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
    if view_extent is not None and view_crs is not None:
        reviewed = _clip_reviewed(reviewed, view_extent, view_crs, project)
    if not reviewed:
        raise InputError("No reviewed area: the map view does not overlap the "
                         "detection extent of this layer.")
    feats, by_class, invalid, missing, unknown = [], {}, 0, 0, set()
    ci = layer.fields().indexOf("class")
    for f in layer.getFeatures():
        g = f.geometry()
        if g is None or g.isNull() or g.isEmpty():
            continue
        name = f.attribute(ci) if ci >= 0 else None
        name = None if name is None or str(name) in ("", "NULL") else str(name)
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
                       invalid=invalid)
    plan.reviewed_m2 = sum(_extent_area_m2(r, layer.crs(), project)
                           for r in reviewed if r.extent)
    if missing:
        plan.notes.append(f"{missing} feature(s) without a class count as "
                          f"'{names[0]}'.")
    return plan


__all__ = ["PROP", "PROPS", "remember_detection", "is_result_layer", "RetrainPlan",
           "prepare_retrain"]
