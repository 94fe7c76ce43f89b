"""Fixtures of the retrain tests: the plugin with one finished detection in Vienna, and
the user's corrections of its result layer."""

from __future__ import annotations

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsRectangle

from helpers import CARD, DEFAULT_MODEL, REPO, VIENNA_PATCH, FakeClient, square

BOWTIE = "POLYGON ((-1605 338495, -1601 338499, -1601 338495, -1605 338499, -1605 338495))"


def _detected():
    """The stand-in engine's detection: three squares in the test extent."""
    from plugin.detect.crs import crs_wkt
    from qgis.core import QgsCoordinateReferenceSystem
    feats = [{"wkt": square(-1600, 338500, 2), "class": "photovoltaic", "class_id": 1,
              "score": 0.9, "agreement": 1.0, "area_m2": 4.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"},
             {"wkt": square(-1595, 338500, 3), "class": "photovoltaic", "class_id": 1,
              "score": 0.7, "agreement": 1.0, "area_m2": 9.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"},
             {"wkt": square(-1608, 338492, 2), "class": "photovoltaic", "class_id": 1,
              "score": 0.8, "agreement": 1.0, "area_m2": 4.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"}]
    return {"type": "result", "crs": crs_wkt(QgsCoordinateReferenceSystem("EPSG:31256")),
            "features": feats, "stats": {"seconds": 1.0}}


@pytest.fixture
def plugin_with_result(vienna_layer, tmp_path, qgis_iface):
    """The plugin, loaded, with one finished detection (a 20 m extent of Vienna)."""
    import plugin
    from plugin import tasks
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from plugin.settings import DaemonSettings

    # only the detection talks to the fake; the retrain task must reach the real (test)
    # daemon, and every other fixture's patches (the user folder) must stay in place
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks, "connect_daemon", lambda *a, **k: FakeClient([CARD], _detected()))
        plan = prepare_detect(vienna_layer, QgsRectangle(*VIENNA_PATCH), vienna_layer.crs())
        settings = DaemonSettings("tcp://127.0.0.1:1", None, str(REPO), None)
        task = DetectTask(plan, settings, str(tmp_path / "r.gpkg"), model_id=DEFAULT_MODEL)
        ok = task.run()
        task.finished(ok)
    assert ok and task.layer is not None, task.error
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    p._detect_done(task)
    p.dock.models.set_models([CARD])
    try:
        yield p, task.layer
    finally:
        p.unload()



@pytest.fixture
def correct():
    """``correct(layer)``: the user's edits of the result layer (see :func:`_correct`)."""
    return _correct


def _correct(layer):
    """The user's edits: delete one detection, draw a missed panel (no class typed in)
    and a self-intersecting polygon."""
    layer.startEditing()
    first = next(layer.getFeatures())
    layer.deleteFeature(first.id())
    for wkt in (square(-1590.5, 338505, 1.5), BOWTIE):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        layer.addFeature(f)
    assert layer.commitChanges()
