"""The result GeoPackage: clear errors for unusable results, ``detected_at`` a UTC
DateTime, each field in its own column, and a write that fails leaving the earlier file
intact."""

from __future__ import annotations

import pytest
from qgis.PyQt.QtCore import QDate, QTime, QVariant
from qgis.core import QgsVectorLayer

from helpers import fake_result, result_in, square
from plugin.layers.gpkg import write_result_gpkg
from protocol.errors import ResultLayerError


def test_bad_results_raise_clear_errors(tmp_path):
    res = fake_result()
    res["crs"] = "not a crs"
    with pytest.raises(ResultLayerError, match="CRS"):
        write_result_gpkg(res, str(tmp_path / "a.gpkg"), "a")
    res = fake_result()
    res["features"][0]["wkt"] = "LINESTRING(0 0, 1 1)"
    with pytest.raises(ResultLayerError, match="not a polygon"):
        write_result_gpkg(res, str(tmp_path / "b.gpkg"), "b")


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


def _result(n):
    """A result of ``n`` copies of a 2 m square in EPSG:31256."""
    return result_in("EPSG:31256", [square(-1600, 338500, 2)] * n)


def test_failed_write_leaves_the_existing_gpkg_intact(tmp_path, monkeypatch):
    """The GeoPackage is written under a temporary name and renamed when complete: a
    write that fails midway leaves the previous file as it was and no debris."""
    from qgis.core import QgsVectorFileWriter

    out = tmp_path / "result.gpkg"
    assert write_result_gpkg(_result(2), str(out), "detections") == 2
    before = out.read_bytes()
    monkeypatch.setattr(QgsVectorFileWriter, "addFeatures", lambda self, feats, *a: False)
    with pytest.raises(ResultLayerError, match="cannot write features"):
        write_result_gpkg(_result(3), str(out), "detections")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.gpkg"]
    monkeypatch.undo()
    assert write_result_gpkg(_result(3), str(out), "detections") == 3  # replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.gpkg"]
    layer = QgsVectorLayer(f"{out}|layername=detections", "r", "ogr")
    assert layer.isValid() and layer.featureCount() == 3


def test_each_result_field_lands_in_its_own_column(tmp_path):
    """Two detections whose every field differs from the other's and from every other
    field (the model id and its version above all), written as a result layer: each
    value is in the column of its name, read back with sqlite3 (not through QGIS) and
    through the loaded layer."""
    import sqlite3

    from helpers import CLASSES
    from plugin.layers.load import write_result_layer

    res = result_in("EPSG:31256", [square(-1600, 338500, 2), square(-1590, 338500, 3)])
    res["features"][0].update({"class_id": 1, "score": 0.81, "agreement": 0.5,
                               "area_m2": 4.0, "model": "pv-unet-efl0@3",
                               "model_version": "2.0.0+u3"})
    res["features"][1].update({"class_id": 2, "score": 0.62, "agreement": 1.0,
                               "area_m2": 9.0, "model": "pv-fpn-r34",
                               "model_version": "1.1.0"})
    want = [(1, 0.81, 0.5, 4.0, "pv-unet-efl0@3", "2.0.0+u3"),
            (2, 0.62, 1.0, 9.0, "pv-fpn-r34", "1.1.0")]
    path = tmp_path / "r.gpkg"
    layer = write_result_layer(res, str(path), "result", CLASSES, add_to_project=False)
    cols = ("class_id", "score", "agreement", "area_m2", "model", "model_version")
    with sqlite3.connect(str(path)) as db:
        rows = db.execute(f"SELECT {', '.join(cols)} FROM result ORDER BY area_m2").fetchall()
    assert rows == want
    got = sorted((tuple(f[c] for c in cols) for f in layer.getFeatures()),
                 key=lambda r: r[3])
    assert got == want
