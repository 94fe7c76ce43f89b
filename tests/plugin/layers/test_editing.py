"""Editing a result layer: a polygon drawn by hand gets its area in m² and the model's
class, a reshaped or re-classed one follows, and the fields show aliases with units."""

from __future__ import annotations

import pytest
from qgis.PyQt.QtCore import NULL
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsGeometry,
    QgsProject,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerUtils,
)

from helpers import CLASSES, X0, Y0, fake_result, result_in, square
from plugin.layers.editing import FIELD_ALIASES
from plugin.layers.load import write_result_layer


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
    assert alias["score"] == "Score (0–1)"  # short: column titles are read whole
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
