"""Faults on the plugin side: the daemon's warnings reach the user, and a daemon killed
during a detection is reported clearly, leaves an earlier result intact and is restarted
by the next detection. (A GeoPackage write that fails: tests/plugin/layers/test_gpkg.py.)
"""

from __future__ import annotations

import os
import signal

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsRectangle

from helpers import (BACKEND_PYTHON, CARD, DEFAULT_MODEL, REPO, FakeClient, start_test_engine,
                     wait_until)

MODEL = DEFAULT_MODEL
GSD_WARNING = ("the raster's GSD (0.300 m) is far from the model's (0.1 m); it is "
               "resampled, expect lower accuracy")
SQUARE = "POLYGON ((-1600 338500, -1598 338500, -1598 338502, -1600 338502, -1600 338500))"


def _result(n=1, warnings=()):
    from plugin.detect.crs import crs_wkt
    from qgis.core import QgsCoordinateReferenceSystem
    feats = [{"wkt": SQUARE, "class": "photovoltaic", "class_id": 1, "score": 0.9,
              "agreement": 1.0, "area_m2": 4.0, "model": MODEL, "model_version": "1.0.0"}] * n
    return {"type": "result", "crs": crs_wkt(QgsCoordinateReferenceSystem("EPSG:31256")),
            "features": feats, "stats": {"seconds": 1.0, "warnings": list(warnings)}}


def _settings(endpoint="tcp://127.0.0.1:1", python=None):
    from plugin.settings import DaemonSettings
    return DaemonSettings(endpoint=endpoint, python=str(python or BACKEND_PYTHON),
                          repo=str(REPO), token=None)


def test_daemon_warnings_reach_the_message_bar_and_dock(vienna_layer, tmp_path, qgis_iface,
                                                        monkeypatch):
    """``stats["warnings"]`` (here: a 0.3 m raster for a 0.1 m model) become task notes,
    shown as warnings in QGIS's message bar and in the dock next to the summary."""
    import plugin
    from plugin import tasks
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask

    monkeypatch.setattr(tasks, "connect_daemon",
                        lambda *a, **k: FakeClient([CARD], _result(1, [GSD_WARNING])))
    plan = prepare_detect(vienna_layer, QgsRectangle(-1610, 338490, -1590, 338510),
                          vienna_layer.crs())
    # the project owns the result layer: one owned only by Python that is still alive
    # when QGIS exits (the plugin keeps its last task) crashes exitQgis()
    task = DetectTask(plan, _settings(), str(tmp_path / "w.gpkg"), model_id=MODEL)
    ok = task.run()
    task.finished(ok)
    assert ok, task.error
    note = ("The raster's GSD (0.300 m) is far from the model's (0.1 m); it is resampled, "
            "expect lower accuracy.")
    assert task.notes == [note]
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        qgis_iface.messageBar().clear_messages()
        p._detect_done(task)
        # pushed after QGIS's own "Task complete" notice, so they stay on top
        assert not qgis_iface.messageBar().get_messages(Qgis.Success)
        assert wait_until(lambda: qgis_iface.messageBar().get_messages(Qgis.Success), 5)
        assert f"Ortholens:{note}" in qgis_iface.messageBar().get_messages(Qgis.Warning)
        assert any("1 object detected" in m
                   for m in qgis_iface.messageBar().get_messages(Qgis.Success))
        assert "1 object detected" in p.dock.detection.message()
        assert f"Warning: {note}" in p.dock.detection.message()
    finally:
        p.unload()


@pytest.mark.e2e
@pytest.mark.skipif(not BACKEND_PYTHON.is_file(), reason=f"needs {BACKEND_PYTHON}")
def test_daemon_killed_during_detect_is_reported_and_restarted(vienna_path, tmp_path,
                                                               qgis_new_project):
    """SIGKILL the real daemon while DetectTask waits for it: the task fails with a clear
    message once a status check goes unanswered (not at its job timeout: how many
    seconds that takes is measured by ``build.py load``), writes nothing and leaves an
    earlier result intact; the next DetectTask starts a fresh daemon and succeeds (with
    the GSD warning)."""
    from plugin.layers.gpkg import write_result_gpkg
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask

    layer = QgsRasterLayer(str(vienna_path), "vienna", "gdal")
    QgsProject.instance().addMapLayer(layer)
    endpoint, proc = start_test_engine(tmp_path / "daemon.log")
    settings = _settings(endpoint)
    assert settings.can_start()
    restarted = None
    try:
        out = tmp_path / "result.gpkg"
        write_result_gpkg(_result(2), str(out), "detections")  # an earlier result
        before = out.read_bytes()
        big = prepare_detect(layer, QgsRectangle(-1700, 338300, -1500, 338500), layer.crs())
        task = DetectTask(big, settings, str(out), model_id=MODEL, timeout_s=3,
                          job_timeout_s=300, add_to_project=False)
        killed = []

        def kill_on_progress(text):
            if not killed and ("tiles" in text or "reading" in text):  # the job runs
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                killed.append(text)

        task.message.connect(kill_on_progress)
        ok = task.run()
        task.finished(ok)
        assert killed, "the daemon never reported progress"
        assert ok and task.error and not task.cancelled and task.layer is None
        assert "stopped during the detection" in task.error, task.error
        assert "stopped answering" in task.error and "no news" not in task.error
        assert "Nothing was saved" in task.error and "restarted automatically" in task.error
        assert out.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.log", "result.gpkg"]

        small = prepare_detect(layer, QgsRectangle(-1615, 338485, -1585, 338515), layer.crs())
        task2 = DetectTask(small, settings, str(tmp_path / "again.gpkg"), model_id=MODEL,
                           add_to_project=False)
        ok2 = task2.run()
        restarted = task2.daemon_process
        task2.finished(ok2)
        assert ok2, task2.error
        assert restarted is not None and restarted.pid != proc.pid  # a fresh daemon
        assert task2.layer is not None and task2.layer.isValid()
        assert any("far from the model's" in n for n in task2.notes), task2.notes
    finally:
        if proc.poll() is None:
            proc.kill()
        if restarted is not None and restarted.poll() is None:
            restarted.terminate()
            try:
                restarted.wait(15)
            except Exception:  # noqa: BLE001
                restarted.kill()
