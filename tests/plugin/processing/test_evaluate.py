"""*Evaluate against reference polygons or masks*: the pv01 held-out masks scored tile
by tile give ``build.py eval``'s figures; a background polygon left in a polygonized
mask is warned about; a failure is reported as one, also in QGIS's dialog.

Needs the real engine and the 12 pv01 held-out tiles with their masks.
"""

from __future__ import annotations

import json

import pytest
from qgis.core import QgsProcessingFeedback, QgsVectorLayer

from proc_helpers import MODEL, needs_daemon, PV01, run_alg

#: The 12 held-out tiles (each with ``<name>_mask.tif``: 1 = panel).
TILES = sorted(p for p in PV01.glob("PV01_*.tif") if not p.stem.endswith("_mask"))
#: ``build.py eval`` (tools/evaluate.py) of the shipped model on them as the CPU runs it
#: (its INT8 graph at 0.1 m; docs/performance.md): pixel IoU 0.904, object F1 0.881
#: (P 0.929, R 0.839; 2 false, 5 missed). The fp32 graph's pixel IoU is 0.906.
EVAL = {"pixel_iou": 0.904, "object_f1": 0.881, "object_precision": 0.929,
        "object_recall": 0.839, "objects_true": 31, "false_objects": 2,
        "missed_objects": 5}


class Warnings(QgsProcessingFeedback):
    """A feedback that keeps the warnings pushed."""

    def __init__(self):
        super().__init__()
        self.warnings = []

    def pushWarning(self, text):  # noqa: N802 - QGIS API
        self.warnings.append(text)
        super().pushWarning(text)


@pytest.fixture(scope="module")
def heldout_files(daemon, provider, tmp_path_factory):  # noqa: F811
    """Detect objects on each held-out tile, one GeoPackage per tile (a batch job
    each, as 'build.py eval' runs one detection per tile)."""
    assert len(TILES) == 12, TILES
    out = tmp_path_factory.mktemp("heldout")
    files = []
    for tif in TILES:
        gpkg = out / f"{tif.stem}.gpkg"
        res, ok, _ = run_alg("ortholens:detect", {"INPUT": str(tif), "MODEL": MODEL,
                                                  "OUTPUT": str(gpkg)})
        assert ok, tif
        files.append(gpkg)
    return files


@pytest.fixture(scope="module")
def heldout_detections(heldout_files):
    """The held-out tiles' detections merged into one memory layer."""
    merged = QgsVectorLayer("MultiPolygon?crs=EPSG:32651", "detections", "memory")
    first = QgsVectorLayer(str(heldout_files[0]), "d", "ogr")
    merged.dataProvider().addAttributes(first.fields().toList())
    merged.updateFields()
    feats = [f for p in heldout_files for f in QgsVectorLayer(str(p), "d", "ogr").getFeatures()]
    assert merged.dataProvider().addFeatures(feats)[0]
    return merged


@needs_daemon
def test_masks_of_the_twelve_heldout_tiles_give_the_figures_of_build_py_eval(
        heldout_files, tmp_path):
    """Each mask is scored on its own grid at 0.1 m (scattered over 4.7 km, one grid
    would be 47194 x 8195 px) against its own tile's detections, and the counts are
    pooled, as build.py eval does."""
    out = tmp_path / "eval.json"
    res, ok, _ = run_alg("ortholens:evaluate", {
        "DETECTIONS": [str(p) for p in heldout_files],
        "MASKS": [str(PV01 / f"{t.stem}_mask.tif") for t in TILES],
        "OUTPUT_JSON": str(out), "OUTPUT_HTML": str(tmp_path / "eval.html")})
    assert ok
    report = json.loads(out.read_text())
    assert len(report["grids"]) == 12 and report["scored_on"] == "reference masks"
    assert all(g["width_px"] == g["height_px"] == 256 for g in report["grids"])
    assert all(g["detections"] == [g["name"][:-len("_mask")]] for g in report["grids"])
    got = {k: round(report[k], 3) if isinstance(report[k], float) else report[k]
           for k in EVAL}
    assert got == EVAL
    assert round(res["OBJECT_F1"], 3) == EVAL["object_f1"] and not report["warnings"]
    assert "Per grid" in (tmp_path / "eval.html").read_text()


