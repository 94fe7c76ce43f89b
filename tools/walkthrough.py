"""The analyst's path through the QGIS desktop under Xvfb, one screenshot per step (a
script, not a test: ``build.py walkthrough``).

Launcher (run from the repository root)::

    python3 tools/walkthrough.py [--raster RASTER] [--out DIR] [--timeout 2700] [--keep]
                                 [--until STEP]

Defaults: ``--raster`` the Vienna orthophoto (``<data>/vienna/vienna_44_2_ortho_2023_30cm.tif``,
``<data>`` = ``backend.config.data_dir``), ``--out`` ``out/walkthrough``. It installs the
release-shaped plugin into a fresh profile (as :mod:`tools.screenshot` does), lets the
plugin start its own daemon on a free loopback port (the dock starts it when it opens),
keeps results, retrained versions and job state in that temporary folder (never in the
user's), and drives QGIS with a ``QTimer`` (the UI thread is never blocked). The pv01
held-out tiles (``<data>/pv01/heldout``) give the batch steps a VRT mosaic of four
tiles and a sparse VRT of all twelve (``gdalbuildvrt``). Steps and files:

==  ==========================  ========================================================
01  ``01-open.png``             the orthophoto open; the dock shows the running daemon,
                                its default model and that model's values
02  ``02-detect-running.png``   *Detect in extent* on the whole scene, running: the dock
                                says the time elapsed and left
03  ``03-detect.png``           its result layer on top of the layer tree, named
                                ``#1 thr … · vienna · model · HH:MM``; a warning amber
04  ``04-repeat.png``           Detect again with the same settings and extent: the dock
                                says which layer holds it
05  ``05-review.png``           the result in the dock's Review section: Next showed the
                                most uncertain polygon, Accept took the next one; it is
                                selected on the map, the counter says 1 reviewed
06  ``06-review-add.png``       *Add by click* on a pv01 held-out tile: a click on an
                                array the detection merged with its neighbour outlines
                                that array alone, added as ``added``
07  ``07-edit.png``             the user's corrections: detections deleted (the scene
                                has no panels), one polygon drawn and its attributes
                                filled (attribute table, column titles whole)
08  ``08-retrain-dialog.png``   *Retrain on corrections…*: the dialog with the counts and
                                the warning that too few objects will be held out
09  ``09-retrain-running.png``  the retrain running (phase, time elapsed and left)
10  ``10-retrain-result.png``   the retrain's result window, its table whole
11  ``11-versions.png``         *Keep this version anyway*: the versions panel lists it
                                with its area, in use here, and says why buttons wait
12  ``12-delete.png``           *Delete* of that version in use (the user said yes): rolled
                                back, then deleted
13  ``13-batch-running.png``    *Detect objects* on a VRT mosaic of four pv01 tiles in
                                small regions: progress with the time left
14  ``14-batch-cancel.png``     the user's Cancel: the log says it was cancelled, not failed
15  ``15-jobs-table.png``       *Batch jobs…*: the job table with the cancelled job; why
                                Cancel job cannot act
16  ``16-jobs-resume.png``      *Resume*: the job finishes and its result is added, styled
                                and named as a batch result
17  ``17-batch-done.png``       *Detect objects* on one tile, default output: the result
                                in the results folder, added styled and named
18  ``18-evaluate.png``         *Evaluate* of the 12 pv01 held-out tiles' detections (one
                                batch job each) against their masks at 0.1 m: the figures
                                of ``build.py eval``
19  ``19-large-extent.png``     Detect in extent on the sparse VRT of those tiles (387
                                Mpx): refused, naming Detect objects, with *Run as a batch
                                job…*
20  ``20-no-layer.png``         Detect with no active layer: the message
21  ``21-vector-layer.png``     Detect with a vector layer active: the message
22  ``22-off-raster.png``       Detect with the map view off the raster: the message
==  ==========================  ========================================================

Every step is checked by the texts it shows (messages, labels, logs, layer names), not
only that it ran.

``DIR/walkthrough.json`` lists each step (``name``, ``png``, ``ok``, ``note``, ``seconds``)
and the launcher prints it; the exit status is 0 when every step is ok. Each PNG is the
whole 1440x900 screen (dialogs included).

Requirements: ``qgis`` (Debian 3.22), ``xvfb-run`` (xvfb + xauth), ``gdalbuildvrt``,
the backend venv, the pv01 held-out tiles.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

SCREEN = "1440x900x24"
#: The pv01 held-out tile of *Add by click*: nine reference arrays, some side by side.
CLICK_TILE = "PV01_325192_1204246"
WIDTH, HEIGHT = 1440, 900


# =============================================================================== launcher

def _repo() -> Path:
    env = os.environ.get("ORTHOLENS_REPO")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


#: The four adjacent pv01 held-out tiles of the batch steps' mosaic.
MOSAIC_TILES = ["PV01_325190_1204243", "PV01_325190_1204246", "PV01_325192_1204246",
                "PV01_325192_1204249"]


def build_vrts(heldout: Path, folder: Path) -> Dict[str, str]:
    """``{"mosaic": VRT of MOSAIC_TILES, "sparse": VRT of all 12 held-out tiles}`` in
    ``folder``, made with ``gdalbuildvrt``.

    Raises:
        FileNotFoundError: ``gdalbuildvrt`` or a tile is missing.
    """
    import subprocess
    exe = shutil.which("gdalbuildvrt")
    tiles = sorted(p for p in heldout.glob("PV01_*.tif") if not p.stem.endswith("_mask"))
    if exe is None or len(tiles) != 12:
        raise FileNotFoundError(f"gdalbuildvrt and the 12 pv01 held-out tiles in {heldout}")
    out = {"mosaic": folder / "pv01_block.vrt", "sparse": folder / "pv01_heldout_12.vrt"}
    subprocess.run([exe, "-q", str(out["mosaic"])] + [str(heldout / f"{t}.tif")
                                                      for t in MOSAIC_TILES], check=True)
    subprocess.run([exe, "-q", str(out["sparse"])] + [str(t) for t in tiles], check=True)
    return {k: str(v) for k, v in out.items()}


def run_walkthrough(raster: str, out_dir: str, timeout_s: float = 2700.0,
                    keep: bool = False, until: str = "") -> Dict[str, Any]:
    """Run QGIS under Xvfb through the analyst's path and save one PNG per step.

    Args:
        raster: the orthophoto (GeoTIFF path).
        out_dir: folder of the PNGs and ``walkthrough.json`` (created; old PNGs removed).
        timeout_s: kill QGIS after this many seconds.
        keep: keep the temporary plugin/profile folder.
        until: stop after the step of this name (one of :data:`STEPS`; ``""``: all).

    Returns:
        ``{"ok", "steps": [...], "returncode", "wall_seconds", "log_tail"}``.

    Raises:
        FileNotFoundError: the raster, ``qgis`` or ``xvfb-run`` is missing.
    """
    from backend.config import data_dir
    from tools.common import free_port
    from tools.screenshot import clean_out, finish_steps, require_qgis, run_qgis_code

    raster_p = Path(raster).resolve()
    if not raster_p.is_file():
        raise FileNotFoundError(f"raster not found: {raster_p}")
    require_qgis()
    n_steps = STEPS.index(until) + 1 if until else len(STEPS)
    out = clean_out(out_dir, "walkthrough.json")
    tmp = Path(tempfile.mkdtemp(prefix="ortholens-walk-"))
    try:
        t0 = time.monotonic()
        heldout = data_dir() / "pv01" / "heldout"
        vrts = build_vrts(heldout, tmp)
        rc, log = run_qgis_code(Path(__file__), tmp, {
            "ORTHOLENS_WALK_HELDOUT": str(heldout),
            "ORTHOLENS_WALK_MOSAIC": vrts["mosaic"],
            "ORTHOLENS_WALK_SPARSE": vrts["sparse"],
            "ORTHOLENS_WALK_INSIDE": "1",
            "ORTHOLENS_RASTER": str(raster_p),
            "ORTHOLENS_WALK_OUT": str(out),
            "ORTHOLENS_WALK_TIMEOUT": str(max(60.0, timeout_s - 60.0)),
            "ORTHOLENS_WALK_STEPS": str(n_steps),
            "ORTHOLENS_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
            "ORTHOLENS_AUTOSTART": "1",
            "ORTHOLENS_RESULTS": str(tmp / "results"),
            # the retrained version and any job state stay in the temporary folder
            "ORTHOLENS_USER_MODELS": str(tmp / "user-models"),
            "XDG_DATA_HOME": str(tmp / "data"),
        }, timeout_s, screen=SCREEN)
        return finish_steps(out / "walkthrough.json", n_steps, rc, log, t0)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    """The launcher's command line (see the module docstring); the exit status."""
    if str(_repo()) not in sys.path:
        sys.path.insert(0, str(_repo()))
    from backend.config import data_dir

    ap = argparse.ArgumentParser(description="The analyst's path in QGIS, screenshots")
    ap.add_argument("--raster", default=str(data_dir() / "vienna"
                                            / "vienna_44_2_ortho_2023_30cm.tif"))
    ap.add_argument("--out", default=str(_repo() / "out" / "walkthrough"))
    ap.add_argument("--timeout", type=float, default=2700.0, help="seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--until", default="", choices=[""] + STEPS,
                    help="stop after this step (default: every step)")
    a = ap.parse_args(argv)
    info = run_walkthrough(a.raster, a.out, a.timeout, a.keep, a.until)
    for s in info.get("steps", []):
        print(f"{'ok ' if s['ok'] else 'BAD'} {s['name']:<16} {s['seconds']:7.1f} s  {s['note']}")
    if not info["ok"]:
        print(info["log_tail"], file=sys.stderr)
        return 1
    return 0


