"""The review of the active result layer: the dock's Review section
(:mod:`..dock.review`) and the Add by click tool (:mod:`.click`) at work.

The queue is the layer's polygons, most uncertain first (``protocol.review``); a layer
without the review fields (a batch job's, an older result) gets them when it is first
shown (:func:`..layers.review.add_review_fields`). Accept and Delete move on to the
next polygon; Edit starts the layer's editing and the vertex tool on the polygon.
"""

from __future__ import annotations

from typing import Any, List, Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication
from qgis.core import (Qgis, QgsCoordinateTransform, QgsPointXY, QgsProject,
                       QgsVectorLayer)

from protocol.errors import OrtholensError

from ..dock.review import ReviewSection
from ..layers.review import (add_polygon, add_review_fields, has_review_fields, queue,
                             review_counts, review_state, set_review)
from ..retrain.memory import is_result_layer
from .click import ClickTool, RegionFn, region_polygon, region_request

#: Least side of the view around a reviewed polygon, metres: the roof and its
#: neighbours (100 pixels of a 0.3 m orthophoto).
CONTEXT_M = 30.0
#: The view around a polygon is this many times its larger side.
CONTEXT_FACTOR = 3.0


def daemon_region(params) -> dict:
    """Send a ``region`` request to the engine of the plugin's settings."""
    from ..connection import connect_daemon
    from ..settings import daemon_settings
    client = connect_daemon(daemon_settings())
    try:
        return client.region(params)
    finally:
        client.close()


