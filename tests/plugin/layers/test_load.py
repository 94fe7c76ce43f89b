"""Result layers opened, styled and placed: a GeoPackage written and loaded as an
editable, styled layer on top of the layer tree, each new result above the last and
looking different from it, each named after its model, raster and run."""

from __future__ import annotations

import re

import pytest
from qgis.PyQt.QtCore import QDateTime, Qt
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)

from helpers import CLASSES, DEFAULT_MODEL, FakeClient, fake_result, make_raster, result_in
from plugin.layers.load import write_result_layer
from plugin.layers.naming import RUN_PROPERTY, next_result_run
from plugin.layers.style import RUN_OUTLINES

MODEL = DEFAULT_MODEL


def test_write_result_layer_gpkg_fields_style_and_edits(tmp_path, qgis_new_project):
    path = tmp_path / "out" / "result.gpkg"
    layer = write_result_layer(fake_result(), str(path), "PV detections", CLASSES)

    assert path.is_file()
    assert layer.isValid()
    assert layer.providerType() == "ogr"
    assert layer.name() == "PV detections"
    assert QgsProject.instance().mapLayer(layer.id()) is layer
    assert layer.crs().authid() == "EPSG:32651"
    assert QgsWkbTypes.geometryType(layer.wkbType()) == QgsWkbTypes.PolygonGeometry
    assert layer.featureCount() == 2
    names = [f.name() for f in layer.fields()]
    assert names == ["fid", "class", "class_id", "score", "agreement", "area_m2", "model",
                     "model_version", "detected_at", "uncertainty", "rank", "review", "origin"]
    types = {f.name(): f.typeName().lower() for f in layer.fields()}
    assert types["class_id"].startswith(("int", "mediumint")), types
    assert types["score"] in ("real", "double"), types
    assert types["agreement"] in ("real", "double"), types
    feats = sorted(layer.getFeatures(), key=lambda f: f["area_m2"])
    assert [f["class"] for f in feats] == ["photovoltaic", "photovoltaic"]
    assert [f["class_id"] for f in feats] == [1, 1]
    assert feats[0]["score"] == pytest.approx(0.91)
    assert [f["agreement"] for f in feats] == [1.0, 0.5]
    assert feats[1]["area_m2"] == pytest.approx(9.0)
    assert [(f["model"], f["model_version"]) for f in feats] == [(MODEL, "1.0.0")] * 2
    assert types["detected_at"] == "datetime", types
    stamp = feats[0]["detected_at"]
    assert isinstance(stamp, QDateTime) and stamp.isValid()
    now = QDateTime.currentDateTimeUtc()
    assert abs(QDateTime(stamp.date(), stamp.time(), Qt.UTC).secsTo(now)) < 120  # UTC
    assert feats[1].geometry().area() == pytest.approx(9.0)

    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "class"
    cats = renderer.categories()
    assert [c.value() for c in cats] == ["photovoltaic"]
    fill = cats[0].symbol().color()
    assert fill.name() == "#ff7f0e" and 0 < fill.alpha() < 255
    outline = cats[0].symbol().symbolLayer(0).strokeColor()
    assert outline.name() == "#ff7f0e" and outline.alpha() == 255

    # Editable, and edits reach the file.
    assert layer.startEditing()
    assert layer.deleteFeature(feats[0].id())
    assert layer.commitChanges(), layer.commitErrors()
    reopened = QgsVectorLayer(f"{path}|layername=PV_detections", "check", "ogr")
    assert reopened.isValid()
    assert reopened.featureCount() == 1
    assert next(reopened.getFeatures())["score"] == pytest.approx(0.66)
    del reopened


def test_empty_result_gives_an_empty_valid_layer(tmp_path, qgis_new_project):
    res = fake_result()
    res["features"] = []
    layer = write_result_layer(res, str(tmp_path / "empty.gpkg"), "empty", CLASSES)
    assert layer.isValid() and layer.featureCount() == 0
    assert [c.value() for c in layer.renderer().categories()] == ["photovoltaic"]