#: Step names, in order (the PNG of step i is ``f"{i:02d}-{name}.png"``).
STEPS = ["open", "detect-running", "detect", "repeat", "review", "review-add", "edit",
         "retrain-dialog",
         "retrain-running", "retrain-result", "versions", "delete", "batch-running",
         "batch-cancel", "jobs-table", "jobs-resume", "batch-done", "evaluate",
         "large-extent", "no-layer", "vector-layer", "off-raster"]


# =============================================================================== inside QGIS

def _inside_qgis() -> None:  # noqa: C901 - one state machine, step by step
    """The in-QGIS driver: each step starts something, waits for its condition, lets
    the canvas settle and grabs the screen."""
    import qgis.utils
    from qgis.PyQt.QtWidgets import QApplication, QDialog, QLabel, QPushButton, QTextEdit
    from qgis.core import (
        QgsCategorizedSymbolRenderer,
        QgsGeometry,
        QgsPointXY,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
        QgsVectorLayerUtils,
    )

    iface = qgis.utils.iface
    env = os.environ
    ns = runpy.run_path(env["ORTHOLENS_QGIS_STEPS"])  # tools/qgis_steps.py
    Step = ns["Step"]
    heldout = Path(env["ORTHOLENS_WALK_HELDOUT"])
    tiles = sorted(p for p in heldout.glob("PV01_*.tif") if not p.stem.endswith("_mask"))

    def plugin():
        return qgis.utils.plugins.get("ortholens")

    runner = ns["StepRunner"](iface, plugin, Path(env["ORTHOLENS_WALK_OUT"]),
                                  "walkthrough.json",
                                  float(env.get("ORTHOLENS_WALK_TIMEOUT", "2600")))
    st, record = runner.st, runner.record

    def dialogs() -> List[QDialog]:
        return [w for w in QApplication.topLevelWidgets()
                if isinstance(w, QDialog) and w.isVisible()]

    def message() -> str:
        p = plugin()
        return p.dock.detection.message() if p is not None and p.dock is not None else ""

    def add_raster(path: str, name: str, show: bool = True):
        layer = QgsRasterLayer(path, name)
        QgsProject.instance().addMapLayer(layer)
        iface.setActiveLayer(layer)
        if show:
            iface.mapCanvas().setDestinationCrs(layer.crs())
            iface.mapCanvas().setExtent(layer.extent())
        return layer

    def batch_layers() -> List[Any]:
        return [n.layer() for n in QgsProject.instance().layerTreeRoot().findLayers()
                if " · batch " in n.layer().name()]

    def styled(layer) -> bool:
        r = layer.renderer()
        return isinstance(r, QgsCategorizedSymbolRenderer) and r.classAttribute() == "class"

    # Processing dialogs, as the toolbox opens them (createCustomParametersWidget)
    def proc_dialog(alg_id: str, params: Dict[str, Any]):
        import processing
        from processing.core.ProcessingConfig import ProcessingConfig
        ProcessingConfig.setSettingValue(ProcessingConfig.KEEP_DIALOG_OPEN, True)
        dlg = processing.createAlgorithmDialog(alg_id, params)
        dlg.setGeometry(90, 60, 900, 720)
        dlg.show()
        st["finished"] = None
        dlg.algorithmFinished.connect(lambda ok, res: st.__setitem__("finished", (ok, res)))
        st["pdialog"] = dlg
        return dlg

    def log_of(dlg) -> str:
        log = dlg.findChild(QTextEdit, "txtLog")
        return log.toPlainText() if log is not None else ""

    def close_pdialog():
        dlg = st.pop("pdialog", None)
        if dlg is not None:
            dlg.close()

    # ------------------------------------------------------------- open, detect
    def s_open_start():
        mw = iface.mainWindow()
        mw.setGeometry(0, 0, WIDTH, HEIGHT)
        mw.showMaximized()
        st["raster"] = add_raster(env["ORTHOLENS_RASTER"], Path(env["ORTHOLENS_RASTER"]).stem)

    def s_open_done():
        p = plugin()
        if p is None or p.status_task is not None or p.dock.models.current_card() is None:
            return False
        card = p.dock.models.current_card()
        record(True, f"dock: {p.dock.status.status_label.text()}; model {card['id']}, threshold "
                     f"{p.dock.models.threshold_spin.value():g}, min area "
                     f"{p.dock.models.min_area_spin.value():g} m²")
        return True

    def s_running_start():
        iface.setActiveLayer(st["raster"])
        iface.mapCanvas().setExtent(st["raster"].extent())
        st["seen"] = []
        plugin().dock.detection.detect_button.click()

    def s_running_done():
        p = plugin()
        if p.task is not None and not st.get("hooked"):
            st["hooked"] = True
            p.task.message.connect(lambda m: st["seen"].append(m))
        text = message()
        if "elapsed" in text and " left" in text and "estimating" not in text:
            record(True, text)
            return True
        if p.task is None and not p.pending_detect:  # over before a time left was said
            timed = [m for m in st["seen"] if "elapsed" in m]
            record(bool(timed), (timed or ["no time in the messages"])[-1])
            return True
        return False

    def s_detect_done():
        from ortholens.dock.detection import LEVEL_COLORS
        from qgis.core import Qgis
        p = plugin()
        if p.task is not None or p.pending_detect or p.last_task is None:
            return False
        t = p.last_task
        if t.layer is None:
            record(False, t.error or "no result layer")
            return True
        st["result"] = t.layer
        top = QgsProject.instance().layerTreeRoot().findLayers()[0].layer()
        name = t.layer.name()
        amber = ("Warning:" not in message()
                 or LEVEL_COLORS[Qgis.Warning] in p.dock.detection.message_label.text())
        record(top is t.layer and name.startswith("#1 thr ")
               and f" · {st['raster'].name()} · " in name and amber,
               f"layer '{name}' on top: {top is t.layer}; dock: {message()}")
        return True

    def s_repeat_start():
        iface.setActiveLayer(st["raster"])
        iface.mapCanvas().setExtent(st["raster"].extent())
        plugin().dock.detection.detect_button.click()

    def s_repeat_done():
        text = message()
        record("already holds this detection" in text and plugin().task is None, text)
        return True

    # ------------------------------------------------------------- review
    def s_review_start():
        p, layer = plugin(), st["result"]
        iface.setActiveLayer(layer)
        p.review.show_layer(layer)
        sec = p.review.section
        p.dock.scroll.ensureWidgetVisible(sec)
        sec.buttons["next"].click()
        st["first"] = p.review.order[0] if p.review.order else None
        sec.buttons["accept"].click()  # the first accepted: the second is shown

    def s_review_done():
        p, layer = plugin(), st["result"]
        sec = p.review.section
        shown = p.review.order[p.review.pos] if p.review.pos >= 0 else None
        dock_to_bottom()
        ok = (st["first"] is not None and sec.counter.text().startswith("1 / ")
              and sec.current.text().startswith("#2 of")
              and layer.selectedFeatureIds() == [shown])
        record(ok, f"dock: {sec.counter.text()}; {sec.current.text()}")
        return True

    def dock_to_bottom():
        """Scroll the dock's column to its end (the Review section) once its layout
        has settled."""
        from qgis.PyQt.QtCore import QTimer
        bar = plugin().dock.scroll.verticalScrollBar()
        QTimer.singleShot(300, lambda: bar.setValue(bar.maximum()))

    def s_add_start():
        # a pv01 held-out tile with panel arrays side by side, detected in the dock
        p = plugin()
        st["walk_task"] = p.last_task
        st["tile"] = add_raster(str(heldout / f"{CLICK_TILE}.tif"), CLICK_TILE)
        runner.detect_all_of(st["tile"])

    def s_add_done():
        p = plugin()
        t = runner.finished_detection()
        if t is None or t is st["walk_task"]:
            return False
        layer, sec = t.layer, p.review.section
        st["tile_result"] = layer
        iface.setActiveLayer(layer)
        p.review.show_layer(layer)
        panel, merged = click_target(layer)
        sec.buttons["add"].click()  # the click tool is armed
        point = panel.pointOnSurface().asPoint()
        t0 = time.monotonic()
        fid = p.review.add_at(QgsPointXY(point))
        secs = time.monotonic() - t0
        f = layer.getFeature(fid) if fid is not None else None
        iou = (f.geometry().intersection(panel).area() / f.geometry().combine(panel).area()
               if f is not None else 0.0)
        if f is not None:
            p.review.show_feature(fid)
        dock_to_bottom()
        ok = (f is not None and f["origin"] == "click" and f["review"] == "added"
              and iou >= 0.7 and sec.counter.text().startswith("1 / "))
        which = "an array the detection missed or merged" if merged else "an array"
        record(ok, f"clicked {which}: added {f['area_m2'] if f else None} m², IoU "
                   f"{iou:.2f} with the array, in {secs:.1f} s; dock: {sec.counter.text()}")
        return True

    def click_target(layer):
        """The largest reference array of the tile no detection matches at IoU 0.5
        (else the largest), and whether one was unmatched."""
        from osgeo import gdal, ogr
        ds = gdal.Open(str(heldout / f"{CLICK_TILE}_mask.tif"))
        mem = ogr.GetDriverByName("Memory").CreateDataSource("m")
        lyr = mem.CreateLayer("p", ds.GetSpatialRef())
        lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
        band = ds.GetRasterBand(1)
        gdal.Polygonize(band, band, lyr, 0, ["8CONNECTED=8"])
        panels = [QgsGeometry.fromWkt(g.GetGeometryRef().ExportToWkt()) for g in lyr]
        dets = [f.geometry() for f in layer.getFeatures() if f["origin"] == "detection"]
        missed = [q for q in panels if not any(
            d.intersection(q).area() / d.combine(q).area() >= 0.5 for d in dets)]
        return max(missed or panels, key=lambda g: g.area()), bool(missed)

    def s_add_after():
        p = plugin()
        p.review.section.buttons["add"].click()  # the map tool is given back
        for key in ("tile_result", "tile"):
            layer = st.pop(key, None)
            if layer is not None:
                QgsProject.instance().removeMapLayer(layer.id())
        iface.mapCanvas().setDestinationCrs(st["raster"].crs())
        iface.mapCanvas().setExtent(st["raster"].extent())
        iface.setActiveLayer(st["result"])

    # ------------------------------------------------------------- edit, retrain
    def s_edit_start():
        layer = st["result"]
        layer.startEditing()
        ids = [f.id() for f in layer.getFeatures()]
        layer.deleteFeatures(ids)
        c = st["raster"].extent().center()
        ring = [QgsPointXY(c.x() + dx, c.y() + dy)
                for dx, dy in ((0, 0), (4, 0), (4, 2), (0, 2), (0, 0))]
        drawn = QgsVectorLayerUtils.createFeature(layer, QgsGeometry.fromPolygonXY([ring]))
        layer.addFeature(drawn)
        layer.commitChanges()
        feats = list(layer.getFeatures())
        area = feats[0]["area_m2"] if feats else None
        st["table"] = iface.showAttributeTable(layer)
        st["ok_edit"] = len(feats) == 1 and area is not None and abs(float(area) - 8.0) < 0.1
        st["note_edit"] = f"deleted {len(ids)} detections, drew one 8 m² polygon: area_m2 = {area}"

    def s_edit_done():
        from qgis.PyQt.QtWidgets import QTableView
        views = [v for v in st["table"].findChildren(QTableView) if v.isVisible()]
        if not views:
            return False
        view = views[0]
        header, model = view.horizontalHeader(), view.model()
        cut = [str(model.headerData(i, 1)) for i in range(model.columnCount())
               if not header.isSectionHidden(i)
               and header.fontMetrics().horizontalAdvance(str(model.headerData(i, 1))) + 8
               > header.sectionSize(i)]
        record(st["ok_edit"] and not cut, f"{st['note_edit']}; column titles cut: {cut}")
        return True

    def s_edit_after():
        # the drawn polygon was for the attribute table only: the scene has no panels
        t = st.pop("table", None)
        if t is not None:
            t.close()
        layer = st["result"]
        layer.startEditing()
        layer.deleteFeatures([f.id() for f in layer.getFeatures()])
        layer.commitChanges()
        iface.setActiveLayer(layer)

    def s_rdialog_start():
        plugin().dock.versions.retrain_button.click()  # opens the modal dialog (nested loop)

    def s_rdialog_done():
        d = [w for w in dialogs() if "etrain" in w.windowTitle()]
        if not d:
            return False
        st["rdialog"] = d[0]
        warning = d[0].holdout_label.text() if d[0].holdout_label.isVisible() else ""
        record("a verdict needs at least 10" in warning,
               f"dialog '{d[0].windowTitle()}': {warning}")
        return True

    def s_rdialog_after():
        st.pop("rdialog").accept()

    def s_rrunning_start():
        st["run_t"] = time.monotonic()

    def s_rrunning_done():
        p = plugin()
        task = getattr(p.retrain, "task", None)
        if task is None:
            record(False, "no retrain task is running: " + message())
            return True
        text = message()
        waited = time.monotonic() - st["run_t"]
        if waited < 12 or not ("elapsed" in text and " left" in text):
            if waited < 300:
                return False
            record(False, f"no time left after 300 s: {text}")
            return True
        record(True, text)
        return True

    def s_result_done():
        p = plugin()
        if p.retrain.task is not None:
            return False
        d = [w for w in dialogs() if w.objectName() == "OrtholensRetrainResult"]
        last = p.retrain.last_task
        if not d and last is not None and getattr(last, "error", None):
            record(False, last.error)
            return True
        if not d:
            return False
        st["rresult"] = d[0]
        label = d[0].label
        whole = label.height() >= label.heightForWidth(label.width())
        phases = [ln for ln in d[0].text().splitlines() if "Phases:" in ln or "Took " in ln]
        record(whole, f"result window '{d[0].windowTitle()}', table whole: {whole}: "
                      f"{d[0].text().splitlines()[0]} {' '.join(phases)}")
        return True

    def s_versions_start():
        p = plugin()
        p.dock.scroll.ensureWidgetVisible(p.dock.versions.why_label)
        dlg = st.pop("rresult")
        st["kept_t"] = time.monotonic()
        if dlg.keep_button is not None:
            dlg.keep_button.click()
        else:
            dlg.close()

    def s_versions_done():
        p = plugin()
        panel = p.dock.versions
        if p.retrain.versions_task is not None or p.status_task is not None or \
                p.retrain.listing_task is not None or panel.list.count() < 2:
            if time.monotonic() - st["kept_t"] < 60:
                return False
            record(False, f"no version to list: {message()}")
            return True
        here = panel.here_label.text()
        record(here.startswith("In use here: ") and "@1" in here and panel.why_label.text(),
               f"{panel.list.count()} versions; {here}; {panel.why_label.text()}")
        return True

    def s_delete_start():
        p = plugin()
        panel = p.dock.versions
        panel.pick(f"{p.dock.models.current_model_id().split('@')[0]}@1")
        p.retrain.confirm = lambda text: st.__setitem__("asked", text) or True
        panel.delete_button.click()

    def s_delete_done():
        p = plugin()
        if p.retrain.versions_task is not None or p.retrain.listing_task is not None:
            return False
        text = message()
        record("deleted" in text and "is in use" in st.get("asked", ""), text)
        return True

    # ------------------------------------------------------------- batch jobs
    def s_brunning_start():
        st["mosaic"] = add_raster(env["ORTHOLENS_WALK_MOSAIC"], "pv01_block")
        # the smallest regions (pipeline.MIN_REGION_PX): a job long enough to be seen
        # running and cancelled on a fast machine (64 px regions ended in under 3 s)
        proc_dialog("ortholens:detect", {"INPUT": st["mosaic"].id(), "REGION_PX": 32})
        st["pdialog"].runAlgorithm()

    def s_brunning_done():
        label = st["pdialog"].findChild(QLabel, "lblProgress")
        text = label.text() if label is not None else ""
        if "elapsed" in text and " left" in text and "estimating" not in text:
            record(True, text)
            return True
        if st.get("finished"):
            record(False, f"finished before a time left was shown: {text}")
            return True
        return False

    def s_bcancel_start():
        st["pdialog"].cancelButton().click()

    def s_bcancel_done():
        if not st.get("finished"):
            return False
        log = log_of(st["pdialog"])
        record("Cancelled as you asked" in log and "Execution failed" not in log,
               " / ".join(line for line in log.splitlines() if "ancel" in line)[-300:])
        return True

    def s_jobs_start():
        close_pdialog()
        plugin().dock.detection.jobs_button.click()

    def s_jobs_done():
        dlg = plugin().jobs.dialog
        if dlg is None or dlg.list_task is not None or not dlg.jobs:
            return False
        job = next((j for j in dlg.jobs if j["state"] == "cancelled"), None)
        if job is None:  # the batch ended before Cancel: nothing to resume, go on
            record(False, f"no cancelled job among {len(dlg.jobs)}: "
                          f"{', '.join(j['state'] for j in dlg.jobs)}")
            return True
        dlg.select_job(job["job_id"])
        st["job"] = job["job_id"]
        record(dlg.resume_button.isEnabled() and "Cancel job: the job is not running"
               in dlg.hint.text(), f"{len(dlg.jobs)} job(s); {dlg.hint.text()}")
        return True

    def s_resume_start():
        dlg = plugin().jobs.dialog
        if "job" in st:
            dlg.select_job(st["job"])
            dlg.resume_button.click()

    def s_resume_done():
        dlg = plugin().jobs.dialog
        if "job" not in st:
            record(False, "no cancelled job to resume")
            return True
        if dlg.resume_task is not None:
            return False
        added = batch_layers()
        ok = bool(added) and styled(added[0]) and "was added to the map" in dlg.status.text()
        record(ok, f"{dlg.status.text()}")
        return True

    def s_bdone_start():
        dlg = plugin().jobs.dialog
        if dlg is not None:
            dlg.close()
        tile = add_raster(str(tiles[0]), tiles[0].stem)
        proc_dialog("ortholens:detect", {"INPUT": tile.id()})
        st["pdialog"].runAlgorithm()

    def s_bdone_done():
        if not st.get("finished"):
            return False
        mine = [layer for layer in batch_layers() if f" · {tiles[0].stem} · " in layer.name()]
        if not mine:
            record(False, "no result layer: " + log_of(st["pdialog"])[-300:])
            return True
        layer, results = mine[0], env.get("ORTHOLENS_RESULTS", "")
        ok = layer.name().startswith("#") and styled(layer) and \
            layer.source().startswith(results)
        record(ok and "Execution completed" in log_of(st["pdialog"]),
               f"'{layer.name()}' from {Path(layer.source().split('|')[0]).name}")
        return True

    def s_eval_start():
        close_pdialog()
        st["eval_files"], st["eval_i"] = [], 0

    def s_eval_done():
        import processing
        if st["eval_i"] < len(tiles):  # one batch job a tick, as build.py eval: per tile
            tif = tiles[st["eval_i"]]
            out = Path(env["ORTHOLENS_RESULTS"]) / f"eval_{tif.stem}.gpkg"
            processing.run("ortholens:detect", {"INPUT": str(tif), "OUTPUT": str(out)})
            st["eval_files"].append(str(out))
            st["eval_i"] += 1
            return False
        if "pdialog" not in st:
            dlg = proc_dialog("ortholens:evaluate", {
                "DETECTIONS": st["eval_files"],
                "MASKS": [str(heldout / f"{t.stem}_mask.tif") for t in tiles],
                "OUTPUT_JSON": str(Path(env["ORTHOLENS_RESULTS"]) / "eval.json")})
            dlg.runAlgorithm()
            return False
        if not st.get("finished"):
            return False
        line = next((x for x in log_of(st["pdialog"]).splitlines() if "pixel IoU" in x), "")
        # build.py eval's figures as the CPU runs the model at 0.1 m (its INT8 graph)
        record("pixel IoU 0.904" in line and "F1 0.881" in line, line)
        return True

    def s_large_start():
        close_pdialog()
        add_raster(env["ORTHOLENS_WALK_SPARSE"], "pv01_heldout_12")
        plugin().dock.detection.detect_button.click()

    def s_large_done():
        p = plugin()
        if p.task is not None or p.pending_detect:
            return False
        item = iface.messageBar().currentItem()
        button = item.findChild(QPushButton, "ortholensRunAsBatch") if item else None
        if button is None:
            return False  # pushed on the next turn of the event loop, on top
        text = message()
        record("Processing › Ortholens › Detect objects" in text, text)
        return True

    def bad_input(setup: Callable[[], None], expected: str):
        def start():
            setup()
            plugin().dock.detection.detect_button.click()

        def done():
            text = message()
            record(expected in text and plugin().task is None, text)
            return True
        return start, done

    def no_layer():
        iface.messageBar().clearWidgets()
        iface.layerTreeView().setCurrentLayer(None)

    def vector_layer():
        iface.setActiveLayer(st["result"])

    def off_raster():
        iface.setActiveLayer(st["raster"])
        iface.mapCanvas().setDestinationCrs(st["raster"].crs())
        e = st["raster"].extent()
        iface.mapCanvas().setExtent(QgsRectangle(e.xMaximum() + 5000, e.yMinimum(),
                                                 e.xMaximum() + 5400, e.yMinimum() + 300))

    steps = ([Step("open", s_open_start, s_open_done),
                Step("detect-running", s_running_start, s_running_done, settle=False),
                Step("detect", lambda: None, s_detect_done),
                Step("repeat", s_repeat_start, s_repeat_done),
                Step("review", s_review_start, s_review_done),
                Step("review-add", s_add_start, s_add_done, s_add_after),
                Step("edit", s_edit_start, s_edit_done, s_edit_after),
                # the dialog is modal: opened after the tick that starts the step
                Step("retrain-dialog", s_rdialog_start, s_rdialog_done, s_rdialog_after,
                     modal=True),
                Step("retrain-running", s_rrunning_start, s_rrunning_done, settle=False),
                Step("retrain-result", lambda: None, s_result_done),
                Step("versions", s_versions_start, s_versions_done),
                Step("delete", s_delete_start, s_delete_done),
                Step("batch-running", s_brunning_start, s_brunning_done, settle=False),
                Step("batch-cancel", s_bcancel_start, s_bcancel_done),
                Step("jobs-table", s_jobs_start, s_jobs_done),
                Step("jobs-resume", s_resume_start, s_resume_done),
                Step("batch-done", s_bdone_start, s_bdone_done),
                Step("evaluate", s_eval_start, s_eval_done),
                Step("large-extent", s_large_start, s_large_done),
                Step("no-layer", *bad_input(no_layer, "No active layer")),
                Step("vector-layer", *bad_input(vector_layer, "is a vector layer")),
                Step("off-raster", *bad_input(off_raster, "does not overlap"))])
    runner.run(steps[:int(env.get("ORTHOLENS_WALK_STEPS") or len(steps))])
    qgis.utils._ortholens_walkthrough = runner  # type: ignore[attr-defined]


if os.environ.get("ORTHOLENS_WALK_INSIDE") == "1" and "qgis.utils" in sys.modules \
        and getattr(sys.modules["qgis.utils"], "iface", None) is not None:
    _inside_qgis()
elif __name__ == "__main__":
    sys.exit(main())
