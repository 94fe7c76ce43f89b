"""The Review section and Add by click on a real pv01 tile with a real engine: the
queue most uncertain first, Accept and Delete with their states saved in the layer's
GeoPackage, deleted polygons hidden by the style, a click outlining a panel, and the
review surviving saving and reopening the project."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from qgis.core import (QgsExpressionContext, QgsExpressionContextUtils, QgsGeometry,
                       QgsPointXY, QgsProject, QgsRasterLayer, QgsSymbolLayer)

from helpers import CLASSES, DEFAULT_MODEL, flush_deletes, start_test_engine, stop_process
from tests.support import heldout, needs_tiles

#: A held-out tile with nine reference panels.
TILE = heldout("PV01_325192_1204246")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    endpoint, proc = start_test_engine(tmp_path_factory.mktemp("engine") / "daemon.log")
    from protocol.client import OrtholensClient
    client = OrtholensClient(endpoint, timeout_s=60)
    yield client
    client.close()
    stop_process(proc)


def _panels():
    """The reference panels of the tile (polygons of its mask, EPSG:32651 WKT)."""
    from osgeo import gdal, ogr
    ds = gdal.Open(str(TILE).replace(".tif", "_mask.tif"))
    drv = ogr.GetDriverByName("Memory").CreateDataSource("m")
    lyr = drv.CreateLayer("p", ds.GetSpatialRef())
    lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    band = ds.GetRasterBand(1)
    gdal.Polygonize(band, band, lyr, 0, ["8CONNECTED=8"])
    return [QgsGeometry.fromWkt(f.GetGeometryRef().ExportToWkt()) for f in lyr]


def _layer(engine, tmp_path):
    from plugin.layers.load import write_result_layer
    from plugin.retrain.memory import PROP
    from protocol.params import DetectParams, FileSource
    result = engine.detect(DetectParams(FileSource(str(TILE)), model=DEFAULT_MODEL))
    layer = write_result_layer(result, str(tmp_path / "r.gpkg"), "PV detections", CLASSES)
    layer.setCustomProperty(PROP + "model", DEFAULT_MODEL)
    layer.setCustomProperty(PROP + "source", json.dumps({"kind": "file",
                                                         "path": str(TILE)}))
    return layer, result


def _shown(layer, fid) -> bool:
    """Whether the style draws feature ``fid`` (its symbol layer enabled)."""
    cats = layer.renderer().categories()
    symbol = cats[0].symbol()
    prop = symbol.symbolLayer(0).dataDefinedProperties().property(QgsSymbolLayer.PropertyLayerEnabled)
    ctx = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
    ctx.setFeature(layer.getFeature(fid))
    return bool(prop.valueAsBool(ctx, True)[0])


@needs_tiles
def test_review_queue_click_to_add_and_reopen(engine, tmp_path, qgis_iface, qgis_new_project):
    from plugin.dock.panel import OrtholensDock
    from plugin.layers.review import review_counts, review_state
    from plugin.review.controller import ReviewController

    raster = QgsRasterLayer(str(TILE), "tile")
    QgsProject.instance().addMapLayer(raster)
    layer, result = _layer(engine, tmp_path)
    n = len(result["features"]) + len(result.get("candidates") or [])
    assert layer.featureCount() == n and n >= 2
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer, raster])
    notes = []
    dock = OrtholensDock(qgis_iface.mainWindow())
    plugin = SimpleNamespace(iface=qgis_iface, dock=dock,
                             notify=lambda text, *a, **k: notes.append(text))
    review = ReviewController(plugin, region_fn=engine.region)
    try:
        review.show_layer(layer)
        s = review.section
        assert s.counter.text() == f"0 / {n} reviewed in PV detections"
        assert not s.buttons["accept"].isEnabled()
        s.buttons["next"].click()
        first = review.order[0]
        u = [layer.getFeature(f)["uncertainty"] for f in review.order]
        assert u == sorted(u, reverse=True) and layer.getFeature(first)["rank"] == 1
        assert layer.selectedFeatureIds() == [first]
        assert canvas.extent().contains(layer.getFeature(first).geometry().boundingBox())
        assert s.current.text().startswith(f"#1 of {n}") and s.buttons["accept"].isEnabled()
        s.buttons["accept"].click()
        assert review_state(layer, first) == "accepted" and review.pos == 1
        second = review.order[1]
        s.buttons["delete"].click()
        assert review_state(layer, second) == "deleted" and not _shown(layer, second)
        assert _shown(layer, first) and s.counter.text().startswith("2 / ")
        # Add by click on a reference panel: the engine outlines it in under a second
        s.buttons["add"].click()
        assert canvas.mapTool() is review.tool
        # a panel the model outlines well (the merged ones are the queue's business)
        dets = [QgsGeometry.fromWkt(f["wkt"]) for f in result["features"]]
        panel = max((p for p in _panels()
                     if any(d.intersection(p).area() / d.combine(p).area() > 0.8
                            for d in dets)), key=lambda g: g.area())
        c = panel.pointOnSurface().asPoint()
        fid = review.add_at(QgsPointXY(c.x(), c.y()))
        added = layer.getFeature(fid)
        assert (added["origin"], added["review"]) == ("click", "added")
        g = added.geometry()
        assert g.intersection(panel).area() / g.combine(panel).area() >= 0.7
        assert review_counts(layer) == (3, n + 1)
        s.buttons["add"].click()
        assert canvas.mapTool() is not review.tool
        # the review lives in the GeoPackage and the style in the project
        path = str(tmp_path / "review.qgz")
        assert QgsProject.instance().write(path)
    finally:
        review.unload()
        dock.deleteLater()
        flush_deletes()
    QgsProject.instance().clear()
    assert QgsProject.instance().read(path)
    again, = QgsProject.instance().mapLayersByName("PV detections")
    assert review_state(again, first) == "accepted"
    assert review_state(again, second) == "deleted" and not _shown(again, second)
    assert review_counts(again) == (3, n + 1)
    cand = [f.id() for f in again.getFeatures() if f["origin"] == "candidate"]
    cats = again.renderer().categories()
    symbol = cats[0].symbol()
    assert symbol.symbolLayer(0).dataDefinedProperties().isActive(
        QgsSymbolLayer.PropertyStrokeStyle)
    assert len(cand) == len(result.get("candidates") or [])
