"""Add by click: a map tool whose click asks the engine for the object around it.

The engine grows the object under the click on the model's probabilities at a relaxed
threshold (a ``region`` request, ``protocol.review.RegionParams``; about 0.3 s on a
CPU); :func:`region_polygon` turns its answer into a polygon of the result layer.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Optional, Tuple

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.core import (QgsCoordinateTransform, QgsGeometry, QgsPointXY, QgsProject,
                       QgsVectorLayer)
from qgis.gui import QgsMapCanvas, QgsMapToolEmitPoint

from protocol.errors import InputError
from protocol.params import FileSource, source_from_wire
from protocol.review import RegionParams

from ..detect.crs import crs_from_text, crs_wkt
from ..retrain.memory import PROP

#: ``region_fn(params) -> result``: sends a ``region`` request, returns the ``result``.
RegionFn = Callable[[RegionParams], Dict[str, Any]]


class ClickTool(QgsMapToolEmitPoint):
    """The map tool of Add by click: each left click emits ``clicked(point)`` (map
    canvas CRS)."""

    clicked = pyqtSignal(QgsPointXY)

    def __init__(self, canvas: QgsMapCanvas):
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)
        self.canvasClicked.connect(self._clicked)

    def _clicked(self, point: QgsPointXY, button: Any) -> None:
        if button == Qt.LeftButton:
            self.clicked.emit(point)


def region_request(layer: QgsVectorLayer, point: QgsPointXY, canvas_crs: Any
                   ) -> RegionParams:
    """The ``region`` request of a click at ``point`` (``canvas_crs``) on the raster the
    result ``layer`` was detected in, with its model.

    Raises:
        InputError: the layer was not detected in a raster file (a rendered raster's
            pixels cannot be grown on).
    """
    text = str(layer.customProperty(PROP + "source", "") or "")
    source = source_from_wire(json.loads(text)) if text else None
    if not isinstance(source, FileSource):
        raise InputError("Add by click needs a result detected in a raster file; this "
                         "one was rendered by QGIS.")
    model = str(layer.customProperty(PROP + "model", "") or "")
    return RegionParams(source, model, float(point.x()), float(point.y()),
                        crs_wkt(canvas_crs))


def region_polygon(result: Dict[str, Any], layer: QgsVectorLayer
                   ) -> Optional[Tuple[QgsGeometry, Dict[str, Any]]]:
    """``(geometry in the layer's CRS, attribute values)`` of a ``region`` result, or
    None when the engine found nothing under the click; the values carry
    ``origin`` ``click`` and ``review`` ``added``."""
    feats = result.get("features") or []
    if not feats:
        return None
    f = dict(feats[0])
    geom = QgsGeometry.fromWkt(f.pop("wkt"))
    src = crs_from_text(str(result.get("crs") or ""))
    if src.isValid() and src != layer.crs():
        geom.transform(QgsCoordinateTransform(src, layer.crs(), QgsProject.instance()))
    f.update(origin="click", review="added")
    return geom, f


__all__ = ["ClickTool", "RegionFn", "region_request", "region_polygon"]
