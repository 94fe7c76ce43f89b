"""Batch jobs come back as the dock's results do: *Detect objects* writes to the
results folder and its output is added to the map styled and named; the job table
(the dock's *Batch jobs…*) lists the jobs with their state, progress, area, model and
output, and its Resume, Cancel job and Open result act, or say why not; a resumed
job's result is added and styled too, its progress with the time left.

Needs the real engine and a VRT mosaic of four pv01 held-out tiles.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
)

from helpers import wait_until
from proc_helpers import BLOCK, CancelAt, MODEL, needs_daemon, PV01, run_alg


def loaded(context, alg_id, params):
    """What QGIS's Processing does once an algorithm has finished: load the layers it
    asked for, running their post-processors; returns the layers added."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication
    before = set(QgsProject.instance().mapLayers())
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    assert handleAlgorithmResults(alg, context, QgsProcessingFeedback(), False, params)
    return [layer for lid, layer in QgsProject.instance().mapLayers().items()
            if lid not in before]


def assert_styled_result(layer, source_name):
    """A batch result as the dock's: named ``#<run> thr … · <source> · <model> v… ·
    batch HH:MM``, categorized on ``class`` in the card's colour, with its metadata."""
    assert re.match(rf"#\d+ thr [0-9.]+ · {source_name} · ", layer.name()), layer.name()
    assert f"{MODEL} v" in layer.name() and " · batch " in layer.name(), layer.name()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert renderer.classAttribute() == "class"
    assert "photovoltaic" in [c.value() for c in renderer.categories()]
    assert layer.customProperty("ortholens/model") == MODEL
    assert "Detected by Ortholens with" in layer.metadata().abstract()
    assert layer.fields().indexOf("region") >= 0  # kept in the file, hidden in the table
    assert layer.editorWidgetSetup(layer.fields().indexOf("region")).type() == "Hidden"


@needs_daemon
def test_detect_objects_writes_to_the_results_folder_and_adds_a_styled_result(
        daemon, provider, processing_gui, tmp_path, monkeypatch):  # noqa: F811
    results = tmp_path / "results"
    monkeypatch.setenv("ORTHOLENS_RESULTS", str(results))
    tif = PV01 / f"{BLOCK[0]}.tif"
    params = {"INPUT": str(tif), "MODEL": MODEL, "OUTPUT":
              QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", QgsProject.instance())}
    res, ok, context = run_alg("ortholens:detect", params)
    assert ok and res["COUNT"] > 0
    path = Path(res["OUTPUT"].split("|")[0])
    assert path.parent == results.resolve() and path.suffix == ".gpkg"
    added = loaded(context, "ortholens:detect", params)
    assert len(added) == 1 and added[0].featureCount() == res["COUNT"]
    assert_styled_result(added[0], BLOCK[0])
    top = QgsProject.instance().layerTreeRoot().findLayers()[0].layer()
    assert top is added[0]
    QgsProject.instance().removeMapLayer(added[0].id())


@needs_daemon
def test_job_table_lists_resumes_cancels_and_opens(daemon, provider, mosaic,  # noqa: F811
                                                   qgis_iface, tmp_path, monkeypatch):
    from plugin.jobs.dialog import BatchJobsDialog
    from plugin.jobs.rows import COLUMNS
    from plugin.settings import daemon_settings
    monkeypatch.setenv("ORTHOLENS_RESULTS", str(tmp_path / "results"))
    # a job the user cancelled a fifth of the way through (small regions: many of them)
    fb = CancelAt(20.0)
    run_alg("ortholens:detect", {"INPUT": str(mosaic), "MODEL": MODEL, "REGION_PX": 64,
                                 "OUTPUT": "TEMPORARY_OUTPUT"}, fb)
    assert fb.isCanceled()
    dlg = BatchJobsDialog(daemon_settings)
    dlg.show()
    try:
        def listed_cancelled():
            return any(j["state"] == "cancelled" and j["resumable"] for j in dlg.jobs)
        assert wait_until(lambda: dlg.list_task is None and listed_cancelled(), 60)
        job = next(j for j in dlg.jobs if j["state"] == "cancelled")
        assert dlg.select_job(job["job_id"])
        cells = [dlg.table.item(0, c).text() for c in range(len(COLUMNS))]
        row = dict(zip(COLUMNS, cells))
        assert row["State"] == "cancelled" and row["Model"] == MODEL
        assert " regions (" in row["Progress"] and row["Area"].endswith("km²")
        assert row["Output"].endswith(".gpkg") and row["Job"] == job["job_id"][:8]
        # what can be done with a cancelled job, and why the rest cannot
        assert dlg.resume_button.isEnabled() and dlg.open_button.isEnabled()
        assert not dlg.cancel_button.isEnabled()
        assert dlg.cancel_button.toolTip() == "The job is not running."
        assert "Cancel job: the job is not running" in dlg.hint.text()
        # Resume: it finishes, its result comes into the map styled, with time left shown
        seen = []
        task = dlg.resume()
        assert task is not None and not dlg.resume_button.isEnabled()
        task.message.connect(lambda _: seen.append(dlg.status.text()))  # after the window's
        assert wait_until(lambda: dlg.resume_task is None, 300), dlg.status.text()
        assert task.error is None and task.layer is not None, task.error
        assert any("elapsed" in m for m in seen), seen
        assert_styled_result(task.layer, mosaic.stem)
        assert QgsProject.instance().mapLayer(task.layer.id()) is task.layer
        assert "was added to the map" in dlg.status.text()
        assert wait_until(lambda: dlg.list_task is None and any(
            j["job_id"] == job["job_id"] and j["state"] == "done" for j in dlg.jobs), 60)
        dlg.select_job(job["job_id"])
        assert not dlg.resume_button.isEnabled()
        assert "nothing is left to do" in dlg.resume_button.toolTip()
        # Open result: the done job's GeoPackage again, as a new styled result
        opened = dlg.open_result()
        assert opened is not None and opened.featureCount() == task.layer.featureCount()
        assert_styled_result(opened, mosaic.stem)
        # Cancel job: a running job stops and stays resumable
        from plugin.processing.common import connect
        from protocol.params import BatchParams, DetectParams, FileSource
        client = connect()
        try:
            acc = client.submit_batch(BatchParams(
                DetectParams(FileSource(str(mosaic)), MODEL),
                out_path=str(tmp_path / "long.gpkg"), region_px=32))
        finally:
            client.close()
        dlg.refresh()
        assert wait_until(lambda: dlg.list_task is None and any(
            j["job_id"] == acc["job_id"] and j["running"] for j in dlg.jobs), 60)
        dlg.select_job(acc["job_id"])
        assert dlg.cancel_button.isEnabled() and not dlg.resume_button.isEnabled()
        assert dlg.resume_button.toolTip() == "The job is running."
        dlg.cancel_button.click()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                j["job_id"] == acc["job_id"] and j["state"] == "cancelled" for j in dlg.jobs):
            wait_until(lambda: dlg.list_task is None, 60)
            dlg.refresh()
            wait_until(lambda: dlg.list_task is None, 60)
        assert any(j["job_id"] == acc["job_id"] and j["state"] == "cancelled"
                   and j["resumable"] for j in dlg.jobs)
    finally:
        dlg.timer.stop()
        dlg.close()
