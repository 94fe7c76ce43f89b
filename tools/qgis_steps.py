"""Inside the QGIS desktop: steps run one after another on a ``QTimer``, a screenshot
after each (the driver of :mod:`tools.walkthrough` and :mod:`tools.install_shots`).

Only the standard library and QGIS's own Python are imported, so the scripts that QGIS
runs with ``--code`` load this file by path (``runpy.run_path`` of
``ORTHOLENS_QGIS_STEPS``, which the launchers set) without putting the repository on
QGIS's ``sys.path``, where it could stand in for what the installed plugin carries.

A step is ``start()``, then ``done()`` polled every 250 ms until it returns True, then
the canvas is left to finish drawing (five quiet ticks), the whole screen is grabbed to
``<out>/<NN>-<name>.png``, the step is recorded (``name, png, ok, note, seconds``) in
``<out>/<report>`` and ``after()`` runs. ``start`` and ``done`` give their verdict with
:meth:`StepRunner.record`. After the last step, or when a step's code raises, the rest
still runs (a raising step is recorded as failed); past the deadline the current step
is recorded as timed out. Then the daemon the plugin started is stopped and QGIS quits.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def _nothing() -> None:
    return None


@dataclass
class Step:
    """One step of a run.

    Attributes:
        name: the step's name (file ``NN-<name>.png``).
        start: starts it.
        done: True once it is over (polled).
        after: runs after the screenshot (closing what the step opened).
        modal: ``start`` opens a modal dialog, whose nested event loop would stop the
            timer's tick: it is called from a zero-delay single shot instead.
        settle: wait for the canvas to finish drawing before the screenshot (False: a
            running install whose progress must be caught as it is).
    """

    name: str
    start: Callable[[], None]
    done: Callable[[], bool]
    after: Callable[[], None] = _nothing
    modal: bool = False
    settle: bool = True


def open_raster(iface, path: str, width: int, height: int):
    """Maximise QGIS's main window (at ``width`` x ``height`` first), open the raster
    ``path`` as a layer named after its file, make it the active layer and show all of
    it in the map canvas, in its CRS; returns the layer."""
    from qgis.core import QgsProject, QgsRasterLayer

    mw = iface.mainWindow()
    mw.setGeometry(0, 0, width, height)
    mw.showMaximized()
    layer = QgsRasterLayer(path, Path(path).stem)
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    return layer


class StepRunner:
    """Runs :class:`Step` s in the QGIS desktop (see the module docstring).

    Args:
        iface: QGIS's ``iface``.
        plugin: returns the Ortholens plugin object, or None.
        out: the folder for the PNGs and the report (exists).
        report: the report's file name in ``out`` (JSON: ``{"steps": [...], **extra()}``).
        timeout_s: the whole run's deadline, seconds from now.
        extra: more fields of the report, read each time it is written.

    Attributes:
        st: the run's state (``i``, ``stage``, ``steps`` recorded, ``ok``, ``note``);
            scripts may keep their own keys in it.
    """

    def __init__(self, iface, plugin: Callable[[], Any], out: Path, report: str,
                 timeout_s: float, extra: Optional[Callable[[], Dict[str, Any]]] = None):
        self.iface = iface
        self.plugin = plugin
        self.out = out
        self.report = report
        self.deadline = time.monotonic() + timeout_s
        self.extra = extra or dict
        self.st: Dict[str, Any] = {"i": 0, "t": time.monotonic(), "stage": "start",
                                   "quiet": 0, "steps": [], "note": "", "ok": True}
        self.steps: List[Step] = []
        self.timer = None

    def record(self, ok: bool, note: str) -> None:
        """The current step's verdict and note (the last call counts)."""
        self.st["ok"], self.st["note"] = ok, note

    def detect_all_of(self, layer) -> None:
        """Make ``layer`` the active layer, show all of it and click the dock's Detect
        button."""
        self.iface.setActiveLayer(layer)
        self.iface.mapCanvas().setExtent(layer.extent())
        self.plugin().dock.detection.detect_button.click()

    def finished_detection(self):
        """The plugin's last detection task once none runs or waits, else None."""
        p = self.plugin()
        if p.task is not None or p.pending_detect or p.last_task is None:
            return None
        return p.last_task

    def run(self, steps: List[Step]) -> None:
        """Start the steps 1.5 s from now, on a 250 ms timer kept alive on the runner."""
        from qgis.PyQt.QtCore import QTimer
        self.steps = steps
        self.timer = QTimer()
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._tick)
        QTimer.singleShot(1500, self.timer.start)

    def _save(self) -> None:
        (self.out / self.report).write_text(
            json.dumps({"steps": self.st["steps"], **self.extra()}, indent=2),
            encoding="utf-8")

    def _quit(self) -> None:
        from qgis.PyQt.QtCore import QTimer
        from qgis.core import QgsProject
        self.timer.stop()
        self._save()
        p = self.plugin()
        if p is not None:
            p.stop_started_daemon()  # only a daemon the plugin itself started
        QgsProject.instance().setDirty(False)
        QTimer.singleShot(200, self.iface.actionExit().trigger)
        QTimer.singleShot(15000, lambda: os._exit(0))  # if exiting hangs

    def _tick(self) -> None:
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001 - recorded, then the next step
            import traceback
            self.record(False, f"driver error: {exc!r} {traceback.format_exc()[-400:]}")
            self.st["stage"] = "settle"

    def _step(self) -> None:
        from qgis.PyQt.QtCore import QTimer
        from qgis.PyQt.QtGui import QGuiApplication
        st = self.st
        i = st["i"]
        if i >= len(self.steps):
            self._quit()
            return
        step = self.steps[i]
        if time.monotonic() > self.deadline:
            self.record(False, f"timed out in step {step.name}")
            st["stage"] = "settle"
        if st["stage"] == "start":
            st["t"], st["ok"], st["note"] = time.monotonic(), True, ""
            st["stage"] = "wait"
            if step.modal:
                QTimer.singleShot(0, step.start)
            else:
                step.start()
            return
        if st["stage"] == "wait":
            if step.done():
                st["stage"], st["quiet"] = "settle", 0
            return
        if st["stage"] == "settle":  # the canvas finished drawing, then one more second
            st["quiet"] = st["quiet"] + 1 if not self.iface.mapCanvas().isDrawing() else 0
            if st["quiet"] < 5 and step.settle:
                return
            png = self.out / f"{i + 1:02d}-{step.name}.png"
            saved = QGuiApplication.primaryScreen().grabWindow(0).save(str(png), "PNG")
            st["steps"].append({"name": step.name, "png": png.name,
                                "ok": st["ok"] and saved, "note": st["note"],
                                "seconds": round(time.monotonic() - st["t"], 1)})
            self._save()
            st["i"], st["stage"] = i + 1, "start"
            step.after()
