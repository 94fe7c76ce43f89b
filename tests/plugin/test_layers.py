"""Result layers: GeoPackage, fields and their defaults for drawn features, style,
place in the layer tree and name of each run."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pytest
from qgis.PyQt.QtCore import NULL, QDate, QDateTime, Qt, QTime, QVariant
from qgis.PyQt.QtGui import QColor
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerUtils,
    QgsWkbTypes,
)

from plugin.layers import (
    FIELD_ALIASES,
    RUN_OUTLINES,
    RUN_PROPERTY,
    default_result_path,
    next_result_run,
    result_layer_name,
    run_outline,
    write_result_gpkg,
    write_result_layer,
)
from protocol.errors import ResultLayerError
from helpers import DEFAULT_MODEL, FakeClient, make_raster

MODEL = DEFAULT_MODEL
CLASSES = [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]
X0, Y0 = 254315.0, 3601390.0  # inside pv01's tiles, EPSG:32651


def square(x, y, side):
    return (f"POLYGON(({x} {y}, {x + side} {y}, {x + side} {y + side}, "
            f"{x} {y + side}, {x} {y}))")


def fake_result():
    crs = QgsCoordinateReferenceSystem("EPSG:32651").toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
    feats = [
        {"wkt": square(X0, Y0, 2.0), "class": "photovoltaic", "class_id": 1, "score": 0.91,
         "agreement": 1.0, "area_m2": 4.0, "model": MODEL, "model_version": "1.0.0"},
        {"wkt": "MULTIPOLYGON(((%s)))" % square(X0 + 5, Y0, 3.0)[9:-2], "class": "photovoltaic",
         "class_id": 1, "score": 0.66, "agreement": 0.5, "area_m2": 9.0, "model": MODEL,
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


# --- hand-drawn and edited features -------------------------------------------------

def result_in(crs_id, wkts, classes=("photovoltaic",)):
    """A daemon-like result in ``crs_id`` with one detected feature per WKT."""
    crs = QgsCoordinateReferenceSystem(crs_id).toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
    feats = [{"wkt": w, "class": classes[0], "class_id": 1, "score": 0.8, "agreement": 1.0,
              "area_m2": 1.0, "model": MODEL, "model_version": "2.0.0"}
             for w in wkts]
    return {"crs": crs, "features": feats}


def ellipsoidal_m2(geom, crs_id):
    """The WGS 84 ellipsoidal area of ``geom`` (in ``crs_id``), m²: the reference."""
    da = QgsDistanceArea()
    da.setSourceCrs(QgsCoordinateReferenceSystem(crs_id), QgsProject.instance().transformContext())
    da.setEllipsoid("EPSG:7030")
    return da.convertAreaMeasurement(da.measureArea(geom), QgsUnitTypes.AreaSquareMeters)


def draw(layer, wkt):
    """Add a polygon as QGIS's Add Polygon tool does (default values evaluated with the
    layer's expression context, no attribute typed); returns the new feature's id."""
    feat = QgsVectorLayerUtils.createFeature(layer, QgsGeometry.fromWkt(wkt), {},
                                             layer.createExpressionContext())
    assert layer.addFeature(feat)
    return feat


def reopen(layer):
    """The layer's GeoPackage table opened afresh: what was saved to the file."""
    return QgsVectorLayer(layer.source(), "check", "ogr")


# A 10 m x 10 m square in each CRS (Vienna, ~48.2° N); in degrees 0.0001° x 0.0001°.
DRAWN = {
    "EPSG:31256": ("POLYGON((-1600 338500, -1590 338500, -1590 338510, -1600 338510, "
                   "-1600 338500))", "POLYGON((-1620 338500, -1618 338500, -1618 338502, "
                   "-1620 338502, -1620 338500))"),
    "EPSG:32633": (square(601000, 5340000, 10.0), square(601100, 5340000, 2.0)),
    "EPSG:3857": (square(1818000, 6140000, 10.0), square(1818100, 6140000, 2.0)),
    "EPSG:4326": (square(16.3, 48.2, 0.0001), square(16.31, 48.2, 0.00002)),
}


@pytest.mark.parametrize("crs_id", sorted(DRAWN))
def test_drawn_polygon_gets_its_area_in_m2_and_the_model_class(crs_id, tmp_path,
                                                                qgis_new_project):
    """area_m2 is the ground area in m² whatever the layer CRS (degrees, Web Mercator
    at 48° N where a CRS unit is 0.67 m, UTM, Gauss-Krüger) and whatever the project's
    ellipsoid and area units; class is the model's; score and the rest stay NULL."""
    project = QgsProject.instance()
    project.setEllipsoid("NONE")
    project.setAreaUnits(QgsUnitTypes.AreaHectares)  # what $area would follow
    drawn_wkt, detected_wkt = DRAWN[crs_id]
    layer = write_result_layer(result_in(crs_id, [detected_wkt]), str(tmp_path / "r.gpkg"),
                               "r", CLASSES)
    assert layer.startEditing()
    draw(layer, drawn_wkt)
    assert layer.commitChanges(), layer.commitErrors()

    saved = reopen(layer)
    drawn = [f for f in saved.getFeatures() if f["score"] is None or f["score"] == NULL]
    assert len(drawn) == 1 and saved.featureCount() == 2
    f = drawn[0]
    expected = ellipsoidal_m2(QgsGeometry.fromWkt(drawn_wkt), crs_id)
    assert expected > 40  # 100 m² on the ground, 45 m² for the Web Mercator square
    assert f["area_m2"] == pytest.approx(expected, rel=0.01)
    assert f["class"] == "photovoltaic" and f["class_id"] == 1
    for name in ("score", "agreement", "model", "model_version", "detected_at"):
        assert f[name] == NULL, name
    detected = [g for g in saved.getFeatures() if g.id() != f.id()][0]
    assert detected["area_m2"] == pytest.approx(1.0)  # untouched: the daemon's value


