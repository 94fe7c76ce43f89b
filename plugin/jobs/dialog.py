"""The job table: the engine's batch jobs with their state, progress, area, model and
output, and **Resume**, **Cancel job** and **Open result** for the job picked in it.

A button that cannot act on the picked job is disabled and the line under the table
says why. The table is asked for again every few seconds while the window is open; a
running job's progress shows its elapsed time and time left, measured from one answer
to the next. A resumed job's result, and any job's output on **Open result**, comes
into the map as the dock's results do.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)
from qgis.core import QgsApplication

from ..settings import DaemonSettings
from ..timeleft import TimeLeft
from .results import open_batch_result
from .rows import COLUMNS, job_row, why_not
from .tasks import JobsTask, ResumeTask

#: Milliseconds between two listings while the window is open.
REFRESH_MS = 3000


class BatchJobsDialog(QDialog):
    """The job table (non-modal).

    Args:
        settings: returns how to reach the engine (read at each request).
        parent: the parent widget.
        notify: called with ``(text, level)`` for what the message bar should say
            (a resumed job done, a failure); default: nothing.

    Attributes:
        jobs: the jobs listed (the ``jobs`` reply, newest first); ``cards``: the
            engine's models; ``list_task``, ``resume_task``: the running tasks or None.
    """

    def __init__(self, settings: Callable[[], DaemonSettings], parent=None,
                 notify: Optional[Callable[[str, int], None]] = None):
        super().__init__(parent)
        self.setObjectName("OrtholensBatchJobs")
        self.setWindowTitle("Ortholens: batch jobs")
        self.settings = settings
        self.notify = notify or (lambda text, level: None)
        self.jobs: List[Dict[str, Any]] = []
        self.cards: List[Dict[str, Any]] = []
        self.list_task: Optional[JobsTask] = None
        self.resume_task: Optional[ResumeTask] = None
        self._clocks: Dict[str, TimeLeft] = {}
        lay = QVBoxLayout(self)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("ortholensJobsTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Output"), QHeaderView.Stretch)
        self.table.setTextElideMode(Qt.ElideMiddle)  # a long file name, not the progress
        self.table.itemSelectionChanged.connect(self._update_buttons)
        lay.addWidget(self.table, 1)
        self.hint = QLabel("", self)
        self.hint.setObjectName("ortholensJobsHint")
        self.hint.setWordWrap(True)
        lay.addWidget(self.hint)
        self.status = QLabel("", self)
        self.status.setObjectName("ortholensJobsStatus")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self._add_buttons(lay)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.resize(1000, 360)

    def _add_buttons(self, lay: QVBoxLayout) -> None:
        row = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh", self)
        self.refresh_button.clicked.connect(self.refresh)
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setObjectName("ortholensJobsResume")
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button = QPushButton("Cancel job", self)
        self.cancel_button.setObjectName("ortholensJobsCancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        self.open_button = QPushButton("Open result", self)
        self.open_button.setObjectName("ortholensJobsOpen")
        self.open_button.clicked.connect(self.open_result)
        for b in (self.refresh_button, self.resume_button, self.cancel_button,
                  self.open_button):
            row.addWidget(b)
        row.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.Close, self)
        close.rejected.connect(self.close)
        row.addWidget(close)
        lay.addLayout(row)

    # listing ---------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """List the jobs now and every :data:`REFRESH_MS` while shown."""
        super().showEvent(event)
        self.refresh()
        self.timer.start()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Stop listing (a resumed job goes on, and its result still comes)."""
        self.timer.stop()
        super().closeEvent(event)

    def refresh(self, cancel: Optional[str] = None) -> Optional[JobsTask]:
        """Ask for the jobs (after cancelling ``cancel``), unless a listing runs."""
        if self.list_task is not None:
            return None
        self.list_task = JobsTask(self.settings(), self._listed, cancel=cancel)
        QgsApplication.taskManager().addTask(self.list_task)
        return self.list_task

    def _listed(self, task: JobsTask) -> None:
        self.list_task = None
        if task.error:
            self.status.setText(task.error)
            return
        self.cards = task.cards or self.cards
        self.show_jobs(task.jobs)
        self.setWindowTitle(f"Ortholens: batch jobs ({len(task.jobs)}, engine at "
                            f"{task.settings.endpoint})")
        if task.cancel_id:
            self.status.setText(f"Cancel asked for job {task.cancel_id[:8]}: it stops after "
                                f"its current batch of tiles and stays resumable.")

    def show_jobs(self, jobs: List[Dict[str, Any]]) -> None:
        """Fill the table with ``jobs``, keeping the picked job picked."""
        picked = (self.current_job() or {}).get("job_id")
        self.jobs = list(jobs)
        self.table.setRowCount(len(self.jobs))
        for r, job in enumerate(self.jobs):
            row = job_row(job, self._left(job))
            for c, text in enumerate(row.cells()):
                item = QTableWidgetItem(text)
                item.setToolTip(row.tooltip)
                item.setData(Qt.UserRole, job.get("job_id"))
                self.table.setItem(r, c, item)
            if job.get("job_id") == picked:
                self.table.selectRow(r)
        if self.current_job() is None and self.jobs:
            self.table.selectRow(0)
        self._update_buttons()

    def _left(self, job: Dict[str, Any]) -> Optional[str]:
        """The elapsed time and time left of a running job, from its fractions seen."""
        if not job.get("running"):
            self._clocks.pop(str(job.get("job_id")), None)
            return None
        clock = self._clocks.setdefault(str(job.get("job_id")), TimeLeft())
        clock.update(float(job.get("fraction") or 0.0))
        return clock.text()

    def current_job(self) -> Optional[Dict[str, Any]]:
        """The job picked in the table, or None."""
        rows = self.table.selectionModel().selectedRows()
        return self.jobs[rows[0].row()] if rows and rows[0].row() < len(self.jobs) else None

    def select_job(self, job_id: str) -> bool:
        """Pick the job ``job_id`` in the table; False when it is not listed."""
        for r, job in enumerate(self.jobs):
            if job.get("job_id") == job_id:
                self.table.selectRow(r)
                return True
        return False

    def _update_buttons(self) -> None:
        """Enable each action that can act on the picked job; say why the others
        cannot."""
        job = self.current_job()
        why = {}
        for action, button in (("resume", self.resume_button),
                               ("cancel", self.cancel_button), ("open", self.open_button)):
            reason = why_not(job, action)
            if action == "resume" and self.resume_task is not None:
                reason = "A job is being resumed from this window: wait for it."
            button.setEnabled(reason is None)
            button.setToolTip(reason or "")
            if reason:
                why[button.text()] = reason
        self.hint.setText("; ".join(f"{name}: {text[0].lower()}{text[1:].rstrip('.')}"
                                    for name, text in why.items()) + ("." if why else ""))

    # actions ----------------------------------------------------------------------------
    def resume(self) -> Optional[ResumeTask]:
        """Resume the picked job; its result comes into the map when it is done."""
        job = self.current_job()
        if why_not(job, "resume") or self.resume_task is not None:
            return None
        task = ResumeTask(job, self.cards, self.settings(), on_done=self._resumed)
        task.message.connect(lambda text: self.status.setText(
            f"Job {str(job['job_id'])[:8]}: {task.time_left.decorate(text)}"))
        self.resume_task = task
        self.status.setText(f"Resuming job {str(job['job_id'])[:8]}…")
        QgsApplication.taskManager().addTask(task)
        self._update_buttons()
        return task

    def _resumed(self, task: ResumeTask) -> None:
        from qgis.core import Qgis
        self.resume_task = None
        job = str(task.job.get("job_id"))[:8]
        if task.layer is not None:
            text = f"Job {job} is done: '{task.layer.name()}' was added to the map."
            self.notify(text, Qgis.Success)
        elif task.cancelled:
            text = f"Job {job} was cancelled; it stays resumable."
        else:
            text = f"Job {job}: {task.error}"
            self.notify(text, Qgis.Critical)
        self.status.setText(text)
        self.refresh()

    def cancel_job(self) -> Optional[JobsTask]:
        """Cancel the picked job (it stays resumable)."""
        job = self.current_job()
        if why_not(job, "cancel"):
            return None
        if self.resume_task is not None and \
                self.resume_task.job.get("job_id") == job.get("job_id"):
            self.resume_task.cancel()
        return self.refresh(cancel=str(job["job_id"]))

    def open_result(self):
        """Add the picked job's GeoPackage to the map, styled and named as a result;
        returns the layer (None when it cannot)."""
        from qgis.core import Qgis
        job = self.current_job()
        if why_not(job, "open"):
            return None
        try:
            layer = open_batch_result(job, self.cards)
        except Exception as exc:  # noqa: BLE001 - said in the window
            self.status.setText(f"Cannot open {job.get('out_path')}: {exc}")
            self.notify(self.status.text(), Qgis.Warning)
            return None
        self.status.setText(f"'{layer.name()}' was added to the map.")
        return layer


__all__ = ["REFRESH_MS", "BatchJobsDialog"]
