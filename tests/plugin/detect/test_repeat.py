"""Detect in extent run again with the same settings on the same extent: the dock says
which result layer holds that detection, and a second press runs it anyway; a result's
warning is shown amber under the green success line."""

from __future__ import annotations

from qgis.core import Qgis, QgsProject

from helpers import CARD, DEFAULT_MODEL, FakeClient, result_in, show_layer, wait_until


def test_the_same_detection_asks_first_then_runs(qgis_iface, vienna_path, tmp_path,
                                                 qgis_new_project, monkeypatch):
    import plugin
    from plugin import tasks
    from plugin.dock.detection import LEVEL_COLORS
    result = dict(result_in("EPSG:31256", [
        "POLYGON((-1620 338500, -1618 338500, -1618 338502, -1620 338502, -1620 338500))"]),
        stats={"threshold": 0.5, "warnings": ["the raster's GSD is far from the model's"]})
    monkeypatch.setattr(tasks, "connect_daemon", lambda *a, **k: FakeClient([CARD], result))
    monkeypatch.setenv("ORTHOLENS_RESULTS", str(tmp_path))
    show_layer(qgis_iface, vienna_path, "vienna")
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        p.dock.models.set_models([CARD])
        assert p.detect() is not None
        assert wait_until(lambda: p.task is None and p.last_task is not None, 30)
        first = p.last_task.layer
        assert first is not None and first.name().startswith("#1 thr 0.5 · vienna · ")
        # success green, its warning amber, each on its own line
        assert wait_until(lambda: "Warning: The raster's GSD" in p.dock.detection.message(), 5)
        html = p.dock.detection.message_label.text()
        assert LEVEL_COLORS[Qgis.Success] in html and LEVEL_COLORS[Qgis.Warning] in html
        # the canvas grows a little (a wider dock, say): the view on the raster is the same
        canvas = qgis_iface.mapCanvas()
        canvas.setExtent(canvas.extent().buffered(5000.0))
        assert p.detect() is None and p.task is None
        assert f"'{first.name()}' already holds this detection" in p.dock.detection.message()
        assert len(QgsProject.instance().mapLayers()) == 2
        # a second press runs it; another threshold is another detection
        assert p.detect() is not None
        assert wait_until(lambda: p.task is None, 30)
        assert p.last_task.layer.name().startswith("#2 thr 0.5 · ")
        p.dock.models.threshold_spin.setValue(0.7)
        assert p.detect() is not None
        assert wait_until(lambda: p.task is None, 30)
    finally:
        p.unload()
    assert DEFAULT_MODEL
