"""The dock's *Batch jobs…* button, which opens the job table (one window, shown again
when it is already open), and *Run as a batch job…* offered when a detection's extent
is too large for Detect in extent."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..settings import daemon_settings
from .dialog import BatchJobsDialog


class JobsController:
    """Opens the job table from the dock.

    Args:
        plugin: the plugin object (``iface``, ``dock``, ``notify``).

    Attributes:
        dialog: the job table once opened, else None; ``batch``: the last *Detect
            objects* dialog opened from a refused detection, else None.
    """

    def __init__(self, plugin: Any):
        self.plugin = plugin
        self.dialog: Optional[BatchJobsDialog] = None
        self.batch = None
        if plugin.dock is not None:
            plugin.dock.detection.jobsRequested.connect(self.open)

    def open(self, job_id: Optional[str] = None) -> BatchJobsDialog:
        """Show the job table (non-modal), with ``job_id`` picked once listed."""
        if self.dialog is None:
            self.dialog = BatchJobsDialog(
                daemon_settings, self.plugin.iface.mainWindow(),
                notify=lambda text, level: self.plugin.notify(text, level))
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def offer_batch(self, task: Any) -> bool:
        """When a detection was refused for its size, say so with a *Run as a batch
        job…* button that opens *Detect objects* on the same layer and extent; False
        for any other outcome (nothing said)."""
        from qgis.PyQt.QtCore import QTimer
        from qgis.PyQt.QtWidgets import QPushButton
        from qgis.core import Qgis, QgsMessageLog

        from ..tasks import LOG_TAG
        error = str(getattr(task, "error", "") or "")
        if "as a batch job" not in error or getattr(task, "plan", None) is None:
            return False
        plan = task.plan
        if self.plugin.dock is not None:
            self.plugin.dock.detection.show_message(error, Qgis.Warning)
        QgsMessageLog.logMessage(error, LOG_TAG, Qgis.Warning)

        def push() -> None:  # after QGIS's own "Task complete" notice, on top of it
            bar = self.plugin.iface.messageBar()
            item = bar.createMessage("Ortholens", error)
            button = QPushButton("Run as a batch job…", item)
            button.setObjectName("ortholensRunAsBatch")
            button.clicked.connect(lambda: self.batch_dialog(plan))
            item.layout().addWidget(button)
            bar.pushWidget(item, Qgis.Warning, 0)
        QTimer.singleShot(0, push)
        return True

    def batch_dialog(self, plan: Any):
        """Open *Detect objects* with the layer and extent of a detection ``plan``
        (non-modal; returns the dialog)."""
        import processing
        params: Dict[str, Any] = {"INPUT": plan.layer_id}
        if plan.extent is not None:
            x0, y0, x1, y1 = plan.extent
            authid = self.plugin.iface.mapCanvas().mapSettings().destinationCrs().authid()
            params["EXTENT"] = f"{x0},{x1},{y0},{y1}" + (f" [{authid}]" if authid else "")
        dlg = processing.createAlgorithmDialog("ortholens:detect", params)
        dlg.show()
        self.batch = dlg
        return dlg

    def unload(self) -> None:
        """Close the job table; a resume still running is cancelled (it stays
        resumable)."""
        if self.dialog is None:
            return
        task = self.dialog.resume_task
        if task is not None:
            task.on_done = None
            task.cancel()
        self.dialog.timer.stop()
        self.dialog.close()
        self.dialog.deleteLater()
        self.dialog = None


__all__ = ["JobsController"]
