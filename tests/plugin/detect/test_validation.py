"""Input checks before a detection: clear messages for every unusable input."""

from __future__ import annotations

import pytest
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from helpers import make_raster
from plugin.detect.plan import validate_inputs
from protocol.errors import InputError

GK_EAST = QgsCoordinateReferenceSystem("EPSG:31256")


def test_no_layer():
    with pytest.raises(InputError, match="No active layer"):
        validate_inputs(None, QgsRectangle(0, 0, 1, 1), GK_EAST)


def test_vector_layer_is_refused(qgis_new_project):
    vl = QgsVectorLayer("Polygon?crs=EPSG:31256", "parcels", "memory")
    assert vl.isValid()
    with pytest.raises(InputError) as ei:
        validate_inputs(vl, QgsRectangle(0, 0, 1, 1), GK_EAST)
    msg = str(ei.value)
    assert "'parcels'" in msg and "vector layer" in msg and "raster" in msg


def test_raster_without_crs_is_refused(tmp_path, qgis_new_project):
    path = make_raster(tmp_path / "nocrs.tif", srs_epsg=None)
    rl = QgsRasterLayer(str(path), "nocrs", "gdal")
    assert rl.isValid()
    assert not rl.crs().isValid(), "precondition: QGIS must leave the CRS unknown"
    with pytest.raises(InputError, match="no valid coordinate reference system"):
        validate_inputs(rl, rl.extent(), GK_EAST)


def test_extent_outside_layer_is_refused(vienna_layer):
    far = QgsRectangle(10000, 300000, 10500, 300500)  # 12 km away, same CRS
    with pytest.raises(InputError, match="does not overlap the layer 'vienna'"):
        validate_inputs(vienna_layer, far, GK_EAST)


def test_empty_extent_is_refused(vienna_layer):
    with pytest.raises(InputError, match="map view is empty"):
        validate_inputs(vienna_layer, QgsRectangle(), GK_EAST)
    with pytest.raises(InputError, match="map view is empty"):
        validate_inputs(vienna_layer, QgsRectangle(-1500, 338500, -1500, 338600), GK_EAST)


def test_happy_path_same_crs(vienna_layer):
    ext = vienna_layer.extent()
    bigger = QgsRectangle(ext.xMinimum() - 100, ext.yMinimum() - 100,
                          ext.xMaximum() + 100, ext.yMaximum() + 100)
    inter = validate_inputs(vienna_layer, bigger, GK_EAST)
    assert inter == ext  # clipped to the layer
    part = QgsRectangle(-1600, 338400, -1550, 338450)
    assert validate_inputs(vienna_layer, part, GK_EAST) == part


def test_happy_path_other_canvas_crs(vienna_layer):
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    ct = QgsCoordinateTransform(GK_EAST, merc, QgsProject.instance())
    ext_merc = ct.transformBoundingBox(QgsRectangle(-1600, 338400, -1550, 338450))
    inter = validate_inputs(vienna_layer, ext_merc, merc)
    # the bounding box of the transformed box covers the original within a metre
    assert inter.xMinimum() == pytest.approx(-1600, abs=1.0)
    assert inter.yMaximum() == pytest.approx(338450, abs=1.0)
    assert 49 < inter.width() < 52


def test_plugin_reports_errors_in_message_bar_and_dock(qgis_iface, qgis_new_project):
    """The Detect action refuses a vector layer and says why in both places."""
    import plugin

    vl = QgsVectorLayer("Point?crs=EPSG:31256", "points", "memory")
    QgsProject.instance().addMapLayer(vl)
    qgis_iface.setActiveLayer(vl)
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        qgis_iface.messageBar().clear_messages()
        assert p.detect() is None
        warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
        assert any("'points' is a vector layer" in m for m in warnings), warnings
        assert "'points' is a vector layer" in p.dock.detection.message()
        assert p.task is None
    finally:
        p.unload()
