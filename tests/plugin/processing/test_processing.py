"""The Ortholens Processing provider: registration, ``qgis_process`` headless, batch
over rasters, progress/cancel/resume, evaluation and training chips.

Needs the real daemon (backend venv + shipped model) and the pv01 held-out tiles; a
VRT mosaic of four of them is the multi-file input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from helpers import BACKEND_PYTHON, REPO, record_requests, write_bgr16
from proc_helpers import (ALT_MODEL, AREA, BLOCK, MODEL, PV01, CancelAt, features_of,
                          needs_daemon, run_alg)


# ----------------------------------------------------------------------------- tests

def test_metadata_declares_a_processing_provider():
    text = (REPO / "metadata.txt").read_text()
    assert "hasProcessingProvider=yes" in text


def test_provider_lists_the_algorithms_and_leaves_on_unload():
    from plugin.main import OrtholensPlugin
    reg = QgsApplication.processingRegistry()
    plugin = OrtholensPlugin(None)
    plugin.initProcessing()
    try:
        prov = reg.providerById("ortholens")
        assert prov is not None and prov.name() == "Ortholens"
        ids = sorted(a.id() for a in prov.algorithms())
        assert ids == ["ortholens:batchjobs", "ortholens:detect", "ortholens:evaluate",
                       "ortholens:exportchips", "ortholens:importmodel", "ortholens:rank",
                       "ortholens:retrain",
                       "ortholens:solarinventory"]
        detect = reg.algorithmById("ortholens:detect")
        names = [p.name() for p in detect.parameterDefinitions()]
        for n in ("INPUT", "EXTENT", "COVERAGE", "MODEL", "THRESHOLD", "MIN_AREA",
                  "REGION_PX", "EXECUTOR", "OUTPUT"):
            assert n in names
    finally:
        plugin.unload()
    assert reg.providerById("ortholens") is None


def test_parameter_labels_are_short_and_explained(provider):
    """Labels short enough not to be cut off; what they left out is the parameter's
    help (its tooltip)."""
    for alg in provider.algorithms():
        for p in alg.parameterDefinitions():
            assert len(p.description()) <= 24, (alg.id(), p.description())
    detect = QgsApplication.processingRegistry().algorithmById("ortholens:detect")
    assert "whole raster" in detect.parameterDefinition("EXTENT").toolTip()
    assert "card" in detect.parameterDefinition("THRESHOLD").toolTip()


def open_dialog(dialog_class, alg_id):
    """A shown dialog of a new instance of ``alg_id`` (as the toolbox opens it), and
    its help text."""
    from qgis.PyQt.QtCore import QCoreApplication
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    help_text = alg.shortHelpString()  # the dialog's help panel shows this
    dlg = dialog_class(alg)
    dlg.show()
    QCoreApplication.processEvents()
    return dlg, help_text


def combo_items(wrapper):
    c = wrapper.combo
    return [(c.itemText(i), c.itemData(i)) for i in range(c.count())]


@needs_daemon
def test_help_and_model_list_follow_the_daemon_start(daemon_port, provider, processing_gui,
                                                     request, monkeypatch):
    """Before the daemon runs, the dialog opens without asking it anything (so without
    waiting for an answer) and says it will be started; once it runs, the next dialog
    lists its models: a failure is not remembered."""
    from protocol.launcher import port_open
    from plugin.processing.common import NOT_RUNNING
    from plugin.processing.model_widget import DEFAULT_ENTRY
    AlgorithmDialog, _ = processing_gui
    old = os.environ.get("ORTHOLENS_ENDPOINT")
    try:
        if not port_open("127.0.0.1", daemon_port):  # this module's first daemon test
            os.environ["ORTHOLENS_ENDPOINT"] = f"tcp://127.0.0.1:{daemon_port}"
            sent = record_requests(monkeypatch)
            dlg, help_text = open_dialog(AlgorithmDialog, "ortholens:detect")
            model = dlg.mainWidget().wrappers["MODEL"]
            assert sent == []
            assert NOT_RUNNING in help_text and "(default)" not in help_text
            assert combo_items(model) == [(DEFAULT_ENTRY, None)]
            assert model.note.isVisible() and model.note.text() == NOT_RUNNING
            assert model.parameterValue() is None  # the engine's default at run time
            dlg.close()
    finally:
        if old is None:
            os.environ.pop("ORTHOLENS_ENDPOINT", None)
        else:
            os.environ["ORTHOLENS_ENDPOINT"] = old
    request.getfixturevalue("daemon")  # the engine starts (as the dock would start it)
    dlg, help_text = open_dialog(AlgorithmDialog, "ortholens:detect")
    assert "not running" not in help_text and "not reachable" not in help_text
    assert f"{MODEL} v2.0.0 — photovoltaic (default)" in help_text
    assert f"{ALT_MODEL} v2.0.0 — photovoltaic" in help_text
    model = dlg.mainWidget().wrappers["MODEL"]
    assert [d for _, d in combo_items(model)] == [ALT_MODEL, MODEL]
    assert model.combo.currentData() == MODEL and not model.note.isVisible()
    dlg.close()


@needs_daemon
def test_dialog_model_choice_reaches_the_algorithm(daemon, provider, processing_gui,
                                                   tmp_path):
    """The detect dialog lists the daemon's models (id, version, classes) with its
    default selected; the model picked there is the one the run detects with."""
    AlgorithmDialog, _ = processing_gui
    dlg, _ = open_dialog(AlgorithmDialog, "ortholens:detect")
    panel = dlg.mainWidget()
    model = panel.wrappers["MODEL"]
    assert combo_items(model) == [(f"{ALT_MODEL} v2.0.0 — photovoltaic", ALT_MODEL),
                                  (f"{MODEL} v2.0.0 — photovoltaic (default)", MODEL)]
    assert model.combo.currentText().endswith("(default)")
    # every parameter label is shown whole
    from qgis.PyQt.QtWidgets import QLabel
    labels = [lab for lab in panel.findChildren(QLabel)
              if lab.isVisible() and not lab.wordWrap() and lab.text()]
    assert len(labels) >= 6
    for lab in labels:
        assert lab.sizeHint().width() <= lab.width(), lab.text()

    context = QgsProcessingContext()
    tif, out = PV01 / f"{BLOCK[0]}.tif", tmp_path / "alt.gpkg"
    panel.wrappers["INPUT"].setParameterValue(str(tif), context)
    panel.wrappers["OUTPUT"].setParameterValue(str(out), context)
    assert panel.createProcessingParameters()["MODEL"] == MODEL
    model.combo.setCurrentIndex(model.combo.findData(ALT_MODEL))  # the user's pick
    params = panel.createProcessingParameters()
    assert params["MODEL"] == ALT_MODEL
    dlg.close()
    res, ok, _ = run_alg("ortholens:detect", params)
    assert ok and res["COUNT"] > 0
    vl = QgsVectorLayer(str(out), "alt", "ogr")
    assert {f["model"] for f in vl.getFeatures()} == {ALT_MODEL}
    del vl

    # the retrain dialog offers the same list; batch rows each get it, default chosen
    dlg, _ = open_dialog(AlgorithmDialog, "ortholens:retrain")
    model = dlg.mainWidget().wrappers["MODEL"]
    assert [d for _, d in combo_items(model)] == [ALT_MODEL, MODEL]
    assert model.combo.currentData() == MODEL
    dlg.close()
    _, BatchAlgorithmDialog = processing_gui
    dlg, _ = open_dialog(BatchAlgorithmDialog, "ortholens:detect")
    batch = dlg.mainWidget()
    batch.addRow()
    column = batch.parameter_to_column["MODEL"]
    rows = [r[column] for r in batch.wrappers]
    assert len(rows) >= 2 and all(r.value() == MODEL for r in rows)
    rows[1].setParameterValue(f"{MODEL}@7", context)  # an id typed elsewhere is kept
    assert rows[1].value() == f"{MODEL}@7"
    dlg.close()


@needs_daemon
def test_qgis_process_takes_a_model_id(daemon, tmp_path):
    """``qgis_process run ortholens:detect --MODEL=<id>``: the id string reaches the
    daemon; the help lists the daemon's models."""
    env = _qgis_process_env(tmp_path, daemon)
    qp = _qgis_process()
    out = tmp_path / "alt.gpkg"
    r = subprocess.run(qp + ["--json", "run", "ortholens:detect",
                             f"--INPUT={PV01 / (BLOCK[0] + '.tif')}",
                             f"--MODEL={ALT_MODEL}", f"--OUTPUT={out}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads(r.stdout[r.stdout.index("{"):])["results"]["COUNT"] > 0
    vl = QgsVectorLayer(str(out), "alt", "ogr")
    assert {f["model"] for f in vl.getFeatures()} == {ALT_MODEL}
    del vl
    h = subprocess.run(qp + ["help", "ortholens:detect"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert f"{MODEL} v2.0.0 — photovoltaic (default)" in h.stdout, h.stdout[-3000:]


def _qgis_process() -> list:
    """A working qgis_process command. Debian's /usr/bin/qgis_process wrapper passes
    QGIS_OPTS from /etc/default/qgis ('--noversioncheck', meant for the desktop), which
    qgis_process 3.22 rejects; the wrapped binary works."""
    for exe in ("qgis_process", "qgis_process.bin"):
        path = shutil.which(exe)
        if not path:
            continue
        r = subprocess.run([path, "--version"], capture_output=True, text=True,
                           env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        if r.returncode == 0 and "not known" not in (r.stdout + r.stderr):
            return [path]
    pytest.skip("no working qgis_process")


def _qgis_process_env(tmp_path, endpoint) -> dict:
    """The environment of a qgis_process child that loads the plugin as installed (a
    fresh profile with it enabled) and talks to the daemon at ``endpoint``."""
    from tools.screenshot import assemble_plugin, qgis_child_env
    plugins = tmp_path / "plugins"
    assemble_plugin(REPO, plugins)
    ini = tmp_path / "cfg" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\northolens=true\n")
    return dict(qgis_child_env(), QGIS_PLUGINPATH=str(plugins),
                QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "cfg"), QT_QPA_PLATFORM="offscreen",
                ORTHOLENS_ENDPOINT=endpoint, ORTHOLENS_BACKEND_PYTHON=str(BACKEND_PYTHON),
                ORTHOLENS_REPO=str(REPO))


@needs_daemon
def test_qgis_process_detect_on_vrt_equals_in_extent(daemon, mosaic, tmp_path, provider):
    from plugin.settings import DaemonSettings
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    env = _qgis_process_env(tmp_path, daemon)
    qp = _qgis_process()
    listed = subprocess.run(qp + ["list"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert "ortholens:detect" in listed.stdout, listed.stdout[-2000:] + listed.stderr[-2000:]

    out = tmp_path / "batch.gpkg"
    xmin, ymin, xmax, ymax = AREA
    r = subprocess.run(qp + ["--json", "run", "ortholens:detect", "--",
                             f"INPUT={mosaic}",
                             f"EXTENT={xmin!r},{xmax!r},{ymin!r},{ymax!r} [EPSG:32651]",
                             f"MODEL={MODEL}", "REGION_PX=128", f"OUTPUT={out}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert results["COUNT"] >= 5 and results["JOB_ID"]
    got = features_of(out)
    assert len(got) == results["COUNT"]

    # the plugin's own in-extent path (Detect in extent) on the same layer and area
    layer = QgsRasterLayer(str(mosaic), "mosaic", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, QgsRectangle(*AREA), QgsCoordinateReferenceSystem("EPSG:32651"))
    assert plan.source.to_wire() == {"kind": "file", "path": str(Path(mosaic).resolve())}
    settings = DaemonSettings(endpoint=daemon, python=str(BACKEND_PYTHON), repo=str(REPO),
                              token=None)
    ref_out = tmp_path / "in_extent.gpkg"
    task = DetectTask(plan, settings, str(ref_out), model_id=MODEL, add_to_project=False)
    ok = task.run()
    task.finished(ok)
    assert ok, task.error
    assert got == features_of(ref_out, task.table)  # same polygons, scores and areas
    QgsProject.instance().removeMapLayer(layer.id())


@needs_daemon
def test_progress_cancel_then_resume_through_processing(daemon, mosaic, tmp_path, provider):
    fb = CancelAt(20.0)
    res, ok, _ = run_alg("ortholens:detect", {"INPUT": str(mosaic), "MODEL": MODEL,
                                              "REGION_PX": 64, "OUTPUT": "TEMPORARY_OUTPUT"},
                         fb)
    assert fb.isCanceled() and fb.seen and not res.get("OUTPUT")
    import time
    deadline = time.monotonic() + 120  # a hang guard; the stop itself takes a batch
    while True:  # the daemon stops the job at its next model batch
        res, ok, _ = run_alg("ortholens:batchjobs", {"ACTION": 0})
        assert ok
        jobs = json.loads(res["JOBS"])
        cancelled = [j for j in jobs if j["state"] == "cancelled" and j["resumable"]]
        if cancelled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cancelled and 0 < cancelled[0]["regions_done"] < cancelled[0]["regions_total"]
    done_before = cancelled[0]["regions_done"]
    res, ok, _ = run_alg("ortholens:batchjobs", {"ACTION": 1,
                                                 "JOB_ID": cancelled[0]["job_id"]})
    assert ok and res["COUNT"] > 0 and Path(res["OUT_PATH"]).is_file()
    after = json.loads(run_alg("ortholens:batchjobs", {"ACTION": 0})[0]["JOBS"])
    mine = [j for j in after if j["job_id"] == cancelled[0]["job_id"]][0]
    assert mine["state"] == "done" and mine["regions_done"] == mine["regions_total"] > done_before


@needs_daemon
def test_batch_over_rasters_evaluate_and_chips(daemon, tmp_path, provider):
    from osgeo import gdal, ogr, osr

    reports = []
    for name in BLOCK[:2]:  # what the batch dialog does: one run per row
        tif, mask = PV01 / f"{name}.tif", PV01 / f"{name}_mask.tif"
        det = tmp_path / f"{name}_det.gpkg"
        res, ok, _ = run_alg("ortholens:detect", {"INPUT": str(tif), "MODEL": MODEL,
                                                  "OUTPUT": str(det)})
        assert ok and det.is_file()
        # reference polygons from the tile's ground-truth mask
        ref = tmp_path / f"{name}_ref.gpkg"
        src = gdal.Open(str(mask))
        srs = osr.SpatialReference(wkt=src.GetProjection())
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(ref))
        lyr = ds.CreateLayer("ref", srs, ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
        band = src.GetRasterBand(1)
        gdal.Polygonize(band, band, lyr, 0)
        ds = src = None
        out_json, out_html = tmp_path / f"{name}.json", tmp_path / f"{name}.html"
        res, ok, _ = run_alg("ortholens:evaluate", {
            "DETECTIONS": str(det), "REFERENCE": str(ref), "OUTPUT_JSON": str(out_json),
            "OUTPUT_HTML": str(out_html)})
        assert ok
        report = json.loads(out_json.read_text())
        for key in ("pixel_iou", "object_precision", "object_recall", "object_f1"):
            assert key in report
        # the algorithm's pixel IoU equals GDAL's own rasterisation of the detections
        # on the mask's grid, compared with the mask
        msrc = gdal.Open(str(mask))
        ref_px = msrc.GetRasterBand(1).ReadAsArray() > 0
        burn = gdal.GetDriverByName("MEM").Create("", msrc.RasterXSize, msrc.RasterYSize, 1,
                                                  gdal.GDT_Byte)
        burn.SetGeoTransform(msrc.GetGeoTransform())
        burn.SetProjection(msrc.GetProjection())
        dds = ogr.Open(str(det))
        gdal.RasterizeLayer(burn, [1], dds.GetLayer(0), burn_values=[1])
        det_px = burn.GetRasterBand(1).ReadAsArray() > 0
        iou = (det_px & ref_px).sum() / (det_px | ref_px).sum()
        dds = burn = msrc = None
        assert ref_px.sum() > 100 and report["objects_true"] > 0
        assert abs(report["pixel_iou"] - iou) < 0.01, (report["pixel_iou"], iou)
        assert iou > 0.5
        assert "pixel_iou" in out_html.read_text()
        reports.append(report)
        # the reference against itself is perfect
        res, ok, _ = run_alg("ortholens:evaluate", {
            "DETECTIONS": str(ref), "REFERENCE": str(ref),
            "OUTPUT_JSON": str(tmp_path / "self.json")})
        assert res["PIXEL_IOU"] == 1.0 and res["OBJECT_F1"] == 1.0
    assert len(reports) == 2

    # coverage polygons: only detections meeting them are kept
    name = BLOCK[0]
    det_all = features_of(tmp_path / f"{name}_det.gpkg")
    res, ok, ctx = run_alg("ortholens:detect", {
        "INPUT": str(PV01 / f"{name}.tif"), "MODEL": MODEL,
        "COVERAGE": str(tmp_path / f"{name}_ref.gpkg"), "OUTPUT": "TEMPORARY_OUTPUT"})
    assert ok
    from qgis.core import QgsProcessingUtils
    covered = QgsProcessingUtils.mapLayerFromString(res["OUTPUT"], ctx)
    ref_layer = QgsVectorLayer(str(tmp_path / f"{name}_ref.gpkg"), "ref", "ogr")
    refs = [f.geometry() for f in ref_layer.getFeatures()]
    kept = list(covered.getFeatures())
    assert 0 < len(kept) <= len(det_all) and res["COUNT"] == len(kept)
    assert all(any(f.geometry().intersects(r) for r in refs) for f in kept)

    # training chips: 256 px tile, 128 px chips -> 4 chips + 4 masks + manifest
    chips = tmp_path / "chips"
    name = BLOCK[0]
    res, ok, _ = run_alg("ortholens:exportchips", {
        "INPUT": str(PV01 / f"{name}.tif"), "POLYGONS": str(tmp_path / f"{name}_ref.gpkg"),
        "CHIP_SIZE": 128, "OUTPUT": str(chips)})
    assert ok and res["CHIPS"] == 4
    masks = sorted(chips.glob("*_mask.tif"))
    assert len(masks) == 4 and len(list(chips.glob("*.tif"))) == 8
    import numpy as np
    truth = gdal.Open(str(PV01 / f"{name}_mask.tif")).ReadAsArray() > 0
    for m in masks:
        r, c = (int(x[1:]) for x in m.stem.split("_")[-3:-1])
        chip = gdal.Open(str(m))
        assert np.array_equal(chip.ReadAsArray() > 0, truth[r:r + 128, c:c + 128])
        img = gdal.Open(str(m).replace("_mask.tif", ".tif"))
        assert img.RasterCount == 3 and img.GetGeoTransform() == chip.GetGeoTransform()
    assert (chips / "manifest.csv").read_text().count("\n") == 5


@needs_daemon
def test_detect_takes_band_mapping_and_a_16bit_stretch(daemon, tmp_path, provider):
    """A 16-bit BGR copy of a tile (v * 40 + 1000, bands reversed): with Bands 3, 2, 1
    and the min/max that undo the scaling, Detect objects gives the 8-bit tile's
    polygons; a wrong number of min/max values is a clear error."""
    tif = PV01 / f"{BLOCK[0]}.tif"
    u16 = write_bgr16(tif, tmp_path / "bgr16.tif")
    ref_out, out = tmp_path / "ref.gpkg", tmp_path / "u16.gpkg"
    _, ok, _ = run_alg("ortholens:detect", {"INPUT": str(tif), "MODEL": MODEL,
                                            "OUTPUT": str(ref_out)})
    assert ok
    _, ok, _ = run_alg("ortholens:detect", {
        "INPUT": str(u16), "MODEL": MODEL, "BANDS": [3, 2, 1], "STRETCH": 1,
        "STRETCH_MIN": "1000", "STRETCH_MAX": "11200", "OUTPUT": str(out)})
    assert ok
    ref = features_of(ref_out)
    assert ref and features_of(out) == ref
    from qgis.core import QgsProcessingException
    alg = QgsApplication.processingRegistry().createAlgorithmById("ortholens:detect")
    with pytest.raises(QgsProcessingException, match="one minimum and one maximum per band"):
        alg._stretch({"STRETCH": 1, "STRETCH_MIN": "1, 2", "STRETCH_MAX": "3, 4"},
                     QgsProcessingContext(), (3, 2, 1))
