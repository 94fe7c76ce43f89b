"""``ortholens:solarinventory`` through QGIS Processing on a real result layer (the
shipped model's detections on four pv01 held-out tiles, written as the plugin writes
result layers), with the hand-digitised roofs (a GeoJSON, written to a GeoPackage for
the engine) and an earlier date (a memory layer); a layer with unsaved edits; and the
dock's *Solar inventory…* button. Needs the real engine (backend venv, shipped model)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

from helpers import (BACKEND_PYTHON, DEFAULT_MODEL, REPO, data_dir, flush_deletes,
                     start_test_engine, stop_process)

PV01 = data_dir() / "pv01" / "heldout"
TILES = ["PV01_325173_1203750", "PV01_325173_1203753", "PV01_325239_1203816",
         "PV01_325192_1204246"]
ROOFS = REPO / "tests" / "fixtures" / "pv01_roofs.geojson"

_missing = [str(p) for p in [BACKEND_PYTHON] + [PV01 / f"{n}.tif" for n in TILES]
            if not p.exists()]
pytestmark = pytest.mark.skipif(bool(_missing), reason="needs: " + ", ".join(_missing))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    endpoint, proc = start_test_engine(tmp / "engine.log",
                                       env={"ORTHOLENS_JOBS_DIR": str(tmp / "jobs")})
    old = os.environ.get("ORTHOLENS_ENDPOINT")
    os.environ["ORTHOLENS_ENDPOINT"] = endpoint
    yield endpoint
    if old is None:
        os.environ.pop("ORTHOLENS_ENDPOINT", None)
    else:
        os.environ["ORTHOLENS_ENDPOINT"] = old
    stop_process(proc)


@pytest.fixture(scope="module")
def provider():
    from plugin.main import OrtholensPlugin
    plugin = OrtholensPlugin(None)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@pytest.fixture(scope="module")
def result_file(engine, provider, tmp_path_factory):
    """The detections on the four tiles written as the plugin writes a result layer:
    ``(GeoPackage path, table, the model's classes)``."""
    from plugin.layers.load import write_result_layer
    from protocol.client import OrtholensClient
    from protocol.params import DetectParams, FileSource
    feats, crs = [], None
    with OrtholensClient(engine, timeout_s=60) as c:
        card = next(m for m in c.models() if m["id"] == DEFAULT_MODEL)
        for name in TILES:
            r = c.detect(DetectParams(FileSource(str(PV01 / f"{name}.tif")), DEFAULT_MODEL),
                         job_timeout_s=300)
            feats += r["features"]
            crs = r["crs"]
    path = tmp_path_factory.mktemp("result") / "heldout.gpkg"
    layer = write_result_layer({"crs": crs, "features": feats}, str(path),
                               "heldout pv-unet-efl0", card["classes"],
                               add_to_project=False)
    assert layer.isValid() and layer.featureCount() == len(feats) > 5
    from plugin.layers.naming import safe_name
    return str(path), safe_name("heldout pv-unet-efl0", 60), card["classes"]


@pytest.fixture
def result_layer(result_file):
    """The result layer, opened for one test as the plugin opens result layers."""
    from plugin.layers.load import load_result_layer
    path, table, classes = result_file
    return load_result_layer(path, table, classes, display_name="heldout",
                             add_to_project=False)


def run_alg(params):
    alg = QgsApplication.processingRegistry().createAlgorithmById(
        "ortholens:solarinventory")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    res, ok = alg.run(params, context, feedback)
    return res, ok, context, feedback


def _areas(layer):
    return [f.geometry().area() for f in layer.getFeatures()]


def _earlier(layer):
    """A memory copy of ``layer`` without its first feature (that one is new later)."""
    mem = QgsVectorLayer(f"MultiPolygon?crs={layer.crs().authid()}", "earlier", "memory")
    mem.dataProvider().addAttributes(layer.fields().toList())
    mem.updateFields()
    feats = list(layer.getFeatures())[1:]
    copies = []
    for f in feats:
        g = QgsFeature(mem.fields())
        g.setGeometry(f.geometry())
        g.setAttributes(f.attributes())
        copies.append(g)
    assert mem.dataProvider().addFeatures(copies)[0]
    return mem


def test_the_inventory_of_a_result_layer(result_layer, tmp_path):
    earlier = _earlier(result_layer)
    out = tmp_path / "inventory"
    res, ok, context, feedback = run_alg({
        "INPUT": result_layer, "BUILDINGS": str(ROOFS), "BUILDING_ID": "building",
        "EARLIER": earlier, "TITLE": "Held-out tiles", "OUTPUT": str(out)})
    assert ok, feedback.textLog()
    areas = _areas(result_layer)
    assert res["INSTALLATIONS"] == len(areas)
    assert res["AREA_M2"] == pytest.approx(sum(areas), abs=1e-3)
    assert res["KWP"] == pytest.approx(0.2 * sum(areas), abs=1e-3)
    for key, name in (("GPKG", "solar_inventory.gpkg"), ("CSV", "solar_inventory.csv"),
                      ("HTML", "solar_inventory.html")):
        assert res[key] == str(out / name) and Path(res[key]).is_file()
    counts = {}
    for name in ("installations", "buildings", "changes", "totals"):
        vl = QgsVectorLayer(f"{res['GPKG']}|layername={name}", name, "ogr")
        assert vl.isValid(), name
        counts[name] = vl.featureCount()
        if name == "changes":
            statuses = sorted(f["status"] for f in vl.getFeatures())
        if name == "buildings":
            held = {f["building"]: f["installations"] for f in vl.getFeatures()}
        del vl
    assert counts == {"installations": len(areas), "buildings": 7,
                      "changes": len(areas), "totals": 2}
    assert statuses == ["new"] + ["unchanged"] * (len(areas) - 1)
    assert {k for k, n in held.items() if n} == {"C", "D", "G"}
    loads = context.layersToLoadOnCompletion()
    assert sorted(d.name for d in loads.values()) == [
        "Solar inventory — buildings", "Solar inventory — changes",
        "Solar inventory — installations"]
    assert f"{len(areas)} installations" in feedback.textLog()
    assert "1 new" in feedback.textLog()


def test_unsaved_edits_are_what_the_engine_counts(result_layer, tmp_path):
    layer = result_layer
    n = layer.featureCount()
    assert layer.startEditing()
    try:
        first = next(layer.getFeatures())
        assert layer.deleteFeature(first.id())
        res, ok, _, feedback = run_alg({"INPUT": layer, "OUTPUT": str(tmp_path / "o")})
        assert ok, feedback.textLog()
        assert res["INSTALLATIONS"] == n - 1
        assert res["AREA_M2"] == pytest.approx(sum(_areas(layer)), abs=1e-3)
    finally:
        layer.rollBack()
    assert layer.featureCount() == n


def test_the_sources_the_engine_reads(result_layer, tmp_path):
    from plugin.processing.inventory_alg import file_layer
    ref = file_layer(result_layer)
    assert ref is not None and ref.path.endswith("heldout.gpkg") and ref.layer
    assert file_layer(result_layer, selected_only=True) is None
    roofs = QgsVectorLayer(str(ROOFS), "roofs", "ogr")
    assert roofs.isValid() and file_layer(roofs) is None  # GeoJSON: written first
    filtered = QgsVectorLayer(result_layer.source(), "f", "ogr")
    filtered.setSubsetString("score > 0.95")
    assert file_layer(filtered) is None


def test_the_dock_button_opens_the_dialog_on_the_result_layer(
        qgis_iface, qgis_new_project, result_layer, processing_gui, provider):
    import plugin
    QgsProject.instance().addMapLayer(result_layer)
    p = plugin.classFactory(qgis_iface)
    p.provider = provider  # this module's, registered already: initGui keeps it
    p.initGui()
    try:
        qgis_iface.setActiveLayer(result_layer)
        p.dock.detection.inventory_button.click()
        dlg = p.inventory_dialog
        assert dlg is not None and dlg.isVisible()
        assert dlg.algorithm().id() == "ortholens:solarinventory"
        value = dlg.mainWidget().wrappers["INPUT"].parameterValue()
        assert result_layer.id() in str(value) or result_layer.source() in str(value)
        dlg.close()
    finally:
        p.provider = None  # the module's fixture unregisters it
        p.unload()
        flush_deletes()