class ReviewController:
    """Drives the Review section on the active layer.

    Args:
        plugin: the plugin (``iface``, ``dock``, ``notify``).
        region_fn: sends a ``region`` request (default: to the plugin's engine).

    Attributes:
        section: the :class:`~..dock.review.ReviewSection`; layer: the layer reviewed;
        order: its feature ids in review order; pos: the index shown (-1: none).
    """

    def __init__(self, plugin: Any, region_fn: Optional[RegionFn] = None):
        self.plugin, self.iface = plugin, plugin.iface
        self.region_fn = region_fn or daemon_region
        self.section = plugin.dock.add_section(ReviewSection(plugin.dock.body()))
        self.layer: Optional[QgsVectorLayer] = None
        self.order: List[int] = []
        self.pos = -1
        self.tool = ClickTool(self.iface.mapCanvas())
        self.tool.clicked.connect(self.add_at)
        self.tool.deactivated.connect(lambda: self.section.buttons["add"].setChecked(False))
        self.section.stepRequested.connect(self.step)
        self.section.stateRequested.connect(self.set_state)
        self.section.addRequested.connect(self.toggle_add)
        self.iface.currentLayerChanged.connect(self.show_layer)
        self.show_layer(self.iface.activeLayer())

    def unload(self) -> None:
        """Disconnect from QGIS and give the map tool back."""
        try:
            self.iface.currentLayerChanged.disconnect(self.show_layer)
        except (TypeError, RuntimeError):
            pass
        canvas = self.iface.mapCanvas()
        if canvas.mapTool() is self.tool:
            canvas.unsetMapTool(self.tool)

    def show_layer(self, layer: Any) -> None:
        """Review ``layer`` when it is a result layer (the dock's, or any layer of
        result polygons: a batch job's; its review fields added when it has none), else
        show that there is nothing to review."""
        if not (isinstance(layer, QgsVectorLayer) and (
                is_result_layer(layer) or {"class", "score"} <= set(layer.fields().names()))):
            self.layer, self.order, self.pos = None, [], -1
            self.section.show_layer(None)
            return
        if not has_review_fields(layer) and not layer.isEditable():
            add_review_fields(layer, self._threshold())
        self.layer, self.order, self.pos = layer, queue(layer), -1
        self._counts()

    def _threshold(self) -> float:
        card = self.plugin.dock.models.current_card() if self.plugin.dock else None
        return float((card or {}).get("threshold") or 0.5)

    def _counts(self) -> None:
        self.section.show_layer(review_counts(self.layer), self.layer.name())
        self._describe()

    def step(self, delta: int) -> None:
        """Show the polygon ``delta`` places on in the queue (clamped to its ends)."""
        if self.layer is None or not self.order:
            return
        self.pos = max(0, min(len(self.order) - 1, self.pos + delta))
        self.show_feature(self.order[self.pos])

    def show_feature(self, fid: int) -> None:
        """Zoom to polygon ``fid`` with its surroundings and select it."""
        layer, canvas = self.layer, self.iface.mapCanvas()
        box = layer.getFeature(fid).geometry().boundingBox()
        xform = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(),
                                       QgsProject.instance())
        box = xform.transformBoundingBox(box)
        side = max(box.width(), box.height()) * CONTEXT_FACTOR
        side = max(side, CONTEXT_M * _units_per_metre(canvas))
        c = box.center()
        box.setXMinimum(c.x() - side / 2)
        box.setXMaximum(c.x() + side / 2)
        box.setYMinimum(c.y() - side / 2)
        box.setYMaximum(c.y() + side / 2)
        layer.selectByIds([fid])
        canvas.setExtent(box)
        canvas.refresh()
        self._describe()

    def _describe(self) -> None:
        if self.pos < 0 or self.layer is None:
            self.section.show_current(None)
            return
        f = self.layer.getFeature(self.order[self.pos])
        parts = [f"#{self.pos + 1} of {len(self.order)}", str(f["origin"] or "detection")]
        for name, fmt in (("score", "score {:.2f}"), ("uncertainty", "uncertainty {:.2f}")):
            v = f[name]
            if v is not None and str(v) != "NULL":
                parts.append(fmt.format(float(v)))
        parts.append(review_state(self.layer, f.id()))
        self.section.show_current(" · ".join(parts))

    def set_state(self, state: str) -> None:
        """Give the shown polygon ``state``; accepted or deleted move on to the next,
        edited starts the vertex tool on it."""
        if self.layer is None or self.pos < 0:
            return
        fid = self.order[self.pos]
        if state == "edited" and not self.layer.isEditable():
            self.layer.startEditing()
        set_review(self.layer, fid, state)
        if state == "edited":
            self.iface.setActiveLayer(self.layer)
            self.iface.actionVertexTool().trigger()
            self._counts()
            return
        self.section.show_layer(review_counts(self.layer), self.layer.name())
        if self.pos < len(self.order) - 1:
            self.step(1)
        else:
            self._describe()

    def toggle_add(self) -> None:
        """Arm the click tool (Add by click checked) or give the canvas back."""
        canvas = self.iface.mapCanvas()
        if self.section.buttons["add"].isChecked():
            canvas.setMapTool(self.tool)
        elif canvas.mapTool() is self.tool:
            canvas.unsetMapTool(self.tool)

    def add_at(self, point: QgsPointXY) -> Optional[int]:
        """Ask the engine for the object under ``point`` (map canvas CRS) and add it to
        the layer as ``added`` (``origin`` ``click``); returns its feature id, or None
        when nothing was found (the dock says so)."""
        if self.layer is None:
            return None
        canvas = self.iface.mapCanvas()
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            params = region_request(self.layer, point, canvas.mapSettings().destinationCrs())
            found = region_polygon(self.region_fn(params), self.layer)
        except OrtholensError as exc:
            self.plugin.notify(f"Add by click: {exc}", Qgis.Warning)
            return None
        finally:
            QApplication.restoreOverrideCursor()
        if found is None:
            self.plugin.notify("Add by click: no object found there; draw it by hand "
                               "instead.", Qgis.Info)
            return None
        fid = add_polygon(self.layer, *found)
        self.order = queue(self.layer)
        self.pos = self.order.index(fid) if fid in self.order else self.pos
        self.layer.selectByIds([fid])
        self._counts()
        return fid


def _units_per_metre(canvas: Any) -> float:
    """Map units per metre of the canvas CRS (about 1/111 320 for degrees)."""
    from qgis.core import QgsUnitTypes
    crs = canvas.mapSettings().destinationCrs()
    factor = QgsUnitTypes.fromUnitToUnitFactor(QgsUnitTypes.DistanceMeters, crs.mapUnits())
    return factor if factor > 0 else 1.0


__all__ = ["ReviewController", "daemon_region", "CONTEXT_M", "CONTEXT_FACTOR"]
