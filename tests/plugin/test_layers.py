"""write_result_layer: GeoPackage, fields, editability, categorized style."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)

from plugin.layers import default_result_path, write_result_gpkg, write_result_layer
from protocol.errors import ResultLayerError

CLASSES = [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]
X0, Y0 = 254315.0, 3601390.0  # inside pv01's tiles, EPSG:32651


def square(x, y, side):
    return (f"POLYGON(({x} {y}, {x + side} {y}, {x + side} {y + side}, "
            f"{x} {y + side}, {x} {y}))")


def fake_result():
    crs = QgsCoordinateReferenceSystem("EPSG:32651").toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
    feats = [
        {"wkt": square(X0, Y0, 2.0), "class": "photovoltaic", "class_id": 1, "score": 0.91,
         "agreement": 1.0, "area_m2": 4.0, "model": "pv-unet-efl0", "model_version": "1.0.0"},
        {"wkt": "MULTIPOLYGON(((%s)))" % square(X0 + 5, Y0, 3.0)[9:-2], "class": "photovoltaic",
         "class_id": 1, "score": 0.66, "agreement": 0.5, "area_m2": 9.0, "model": "pv-unet-efl0",
         "model_version": "1.0.0"},
    ]
    return {"crs": crs, "features": feats, "stats": {"seconds": 0.1}}


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
                     "model_version", "detected_at"]
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
    assert feats[0]["model_version"] == "1.0.0"
    assert "T" in feats[0]["detected_at"] and feats[0]["detected_at"].startswith("20")
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


def test_bad_results_raise_clear_errors(tmp_path):
    res = fake_result()
    res["crs"] = "not a crs"
    with pytest.raises(ResultLayerError, match="CRS"):
        write_result_gpkg(res, str(tmp_path / "a.gpkg"), "a")
    res = fake_result()
    res["features"][0]["wkt"] = "LINESTRING(0 0, 1 1)"
    with pytest.raises(ResultLayerError, match="not a polygon"):
        write_result_gpkg(res, str(tmp_path / "b.gpkg"), "b")


def test_default_result_path(tmp_path, qgis_new_project):
    project = QgsProject.instance()
    p1 = Path(default_result_path("ortho / pv-unet-efl0"))
    assert p1.suffix == ".gpkg" and not p1.exists()
    assert str(p1).startswith(str(Path(QgsApplication.qgisSettingsDirPath()).resolve()))
    assert p1.parent.name == "results" and " " not in p1.name and "/" not in p1.stem
    project.setFileName(str(tmp_path / "proj.qgz"))
    try:
        p2 = Path(default_result_path("a"))
        assert p2.parent == tmp_path.resolve()
        p2.write_bytes(b"")
        p3 = Path(default_result_path("a", now=None))
        assert p3 != p2 and not p3.exists()
    finally:
        project.setFileName("")
