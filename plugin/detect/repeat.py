"""A detection run again with the same settings on the same extent.

Each result layer carries its *run key* (:data:`RUN_KEY`, a custom layer property saved
with the project): the raster layer, the extent searched (the map view on the raster,
to a decimetre of its CRS) and the model with the values it runs with. Before Detect in extent starts,
:func:`same_run` looks for a result layer of the project with the key of the new
request: the same detection would only make a duplicate. The dock then says which
layer holds it, and a second press of Detect in extent runs it anyway.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from qgis.core import (QgsCoordinateTransform, QgsCsException, QgsMapLayer, QgsProject,
                       QgsRectangle)

from .crs import crs_from_text
from .plan import DetectPlan

#: The custom layer property holding a result layer's run key.
RUN_KEY = "ortholens/run_key"


def run_key(plan: DetectPlan, card: Optional[Dict[str, Any]],
            options: Dict[str, Any]) -> str:
    """The run key of a detection (see the module docstring).

    Args:
        plan: the checked request (raster layer and extent).
        card: the model card the dock shows (None: the engine's default model).
        options: the values the user set (``threshold``, ``min_area_m2``); those not
            set are the card's.
    """
    if plan.extent is not None:
        rect, crs = QgsRectangle(*plan.extent), plan.extent_crs or ""
    else:
        rect, crs = QgsRectangle(plan.pixels_plan().extent), plan.pixels_plan().crs_wkt
    raster = QgsProject.instance().mapLayer(str(plan.layer_id))
    if raster is not None and crs:  # what is searched: the view on the raster
        try:
            rect = rect.intersect(QgsCoordinateTransform(
                raster.crs(), crs_from_text(crs), QgsProject.instance())
                .transformBoundingBox(raster.extent()))
        except QgsCsException:
            pass
    card = card or {}
    values = {k: options.get(k, card.get(k)) for k in ("threshold", "min_area_m2")}
    extent = [round(v, 1) for v in (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(),
                                     rect.yMaximum())]
    return json.dumps({"layer": plan.layer_id, "extent": extent, "crs": crs,
                       "model": card.get("id"), **values}, sort_keys=True)


def same_run(key: str, project: Optional[QgsProject] = None) -> Optional[QgsMapLayer]:
    """The project's newest result layer made with run key ``key``, or None."""
    project = project or QgsProject.instance()
    found = [layer for layer in project.mapLayers().values()
             if layer.customProperty(RUN_KEY, "") == key]
    return max(found, key=lambda layer: int(layer.customProperty("ortholens/run", 0) or 0),
               default=None)


__all__ = ["RUN_KEY", "run_key", "same_run"]
