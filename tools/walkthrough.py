"""The analyst's path through the QGIS desktop under Xvfb, one screenshot per step (a
script, not a test: ``build.py walkthrough``).

Launcher (run from the repository root)::

    python3 tools/walkthrough.py [--raster RASTER] [--out DIR] [--timeout 1500] [--keep]

Defaults: ``--raster`` the Vienna orthophoto (``<data>/vienna/vienna_44_2_ortho_2023_30cm.tif``,
``<data>`` = ``backend.config.data_dir``), ``--out`` ``out/walkthrough``. It installs the
release-shaped plugin into a fresh profile (as :mod:`tools.screenshot` does), lets the
plugin start its own daemon on a free loopback port (the dock starts it when it opens),
keeps results, retrained versions and job state in that temporary folder (never in the
user's), and drives QGIS with a ``QTimer`` (the UI thread is never blocked). Steps and files:

==  ==========================  ========================================================
01  ``01-open.png``             the orthophoto open; the dock shows the running daemon,
                                its default model and that model's values
02  ``02-detect.png``           *Detect in extent* on the whole scene: the result layer
                                on top of the layer tree
03  ``03-edit.png``             the user's corrections: detections deleted (the scene
                                has no panels), one polygon drawn and its attributes
                                filled (attribute table)
04  ``04-retrain-dialog.png``   *Retrain on corrections…*: the dialog with the counts
05  ``05-retrain-running.png``  the retrain running (phase, time left)
06  ``06-retrain-result.png``   the retrain's result window
07  ``07-processing.png``       the *Detect* Processing dialog (model combo box)
08  ``08-no-layer.png``         Detect with no active layer: the message
09  ``09-vector-layer.png``     Detect with a vector layer active: the message
10  ``10-off-raster.png``       Detect with the map view off the raster: the message
==  ==========================  ========================================================

``DIR/walkthrough.json`` lists each step (``name``, ``png``, ``ok``, ``note``, ``seconds``)
and the launcher prints it; the exit status is 0 when every step is ok. Each PNG is the
whole 1440x900 screen (dialogs included).

Requirements: ``qgis`` (Debian 3.22), ``xvfb-run`` (xvfb + xauth), the backend venv.
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
WIDTH, HEIGHT = 1440, 900


# =============================================================================== launcher

def _repo() -> Path:
    env = os.environ.get("ORTHOLENS_REPO")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def run_walkthrough(raster: str, out_dir: str, timeout_s: float = 1500.0,
                    keep: bool = False) -> Dict[str, Any]:
    """Run QGIS under Xvfb through the analyst's path and save one PNG per step.

    Args:
        raster: the orthophoto (GeoTIFF path).
        out_dir: folder of the PNGs and ``walkthrough.json`` (created; old PNGs removed).
        timeout_s: kill QGIS after this many seconds.
        keep: keep the temporary plugin/profile folder.

    Returns:
        ``{"ok", "steps": [...], "returncode", "wall_seconds", "log_tail"}``.

    Raises:
        FileNotFoundError: the raster, ``qgis`` or ``xvfb-run`` is missing.
    """
    from tools.common import free_port
    from tools.screenshot import clean_out, finish_steps, require_qgis, run_qgis_code

    raster_p = Path(raster).resolve()
    if not raster_p.is_file():
        raise FileNotFoundError(f"raster not found: {raster_p}")
    require_qgis()
    out = clean_out(out_dir, "walkthrough.json")
    tmp = Path(tempfile.mkdtemp(prefix="ortholens-walk-"))
    try:
        t0 = time.monotonic()
        rc, log = run_qgis_code(Path(__file__), tmp, {
            "ORTHOLENS_WALK_INSIDE": "1",
            "ORTHOLENS_RASTER": str(raster_p),
            "ORTHOLENS_WALK_OUT": str(out),
            "ORTHOLENS_WALK_TIMEOUT": str(max(60.0, timeout_s - 60.0)),
            "ORTHOLENS_ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
            "ORTHOLENS_AUTOSTART": "1",
            "ORTHOLENS_RESULTS": str(tmp / "results"),
            # the retrained version and any job state stay in the temporary folder
            "ORTHOLENS_USER_MODELS": str(tmp / "user-models"),
            "XDG_DATA_HOME": str(tmp / "data"),
        }, timeout_s, screen=SCREEN)
        return finish_steps(out / "walkthrough.json", len(STEPS), rc, log, t0)
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
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    info = run_walkthrough(a.raster, a.out, a.timeout, a.keep)
    for s in info.get("steps", []):
        print(f"{'ok ' if s['ok'] else 'BAD'} {s['name']:<18} {s['seconds']:7.1f} s  {s['note']}")
    if not info["ok"]:
        print(info["log_tail"], file=sys.stderr)
        return 1
    return 0


#: Step names, in order (the PNG of step i is ``f"{i:02d}-{name}.png"``).
STEPS = ["open", "detect", "edit", "retrain-dialog", "retrain-running", "retrain-result",
         "processing", "no-layer", "vector-layer", "off-raster"]


# =============================================================================== inside QGIS

def _inside_qgis() -> None:  # noqa: C901 - one state machine, step by step
    """The in-QGIS driver: each step starts something, waits for its condition, lets
    the canvas settle and grabs the screen."""
    import qgis.utils
    from qgis.PyQt.QtWidgets import QApplication, QDialog
    from qgis.core import (
        QgsGeometry,
        QgsPointXY,
        QgsProject,
        QgsRectangle,
        QgsVectorLayerUtils,
    )

    iface = qgis.utils.iface
    env = os.environ
    ns = runpy.run_path(env["ORTHOLENS_QGIS_STEPS"])  # tools/qgis_steps.py
    Step = ns["Step"]

    def plugin():
        return qgis.utils.plugins.get("ortholens")

    runner = ns["StepRunner"](iface, plugin, Path(env["ORTHOLENS_WALK_OUT"]),
                                  "walkthrough.json",
                                  float(env.get("ORTHOLENS_WALK_TIMEOUT", "1400")))
    st, record = runner.st, runner.record

    def dialogs() -> List[QDialog]:
        return [w for w in QApplication.topLevelWidgets()
                if isinstance(w, QDialog) and w.isVisible()]

    def message() -> str:
        p = plugin()
        return p.dock.detection.message() if p is not None and p.dock is not None else ""

    # each step: (start() -> None, done() -> bool); start records the note and the
    # verdict through ``record``, done may record them too
    def s_open_start():
        st["raster"] = ns["open_raster"](iface, env["ORTHOLENS_RASTER"], WIDTH, HEIGHT)

    def s_open_done():
        p = plugin()
        if p is None or p.status_task is not None or p.dock.models.current_card() is None:
            return False
        card = p.dock.models.current_card()
        record(True, f"dock: {p.dock.status.status_label.text()}; model {card['id']}, threshold "
                     f"{p.dock.models.threshold_spin.value():g}, min area "
                     f"{p.dock.models.min_area_spin.value():g} m²")
        return True

    def s_detect_start():
        runner.detect_all_of(st["raster"])

    def s_detect_done():
        t = runner.finished_detection()
        if t is None:
            return False
        if t.layer is None:
            record(False, t.error or "no result layer")
            return True
        st["result"] = t.layer
        top = QgsProject.instance().layerTreeRoot().findLayers()[0].layer()
        record(top is t.layer, f"{t.summary(full_path=False)}; on top: {top is t.layer}")
        return True

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
        record(len(feats) == 1 and area is not None and abs(float(area) - 8.0) < 0.1,
               f"deleted {len(ids)} detections, drew one 8 m² polygon: area_m2 = {area}")

    def s_edit_done():
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
        record(True, f"dialog '{d[0].windowTitle()}'")
        return True

    def s_rdialog_after():
        st.pop("rdialog").accept()

    def s_running_start():
        st["run_t"] = time.monotonic()

    def s_running_done():
        p = plugin()
        task = getattr(p.retrain, "task", None)
        if task is None:
            record(False, "no retrain task is running: " + message())
            return True
        if time.monotonic() - st["run_t"] < 12:
            return False
        record(True, message())
        return True

    def s_result_start():
        pass

    def s_result_done():
        p = plugin()
        if p.retrain.task is not None:
            return False
        d = [w for w in dialogs() if w is not iface.mainWindow()]
        last = p.retrain.last_task
        if not d and last is not None and getattr(last, "error", None):
            record(False, last.error)
            return True
        if not d:
            return False
        st["rresult"] = d[0]
        record(True, f"result window '{d[0].windowTitle()}'")
        return True

    def s_result_after():
        st.pop("rresult").close()

    def s_processing_start():
        import processing
        dlg = processing.createAlgorithmDialog("ortholens:detect", {})
        dlg.show()
        st["pdialog"] = dlg

    def s_processing_done():
        record(True, f"'{st['pdialog'].windowTitle()}'")
        return True

    def s_processing_after():
        st.pop("pdialog").close()

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
        iface.layerTreeView().setCurrentLayer(None)

    def vector_layer():
        iface.setActiveLayer(st["result"])

    def off_raster():
        iface.setActiveLayer(st["raster"])
        e = st["raster"].extent()
        iface.mapCanvas().setExtent(QgsRectangle(e.xMaximum() + 5000, e.yMinimum(),
                                                 e.xMaximum() + 5400, e.yMinimum() + 300))

    runner.run([Step("open", s_open_start, s_open_done),
                Step("detect", s_detect_start, s_detect_done),
                Step("edit", s_edit_start, s_edit_done, s_edit_after),
                # the dialog is modal: opened after the tick that starts the step
                Step("retrain-dialog", s_rdialog_start, s_rdialog_done, s_rdialog_after,
                     modal=True),
                Step("retrain-running", s_running_start, s_running_done),
                Step("retrain-result", s_result_start, s_result_done, s_result_after),
                Step("processing", s_processing_start, s_processing_done,
                     s_processing_after),
                Step("no-layer", *bad_input(no_layer, "No active layer")),
                Step("vector-layer", *bad_input(vector_layer, "is a vector layer")),
                Step("off-raster", *bad_input(off_raster, "does not overlap"))])
    qgis.utils._ortholens_walkthrough = runner  # type: ignore[attr-defined]


if os.environ.get("ORTHOLENS_WALK_INSIDE") == "1" and "qgis.utils" in sys.modules \
        and getattr(sys.modules["qgis.utils"], "iface", None) is not None:
    _inside_qgis()
elif __name__ == "__main__":
    sys.exit(main())
