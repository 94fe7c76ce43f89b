"""End to end: a real daemon, a real held-out tile, DetectTask, the result layer.

Needs the backend virtual environment, the shipped model and the pv01 held-out tiles; a
developer run without them skips with the reason, and ``build.py test`` then fails. Takes
a few seconds of CPU inference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from helpers import (BACKEND_PYTHON, DEFAULT_MODEL, MODELS, PV01_HELDOUT, REPO, show_layer,
                     start_test_engine, stop_process, wait_until, write_bgr16)

MODEL = DEFAULT_MODEL

_missing = [str(p) for p in (MODELS / MODEL / "card.json", BACKEND_PYTHON, PV01_HELDOUT)
            if not p.exists()]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(_missing), reason="end-to-end test needs: " + ", ".join(_missing)),
]


@pytest.fixture(scope="module")
def daemon_endpoint(tmp_path_factory):
    endpoint, proc = start_test_engine(tmp_path_factory.mktemp("daemon") / "daemon.log")
    yield endpoint
    stop_process(proc)


def test_detect_task_on_heldout_tile(daemon_endpoint, tmp_path, qgis_new_project):
    from plugin.settings import DaemonSettings
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask

    layer = QgsRasterLayer(str(PV01_HELDOUT), "heldout", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())
    assert plan.source.to_wire() == {"kind": "file", "path": str(PV01_HELDOUT.resolve())}

    settings = DaemonSettings(endpoint=daemon_endpoint, python=str(BACKEND_PYTHON),
                              repo=str(REPO), token=None)
    progress = []
    out = tmp_path / "result.gpkg"
    task = DetectTask(plan, settings, str(out), model_id=MODEL, job_timeout_s=300)
    task.progressChanged.connect(progress.append)
    ok = task.run()  # synchronously, on this thread
    task.finished(ok)
    assert ok, task.error
    assert task.error is None and not task.cancelled
    assert out.is_file()

    result_layer = task.layer
    assert result_layer is not None and result_layer.isValid()
    assert QgsProject.instance().mapLayer(result_layer.id()) is result_layer
    assert result_layer.crs().authid() == "EPSG:32651"
    feats = list(result_layer.getFeatures())
    assert len(feats) >= 1, task.result.get("stats")
    assert all(f["class"] == "photovoltaic" for f in feats)
    assert all(f["model"] == MODEL and 0 < f["score"] <= 1 and f["area_m2"] > 0 for f in feats)
    tile = layer.extent()
    tile.grow(1.0)
    assert all(tile.contains(f.geometry().boundingBox()) for f in feats)
    assert result_layer.renderer().type() == "categorizedSymbol"
    assert progress and max(progress) == 100
    # the candidate misses are in the layer for review, not among the objects detected
    detected = [f for f in feats if f["origin"] == "detection"]
    assert str(len(detected)) in task.summary()
    assert len(feats) - len(detected) == len(task.result.get("candidates") or [])


def test_rendered_pixels_give_the_same_result_as_the_file(daemon_endpoint, tmp_path,
                                                          qgis_new_project):
    """The non-file path (pixels rendered by QGIS at the model GSD) agrees with the file
    path on the same tile: same objects, same areas."""
    from plugin.settings import DaemonSettings
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask

    layer = QgsRasterLayer(str(PV01_HELDOUT), "heldout", "gdal")
    QgsProject.instance().addMapLayer(layer)
    settings = DaemonSettings(endpoint=daemon_endpoint, python=str(BACKEND_PYTHON),
                              repo=str(REPO), token=None)
    results = {}
    for force in (False, True):
        plan = prepare_detect(layer, layer.extent(), layer.crs(), force_pixels=force)
        assert (plan.render is not None) == force
        task = DetectTask(plan, settings, str(tmp_path / f"r{force}.gpkg"), model_id=MODEL,
                          add_to_project=False)
        ok = task.run()
        task.finished(ok)
        assert ok, task.error
        results[force] = sorted(round(f["area_m2"], 1) for f in task.result["features"])
    assert results[True] and results[True] == results[False]


def test_cancel_stops_a_running_detection(daemon_endpoint, vienna_path, tmp_path,
                                          qgis_new_project):
    """Cancel through QGIS's task manager while the daemon works on a 25 Mpx extent: the
    task ends cancelled and the daemon stops the job (it ends ``cancelled``, not
    ``done``). How long that takes is measured by ``build.py load``."""
    import time

    from qgis.PyQt.QtCore import QCoreApplication
    from qgis.core import QgsApplication

    from plugin.settings import DaemonSettings
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from protocol.client import OrtholensClient

    layer = QgsRasterLayer(str(vienna_path), "vienna", "gdal")
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())
    settings = DaemonSettings(endpoint=daemon_endpoint, python=str(BACKEND_PYTHON),
                              repo=str(REPO), token=None)
    done = []
    task = DetectTask(plan, settings, str(tmp_path / "c.gpkg"), model_id=MODEL,
                      on_done=done.append)
    QgsApplication.taskManager().addTask(task)
    end = time.monotonic() + 120  # a hang guard
    cancelled = False
    while not done and time.monotonic() < end:
        QCoreApplication.processEvents()
        if not cancelled and task.progress() > 10:  # the daemon is working
            task.cancel()
            cancelled = True
        time.sleep(0.05)
    assert done, "the task did not finish"
    assert cancelled, "no progress from the daemon before the end"
    assert task.cancelled and task.layer is None and task.error is None
    assert not (tmp_path / "c.gpkg").exists()
    with OrtholensClient(daemon_endpoint) as c:
        job = c.status()[-1]  # the newest job: this detection's
        assert wait_until(lambda: c.status(job["job_id"])[0]["state"] != "running", 600)
        assert c.status(job["job_id"])[0]["state"] == "cancelled"


def test_plugin_detect_action_adds_the_layer_above_the_raster(daemon_endpoint, tmp_path,
                                                              qgis_iface, qgis_new_project,
                                                              monkeypatch):
    """The user's path: active raster, map view, Detect in extent, result layer on top."""
    import time

    from qgis.PyQt.QtCore import QCoreApplication
    from qgis.core import Qgis

    import plugin

    monkeypatch.setenv("ORTHOLENS_ENDPOINT", daemon_endpoint)
    project = QgsProject.instance()
    project.setFileName(str(tmp_path / "demo.qgz"))  # results go next to the project
    layer = show_layer(qgis_iface, PV01_HELDOUT, "heldout")
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        qgis_iface.messageBar().clear_messages()
        task = p.detect()
        assert task is not None, p.dock.detection.message()
        assert not p.dock.detection.detect_button.isEnabled()
        end = time.monotonic() + 120
        while p.task is not None and time.monotonic() < end:
            QCoreApplication.processEvents()
            time.sleep(0.05)
        assert p.task is None and p.last_task is task
        assert task.layer is not None, task.error
        assert Path(task.out_path).parent == tmp_path.resolve()
        bar = qgis_iface.messageBar()
        assert wait_until(lambda: any("detected" in m and task.out_path in m
                                      for m in bar.get_messages(Qgis.Success)), 5), \
            bar.get_messages(Qgis.Success)
        order = [n.layerId() for n in project.layerTreeRoot().findLayers()]
        assert order.index(task.layer.id()) == order.index(layer.id()) - 1
        assert p.dock.detection.detect_button.isEnabled()
        assert p.dock.detection.progress.value() == 100
        assert p.dock.models.current_model_id() == MODEL  # the combo was filled from the daemon
    finally:
        p.unload()
        project.setFileName("")