@needs_daemon
def test_a_polygonized_mask_with_its_background_is_warned_about(heldout_detections,
                                                                tmp_path):
    """The issue's mistake: a mask polygonized with its DN = 0 polygon kept scores F1
    near 0, and the warning says why; scored per tile (scored areas = the tiles), no
    grid of 47194 x 8195 px is needed."""
    from osgeo import gdal, ogr, osr
    ref = tmp_path / "ref.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(ref))
    cover = ds.CreateLayer("tiles", osr.SpatialReference(wkt=gdal.Open(str(TILES[0]))
                                                         .GetProjection()), ogr.wkbPolygon)
    lyr = ds.CreateLayer("ref", cover.GetSpatialRef(), ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("DN", ogr.OFTInteger))
    for tif in TILES:
        src = gdal.Open(str(PV01 / f"{tif.stem}_mask.tif"))
        gdal.Polygonize(src.GetRasterBand(1), None, lyr, 0)  # every value, 0 too
        x0, dx, _, y0, _, dy = src.GetGeoTransform()
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((x0, y0), (x0 + 256 * dx, y0), (x0 + 256 * dx, y0 + 256 * dy),
                     (x0, y0 + 256 * dy), (x0, y0)):
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        f = ogr.Feature(cover.GetLayerDefn())
        f.SetGeometry(poly)
        cover.CreateFeature(f)
    ds = None
    fb = Warnings()
    res, ok, _ = run_alg("ortholens:evaluate", {
        "DETECTIONS": heldout_detections, "REFERENCE": f"{ref}|layername=ref",
        "COVERAGE": f"{ref}|layername=tiles", "OUTPUT_JSON": str(tmp_path / "r.json")}, fb)
    assert ok and res["OBJECT_F1"] < 0.2
    assert any("background (DN = 0)" in w for w in fb.warnings), fb.warnings
    # without the scored areas the twelve tiles need one grid too large to score, and
    # the failure says what to give instead
    res, ok, _ = run_alg("ortholens:evaluate", {
        "DETECTIONS": heldout_detections, "REFERENCE": f"{ref}|layername=ref",
        "OUTPUT_JSON": str(tmp_path / "big.json")})
    assert not ok and not res


def test_no_reference_fails_and_the_dialog_says_so_right(provider, processing_gui):  # noqa: F811
    from plugin.processing.dialog import HTML_NOTE, algorithm_dialog, cancelled_line
    from qgis.core import QgsApplication
    res, ok, _ = run_alg("ortholens:evaluate", {"DETECTIONS": "memory:?", "OUTPUT_JSON":
                                                "/tmp/never.json"})
    assert not ok
    assert cancelled_line("Execution failed after 162.81 seconds") == \
        "Cancelled as you asked after 162.81 seconds."
    from qgis.PyQt.QtWidgets import QTextEdit
    alg = QgsApplication.processingRegistry().algorithmById("ortholens:evaluate")
    dlg = algorithm_dialog(alg)
    log = dlg.findChild(QTextEdit, "txtLog")
    assert log is not None
    dlg._html_written = False  # a failed run, or one without the HTML report
    dlg.setInfo(f"{HTML_NOTE} by this algorithm.")
    assert HTML_NOTE not in log.toPlainText()
    dlg._html_written = True
    dlg.setInfo(f"{HTML_NOTE} by this algorithm.")
    assert HTML_NOTE in log.toPlainText()
    feedback = dlg.createFeedback()
    feedback.cancel()  # the user's Cancel, then the dialog's closing line
    feedback.reportError("Execution failed after 3.00 seconds")
    assert "Cancelled as you asked after 3.00 seconds." in feedback.textLog()
    assert "Execution failed" not in feedback.textLog()
    dlg.close()