def test_reshaped_and_reclassified_features_follow(tmp_path, qgis_new_project):
    """A reshaped detection's area_m2 is measured again; a re-classed one's class_id
    follows its class; both are saved to the GeoPackage."""
    classes = CLASSES + [{"id": 2, "name": "thermal_collector", "color": "#1f78b4"}]
    res = result_in("EPSG:32651", [square(X0, Y0, 2.0), square(X0 + 10, Y0, 3.0)])
    layer = write_result_layer(res, str(tmp_path / "r.gpkg"), "r", classes)
    a, b = sorted(layer.getFeatures(), key=lambda f: f.geometry().area())
    assert layer.startEditing()
    assert layer.changeGeometry(a.id(), QgsGeometry.fromWkt(square(X0, Y0, 4.0)))
    ci = layer.fields().indexOf("class")
    assert layer.changeAttributeValue(b.id(), ci, "thermal_collector")
    assert layer.commitChanges(), layer.commitErrors()
    saved = {f.id(): f for f in reopen(layer).getFeatures()}
    assert saved[a.id()]["area_m2"] == pytest.approx(16.0, rel=0.01)
    assert saved[a.id()]["class_id"] == 1 and saved[a.id()]["score"] == pytest.approx(0.8)
    assert saved[b.id()]["class"] == "thermal_collector" and saved[b.id()]["class_id"] == 2
    assert saved[b.id()]["area_m2"] == pytest.approx(9.0, rel=0.01)


def test_fields_have_aliases_with_units_and_a_class_list(tmp_path, qgis_new_project):
    layer = write_result_layer(fake_result(), str(tmp_path / "r.gpkg"), "r", CLASSES)
    alias = {f.name(): layer.attributeAlias(layer.fields().indexOf(f.name()))
             for f in layer.fields()}
    assert alias["area_m2"] == "Area (m²)"
    assert alias["score"].startswith("Score (0–1") and "NULL" in alias["score"]
    assert alias["agreement"] == "Agreement (0–1)"
    assert alias["detected_at"] == "Detected at (UTC)"
    assert alias["model_version"] == "Model version" and alias["class_id"] == "Class ID"
    assert all(alias[name] for name in FIELD_ALIASES)
    ci = layer.fields().indexOf("class")
    widget = layer.editorWidgetSetup(ci)
    assert widget.type() == "ValueMap"
    assert widget.config()["map"] == [{"photovoltaic": "photovoltaic"}]
    form = layer.editFormConfig()
    assert form.readOnly(layer.fields().indexOf("area_m2"))
    assert not form.readOnly(ci)


def test_detected_at_is_a_utc_datetime(tmp_path):
    path = tmp_path / "r.gpkg"
    write_result_gpkg(fake_result(), str(path), "r", detected_at="2024-05-06T09:08:09+02:00")
    layer = QgsVectorLayer(f"{path}|layername=r", "r", "ogr")
    field = layer.fields().field("detected_at")
    assert field.type() == QVariant.DateTime and field.typeName() == "DateTime"
    value = next(layer.getFeatures())["detected_at"]
    assert (value.date(), value.time()) == (QDate(2024, 5, 6), QTime(7, 8, 9))  # UTC
    with pytest.raises(ResultLayerError, match="ISO 8601"):
        write_result_gpkg(fake_result(), str(path), "r", detected_at="yesterday")


# --- order and look of successive results --------------------------------------------

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


def test_run_outlines_avoid_the_class_colours():
    def dist(a, b):
        qa, qb = QColor(a), QColor(b)
        return ((qa.red() - qb.red()) ** 2 + (qa.green() - qb.green()) ** 2
                + (qa.blue() - qb.blue()) ** 2) ** 0.5

    for color in (RUN_OUTLINES[0], "#ff7f0e"):
        classes = [{"id": 1, "name": "c", "color": color}]
        assert run_outline(1, classes) is None  # run 1: the class's own colour
        cycle = [run_outline(run, classes) for run in range(2, 2 + len(RUN_OUTLINES))]
        assert all(dist(c, color) >= 120 for c in cycle), cycle
        kept = sorted(set(cycle))
        assert len(kept) >= 3 and cycle[:len(kept)] == [c for c in RUN_OUTLINES if c in kept]


def test_result_layer_name_says_model_version_source_and_run():
    when = _dt.datetime(2024, 5, 6, 14, 5)
    assert (result_layer_name("pv-unet-efl0", "2.0.0", "vienna", 2, when)
            == "pv-unet-efl0 v2.0.0 on vienna (run 2, 14:05)")
    assert result_layer_name("m@3", None, "x", 1, when) == "m@3 on x (run 1, 14:05)"


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
        [card], result_in("EPSG:31256", [DRAWN["EPSG:31256"][1]])))
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
        assert layer.name().startswith(f"{MODEL} v2.0.0 on vienna (run {n}, ")
