"""What a result layer remembers of its detection, and what the user changed since.

Every detection stores on its result layer (custom layer properties, :data:`PROP` +
one of :data:`PROPS`, saved with the project) the raster it searched, the extent it
covered, the model it used and its features as detected (:func:`remember_detection`);
:func:`count_edits` compares the layer with those features. :mod:`.plan` reads the rest
back to build a retrain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from protocol.params import ReviewedArea

from ..detect.crs import crs_from_text, crs_wkt, extent_tuple
from ..detect.plan import DetectPlan

#: Prefix of the custom layer properties of a result layer.
PROP = "ortholens/"
#: Custom layer properties written by :func:`remember_detection`.
PROPS = ("model", "raster_layer_id", "source", "reviewed", "render_crs", "render_extent",
         "original")


def _digest(geom: QgsGeometry) -> str:
    """A short fingerprint of a geometry (its WKT to the millimetre)."""
    return hashlib.sha1(geom.asWkt(3).encode()).hexdigest()[:12]


def class_of(feature: Any, index: int) -> Optional[str]:
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
        out[str(f.id())] = [class_of(f, ci), "" if g is None or g.isNull() else _digest(g)]
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


def stored_reviewed(layer: QgsMapLayer) -> List[ReviewedArea]:
    """The reviewed areas remembered on ``layer`` (none when the property is unreadable)."""
    try:
        return [ReviewedArea.from_wire(r)
                for r in json.loads(str(layer.customProperty(PROP + "reviewed", "[]")))]
    except (ValueError, TypeError, KeyError):
        return []


__all__ = ["PROP", "PROPS", "class_of", "clip_to_raster", "remember_detection",
           "is_result_layer", "Edits", "count_edits", "stored_reviewed"]
