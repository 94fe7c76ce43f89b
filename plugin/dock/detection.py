"""The dock's detection section: Detect in extent and Batch jobs…, the running job's
progress bar and Cancel, the message line, the last result's file (Copy path, Open
folder) and Solar inventory….

The progress bar, Cancel and the message line serve every job the dock starts (a
detection, a retrain, a version switch).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from qgis.PyQt.QtCore import Qt, QTimer, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qgis.core import Qgis

#: Detect in extent's tooltip.
DETECT_TIP = "Detect in the visible part of the active raster layer"
#: The message line's colour of each message level.
LEVEL_COLORS = {Qgis.Info: "#1f4e79", Qgis.Success: "#2e7d32",
                Qgis.Warning: "#9a6700", Qgis.Critical: "#b71c1c"}


class DetectionSection(QWidget):
    """Detect in extent, progress and Cancel, the message line, the result file, Solar
    inventory….

    Attributes:
        result_path: the last result's GeoPackage (absolute path), or None.
        ticker: the timer (1 s) that says a running job's message again, with its
            elapsed time and time left, while :meth:`show_progress`'s message shows.

    Signals:
        detectRequested(): Detect in extent was pressed.
        cancelRequested(): Cancel was pressed.
        inventoryRequested(): Solar inventory… was pressed.
        jobsRequested(): Batch jobs… was pressed.
    """

    detectRequested = pyqtSignal()
    cancelRequested = pyqtSignal()
    inventoryRequested = pyqtSignal()
    jobsRequested = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.detect_button = QPushButton("Detect in extent", self)
        self.detect_button.setObjectName("ortholensDetectButton")
        self.detect_button.setToolTip(DETECT_TIP)
        self._busy, self._engine_why = False, None
        self.detect_button.clicked.connect(self.detectRequested)
        self.jobs_button = QPushButton("Batch jobs…", self)
        self.jobs_button.setObjectName("ortholensJobsButton")
        self.jobs_button.setToolTip("The engine's batch jobs (Processing › Ortholens › "
                                    "Detect objects): progress, Resume, Cancel, Open result")
        self.jobs_button.clicked.connect(self.jobsRequested)
        top = QHBoxLayout()
        top.addWidget(self.detect_button, 1)
        top.addWidget(self.jobs_button)
        outer.addLayout(top)
        self._add_progress_row(outer)
        self._plain = ""
        self._running: Optional[Tuple[str, Any]] = None  # (message, its TimeLeft)
        self.ticker = QTimer(self)
        self.ticker.setInterval(1000)
        self.ticker.timeout.connect(self._tick)
        self.message_label = QLabel("", self)
        self.message_label.setObjectName("ortholensMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # Long, unbreakable text (file paths) must not widen the dock over the map.
        self.message_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Minimum)
        self.message_label.setMinimumWidth(120)
        outer.addWidget(self.message_label)
        self._add_result_row(outer)
        self.inventory_button = QPushButton("Solar inventory…", self)
        self.inventory_button.setObjectName("ortholensInventoryButton")
        self.inventory_button.setToolTip(
            "Totals of the current result layer for a survey: panel area, installations, "
            "azimuths, modules and kWp, per building and zone, as a report "
            "(Processing: ortholens:solarinventory)")
        self.inventory_button.clicked.connect(self.inventoryRequested)
        outer.addWidget(self.inventory_button)

    def _add_progress_row(self, outer: QVBoxLayout) -> None:
        """The progress bar (percent) and Cancel (enabled while a job runs)."""
        row = QHBoxLayout()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        outer.addLayout(row)

    def _add_result_row(self, outer: QVBoxLayout) -> None:
        """The last result's file: its name (full path as tooltip), Copy path, Open
        folder; hidden until a result exists."""
        self.result_box = QWidget(self)
        self.result_box.setObjectName("ortholensResultBox")
        lay = QHBoxLayout(self.result_box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.result_label = QLabel("", self.result_box)
        self.result_label.setObjectName("ortholensResultPath")
        self.result_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.result_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Minimum)
        self.copy_path_button = QToolButton(self.result_box)
        self.copy_path_button.setObjectName("ortholensCopyPath")
        self.copy_path_button.setText("Copy path")
        self.copy_path_button.setToolTip("Copy the result GeoPackage's full path")
        self.copy_path_button.clicked.connect(self.copy_result_path)
        self.open_folder_button = QToolButton(self.result_box)
        self.open_folder_button.setObjectName("ortholensOpenFolder")
        self.open_folder_button.setText("Open folder")
        self.open_folder_button.setToolTip("Show the results folder in the file manager")
        self.open_folder_button.clicked.connect(self._open_folder)
        lay.addWidget(self.result_label, 1)
        lay.addWidget(self.copy_path_button)
        lay.addWidget(self.open_folder_button)
        self.result_box.setVisible(False)
        self.result_path: Optional[str] = None
        outer.addWidget(self.result_box)

    def show_result(self, path: str) -> None:
        """Show the result file ``path`` (absolute) in the result row."""
        self.result_path = path
        self.result_label.setText(f"Saved: {Path(path).name}")
        self.result_label.setToolTip(path)
        self.result_box.setVisible(True)

    def copy_result_path(self) -> None:
        """Put the last result's full path on the clipboard."""
        if self.result_path:
            QApplication.clipboard().setText(self.result_path)

    def _open_folder(self) -> None:
        if self.result_path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.result_path).parent)))

    def set_busy(self, busy: bool) -> None:
        """Enable Cancel and disable Detect while a job runs (and the reverse); the bar
        starts at 0."""
        self._busy = bool(busy)
        self._update_detect()
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setValue(0)
        else:
            self._running = None

    def set_engine(self, why: Optional[str]) -> None:
        """Disable Detect while no engine can run: ``why`` (its tooltip) says so; None
        enables it again."""
        self._engine_why = why
        self._update_detect()

    def _update_detect(self) -> None:
        self.detect_button.setEnabled(not self._busy and self._engine_why is None)
        self.detect_button.setToolTip(self._engine_why or DETECT_TIP)

    def set_progress(self, value: float) -> None:
        """Set the progress bar, percent."""
        self.progress.setValue(int(round(value)))

    def show_message(self, text: str, level: int = Qgis.Info,
                     warnings: Sequence[str] = ()) -> None:
        """Show ``text`` under the buttons, coloured by message level, and each of
        ``warnings`` on a line of its own, ``"Warning: …"``, in the warning colour
        (a result with a warning is still a result: green, its warnings amber); a
        running job's progress (:meth:`show_progress`) is no longer said."""
        self._running = None
        self._set_message(text, level, warnings)

    def _set_message(self, text: str, level: int, warnings: Sequence[str]) -> None:
        self._plain = "\n".join([text] + [f"Warning: {w}" for w in warnings])
        color = LEVEL_COLORS.get(level, "#000000")
        if warnings:
            amber = LEVEL_COLORS[Qgis.Warning]
            lines = [f"<span style='color:{color}'>{html.escape(text)}</span>"] + [
                f"<span style='color:{amber}'>Warning: {html.escape(w)}</span>"
                for w in warnings]
            self.message_label.setStyleSheet("")
            self.message_label.setTextFormat(Qt.RichText)
            self.message_label.setText("<br>".join(lines))
        else:
            self.message_label.setStyleSheet(f"color: {color};")
            self.message_label.setTextFormat(Qt.PlainText)
            self.message_label.setText(text)
        self.message_label.setToolTip(self._plain)

    def show_progress(self, text: str, time_left: Any) -> None:
        """Show a running job's progress message with its elapsed time and time left
        (``time_left``, a :class:`~..timeleft.TimeLeft`), said again every second
        until another message is shown or the job ends."""
        self._running = (text, time_left)
        self._tick()
        self.ticker.start()

    def _tick(self) -> None:
        if self._running is None:
            self.ticker.stop()
            return
        text, time_left = self._running
        self._set_message(time_left.decorate(text), Qgis.Info, ())

    def message(self) -> str:
        """The message shown under the buttons, as plain text (warnings on lines of
        their own)."""
        return self._plain


__all__ = ["DETECT_TIP", "LEVEL_COLORS", "DetectionSection"]