def test_16bit_bgr_layer_detects_as_its_8bit_original(daemon_endpoint, tmp_path,
                                                      qgis_new_project):
    """A 16-bit copy of the tile with bands in B, G, R order and that colour
    interpretation: QGIS shows bands 3, 2, 1 as R, G, B, the dock sends that mapping,
    the daemon stretches 2-98 % and finds the panels; the layer metadata says how."""
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from plugin.settings import DaemonSettings

    u16 = write_bgr16(PV01_HELDOUT, tmp_path / "bgr16.tif", colour_interpretation=True)
    layer = QgsRasterLayer(str(u16), "bgr16", "gdal")
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())
    assert plan.bands == (3, 2, 1)
    settings = DaemonSettings(endpoint=daemon_endpoint, python=str(BACKEND_PYTHON),
                              repo=str(REPO), token=None)
    task = DetectTask(plan, settings, str(tmp_path / "u16.gpkg"), model_id=MODEL,
                      add_to_project=False)
    task.finished(task.run())
    assert task.layer is not None, task.error
    stats = task.result["stats"]
    assert stats["bands"] == [3, 2, 1] and stats["stretch"]["mode"] == "percentile"
    assert task.layer.featureCount() >= 1
    abstract = task.layer.metadata().abstract()
    assert "stretched to 8 bits (percentile:" in abstract and "uint16" in abstract