def test_unknown_class_gets_a_visible_category(tmp_path, qgis_new_project):
    res = fake_result()
    res["features"][1]["class"] = "thermal_collector"
    layer = write_result_layer(res, str(tmp_path / "x.gpkg"), "x", CLASSES)
    assert sorted(c.value() for c in layer.renderer().categories()) == [
        "photovoltaic", "thermal_collector"]


def test_each_new_result_is_on_top_visible_and_looks_different(tmp_path, qgis_new_project):
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(make_raster(tmp_path / "ortho.tif", srs_epsg=32651)),
                            "ortho", "gdal")
    project.addMapLayer(raster)
    group = project.layerTreeRoot().insertGroup(0, "reference")
    ref = QgsVectorLayer("Polygon?crs=EPSG:32651", "buildings", "memory")
    project.addMapLayer(ref, False)
    group.addLayer(ref)

    first = write_result_layer(fake_result(), str(tmp_path / "1.gpkg"), "first", CLASSES)
    second = write_result_layer(fake_result(), str(tmp_path / "2.gpkg"), "second", CLASSES)
    root = project.layerTreeRoot()
    assert [n.name() for n in root.children()] == ["second", "first", "reference", "ortho"]
    assert all(root.findLayer(lyr.id()).isVisible() for lyr in (first, second))
    assert (first.customProperty(RUN_PROPERTY), second.customProperty(RUN_PROPERTY)) == (1, 2)

    def look(layer):
        cats = layer.renderer().categories()  # keep: the symbol lives in the list
        sym = cats[0].symbol()
        return sym.color().name(), sym.symbolLayer(0).strokeColor().name()

    assert look(first) == ("#ff7f0e", "#ff7f0e")  # run 1: the class colours
    fill2, outline2 = look(second)
    assert fill2 == "#ff7f0e" and outline2 == RUN_OUTLINES[0] != "#ff7f0e"

    # numbers are not reused when a result layer is removed
    project.removeMapLayer(second.id())
    third = write_result_layer(fake_result(), str(tmp_path / "3.gpkg"), "third", CLASSES)
    assert third.customProperty(RUN_PROPERTY) == 3 and next_result_run() == 4
    assert look(third)[1] == RUN_OUTLINES[1]
    assert root.children()[0].name() == "third"


def test_two_detect_tasks_give_two_named_layers_newest_on_top(vienna_layer, tmp_path,
                                                               monkeypatch):
    """Through DetectTask, as the dock runs it: the second result lies above the first
    and the raster, and each layer's name says model, version, raster and run."""
    from plugin import tasks
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from plugin.settings import DaemonSettings

    card = {"id": MODEL, "version": "2.0.0", "gsd_m": 0.1, "classes": CLASSES}
    monkeypatch.setattr(tasks, "connect_daemon", lambda *a, **k: FakeClient(
        [card], result_in("EPSG:31256", [
        "POLYGON((-1620 338500, -1618 338500, -1618 338502, -1620 338502, -1620 338500))"])))
    extent = QgsRectangle(-1630, 338490, -1590, 338510)
    settings = DaemonSettings("tcp://127.0.0.1:1", None, str(tmp_path), None)
    layers = []
    for n in (1, 2):
        task = DetectTask(prepare_detect(vienna_layer, extent, vienna_layer.crs()),
                          settings, str(tmp_path / f"{n}.gpkg"), model_id=MODEL)
        ok = task.run()
        task.finished(ok)
        assert task.layer is not None, task.error
        layers.append(task.layer)
    order = [n.layerId() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order == [layers[1].id(), layers[0].id(), vienna_layer.id()]
    for n, layer in enumerate(layers, 1):
        assert re.match(rf"#{n}( thr [0-9.]+)? · vienna · {MODEL} v2\.0\.0 · \d\d:\d\d$",
                        layer.name()), layer.name()
