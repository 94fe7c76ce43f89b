"""*Add model…*: an ONNX file chosen in a file dialog becomes one of the engine's models.

The engine reads the file itself (``import_model``, ``protocol.importing``): the path is
one on the engine's computer, which is this one for the engine the plugin starts. When
the engine answers that the file lacks metadata, :class:`~.dialog.MetadataDialog` asks
for it and the request is sent again with the values; any other refusal (not a
segmentation model, a graph that does not run) is shown as the engine words it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtWidgets import QFileDialog
from qgis.core import Qgis, QgsApplication, QgsTask

from protocol.errors import DaemonError
from protocol.importing import ImportParams, missing_keys

from ..connection import describe_error
from ..settings import DaemonSettings, daemon_settings
from ..tasks import run_reporting, task_client
from .dialog import MetadataDialog


class ImportTask(QgsTask):
    """Sends an ``import_model`` request (worker thread).

    Args:
        path: the ``.onnx`` file (on the engine's computer).
        values: values for the metadata the file lacks (``ImportValues`` fields).
        settings: how to reach/start the engine.
        on_done: called with this task on the UI thread when it finishes.
        timeout_s: per-request timeout of the client, seconds.

    After ``finished``: ``card`` (the new model's card, or None), ``missing`` (the
    metadata keys the engine asked for, or empty), ``error`` (a message, or None),
    ``daemon_process`` (an engine this task started, else None).
    """

    def __init__(self, path: str, values: Optional[Dict[str, Any]], settings: DaemonSettings,
                 on_done: Optional[Callable[["ImportTask"], None]] = None,
                 timeout_s: float = 10.0):
        super().__init__(f"Ortholens: add model {os.path.basename(path)}", QgsTask.CanCancel)
        self.path, self.values, self.settings = path, dict(values or {}), settings
        self.on_done, self.timeout_s = on_done, timeout_s
        self.card: Optional[Dict[str, Any]] = None
        self.missing: List[str] = []
        self.error: Optional[str] = None
        self.cancelled = False
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Send the request; never raises: the outcome is in the attributes."""
        def work() -> bool:
            params = ImportParams(self.path, self.values or None)
            with task_client(self) as client:
                self.card = client.import_model(params)
            return True
        return run_reporting(self, work, self._describe)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, DaemonError) and exc.field == "values":
            self.missing = missing_keys(exc.message)
        return describe_error(exc, "add the model")

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Call ``on_done`` (UI thread)."""
        if self.on_done is not None:
            self.on_done(self)


class ImportController:
    """Wires the dock's *Add model…* button.

    Args:
        plugin: the :class:`~..main.OrtholensPlugin` (its ``iface``, ``dock``,
            ``notify`` and ``refresh_status``).

    Attributes:
        task: the running :class:`ImportTask`, or None.
        ask_file: callable returning the chosen ``.onnx`` path ("" when cancelled);
            ``exec_dialog``: callable running a :class:`~.dialog.MetadataDialog`,
            True to go on. Tests replace both.
    """

    def __init__(self, plugin: Any):
        self.plugin = plugin
        self.task: Optional[ImportTask] = None
        self.ask_file: Callable[[], str] = self._file_dialog
        self.exec_dialog: Callable[[MetadataDialog], bool] = lambda d: bool(d.exec_())
        if plugin.dock is not None:
            plugin.dock.models.addModelRequested.connect(self.add_model)

    def _file_dialog(self) -> str:
        path, _ = QFileDialog.getOpenFileName(
            self.plugin.iface.mainWindow(), "Add a model (ONNX, Deepness format)", "",
            "ONNX models (*.onnx)")
        return path or ""

    def add_model(self) -> Optional[ImportTask]:
        """Ask for a file and import it; returns the started task (None: no file, or
        an import is running)."""
        if self.task is not None:
            self.plugin.notify("A model is being added: wait for it.", Qgis.Warning)
            return None
        path = self.ask_file()
        return self.start(path) if path else None

    def start(self, path: str, values: Optional[Dict[str, Any]] = None) -> ImportTask:
        """Start an :class:`ImportTask` of ``path`` with ``values``."""
        task = ImportTask(path, values, daemon_settings(), on_done=self._done)
        self.task = task
        self.plugin.notify(f"Adding the model {os.path.basename(path)}…", Qgis.Info)
        QgsApplication.taskManager().addTask(task)
        return task

    def _done(self, task: ImportTask) -> None:
        self.task = None
        if task.daemon_process is not None:
            self.plugin.daemon_process = task.daemon_process
        if task.card is not None:
            mid = str(task.card.get("id"))
            classes = ", ".join(str(c.get("name")) for c in task.card.get("classes") or [])
            self.plugin.notify(f"Added the model {mid} ({classes}, "
                               f"{task.card.get('gsd_m'):g} m/pixel).", Qgis.Success,
                               after_task=True)
            if self.plugin.dock is not None:  # listed and selected now, then as the
                models = self.plugin.dock.models  # engine lists it (refresh)
                if not any(c.get("id") == mid for c in models.cards):
                    models.set_models(models.cards + [task.card])
                models.prefer_model(mid)
            self.plugin.refresh_status()
            return
        if task.missing:
            dlg = MetadataDialog(task.missing, os.path.basename(task.path),
                                 self.plugin.iface.mainWindow())
            if self.exec_dialog(dlg):
                self.start(task.path, {**task.values, **dlg.values()})
            return
        if not task.cancelled:
            self.plugin.notify(task.error or "The model could not be added.", Qgis.Critical,
                               after_task=True)

    def unload(self) -> None:
        """Forget a running import (its result is no longer shown)."""
        if self.task is not None:
            self.task.on_done = None
            self.task = None


__all__ = ["ImportTask", "ImportController"]
