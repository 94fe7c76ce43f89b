"""The JOB_ID parameter's widget in the *List / resume batch jobs* dialog: a pick list
of the engine's batch jobs, asked for when the dialog opens (never waited for long).

Each entry reads ``"a1b2c3d4 · cancelled · 12/169 regions · mosaic.vrt → out.gpkg"``;
the first, "(the newest resumable job)", leaves the parameter empty. An id typed
elsewhere (batch mode, ``qgis_process``, scripts) is kept as an entry of its own. Like
:mod:`.model_widget`, it imports QGIS's ``processing`` plugin: only a dialog loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QToolButton, QWidget

from processing.gui.wrappers import WidgetWrapper

from .common import MODELS_TIMEOUT_S, ask_running_engine

#: The entry that leaves JOB_ID empty.
NEWEST_ENTRY = "(the newest resumable job)"


def engine_jobs(timeout_s: float = MODELS_TIMEOUT_S) -> List[Dict[str, Any]]:
    """The engine's batch jobs (newest first), or none when it does not answer within
    ``timeout_s`` (:func:`.common.ask_running_engine`); never raises."""
    try:
        jobs = ask_running_engine(lambda c: c.jobs(), timeout_s)
    except Exception:  # noqa: BLE001 - no engine: an empty list, ids can be typed
        return []
    return [j for j in jobs if isinstance(j, dict) and j.get("job_id")]


def job_text(job: Dict[str, Any]) -> str:
    """One pick-list entry of a job."""
    return (f"{str(job['job_id'])[:8]} · {job.get('state')} · {job.get('regions_done')}/"
            f"{job.get('regions_total')} regions · {Path(str(job.get('source'))).name} → "
            f"{Path(str(job.get('out_path'))).name}")


class JobWidgetWrapper(WidgetWrapper):
    """A pick list of the engine's batch jobs for the string JOB_ID parameter; its value
    is the picked job's id, or None for :data:`NEWEST_ENTRY`."""

    def createWidget(self, **kwargs) -> QWidget:  # noqa: N802 - QGIS API
        """The pick list and a refresh button."""
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(40)
        button = QToolButton()
        button.setIcon(QgsApplication.getThemeIcon("/mActionRefresh.svg"))
        button.setToolTip("Ask the engine for its batch jobs again")
        button.clicked.connect(self.refresh_jobs)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(button)
        box = QWidget()
        box.setLayout(row)
        self.refresh_jobs()
        return box

    def refresh_jobs(self) -> None:
        """Fill the pick list from the engine's jobs, keeping the picked id."""
        keep = self.value() if self.combo.count() else None
        jobs = engine_jobs()
        self.combo.clear()
        self.combo.addItem(NEWEST_ENTRY, None)
        for job in jobs:
            self.combo.addItem(job_text(job), str(job["job_id"]))
            self.combo.setItemData(self.combo.count() - 1, str(job.get("message") or ""), 3)
        self.combo.setToolTip("The engine's batch jobs, newest first" if jobs else
                              "No batch jobs listed (is the engine running?); an id can "
                              "still be given in a script")
        self.setValue(keep)

    def setValue(self, value: Optional[str]) -> None:  # noqa: N802 - QGIS API
        """Pick the job ``value`` (an id); None or ``""`` picks :data:`NEWEST_ENTRY`; an
        id not listed is added and picked."""
        if value in (None, ""):
            self.combo.setCurrentIndex(0)
            return
        index = self.combo.findData(str(value))
        if index < 0:
            self.combo.addItem(str(value), str(value))
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)

    def value(self) -> Optional[str]:
        """The picked job's id, or None for the newest resumable job."""
        data = self.combo.currentData()
        return str(data) if data else None


__all__ = ["NEWEST_ENTRY", "engine_jobs", "job_text", "JobWidgetWrapper"]
