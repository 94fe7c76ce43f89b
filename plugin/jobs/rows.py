"""A batch job as a row of the job table, and what can be done with it.

A job is an entry of the engine's ``jobs`` reply (``backend.daemon.batch_runner.
job_summary``: ``job_id``, ``state``, ``running``, ``resumable``, ``regions_done``,
``regions_total``, ``polygons``, ``out_path``, ``layer``, ``model``, ``threshold``,
``area_km2``, ``source``, ``updated``, ``message``). No widgets here.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

#: What the table says for each state of the ``jobs`` reply.
STATE_TEXT = {"queued": "waiting", "running": "running",
              "interrupted": "interrupted (the engine stopped)", "cancelled": "cancelled",
              "error": "failed", "done": "done"}
#: The table's columns, in order.
COLUMNS = ("Job", "State", "Progress", "Area", "Model", "Output")


@dataclass(frozen=True)
class JobRow:
    """The texts of one row (see :data:`COLUMNS`) and its tooltip."""

    job: str
    state: str
    progress: str
    area: str
    model: str
    output: str
    tooltip: str

    def cells(self):
        """The row's texts in column order."""
        return (self.job, self.state, self.progress, self.area, self.model, self.output)


def job_row(job: Dict[str, Any], left: Optional[str] = None) -> JobRow:
    """The row of ``job``.

    Args:
        job: an entry of the ``jobs`` reply.
        left: the elapsed time and time left of a running job
            (:meth:`~..timeleft.TimeLeft.text`), shown after its progress.
    """
    done, total = int(job.get("regions_done") or 0), int(job.get("regions_total") or 0)
    pct = f" ({100.0 * done / total:.0f} %)" if total else ""
    progress = f"{done}/{total} regions{pct}, {int(job.get('polygons') or 0)} polygons"
    if left and job.get("running"):
        progress += f"; {left}"
    area = job.get("area_km2")
    when = _dt.datetime.fromtimestamp(float(job.get("updated") or 0)).strftime("%Y-%m-%d %H:%M")
    out = str(job.get("out_path") or "")
    return JobRow(str(job.get("job_id", ""))[:8], STATE_TEXT.get(job.get("state"),
                                                                 str(job.get("state"))),
                  progress, f"{float(area):.3g} km²" if isinstance(area, (int, float))
                  else "", str(job.get("model") or ""), Path(out).name,
                  f"Job {job.get('job_id')}, last change {when}\n{job.get('source')} → "
                  f"{out}\n{job.get('message') or ''}".strip())


def why_not(job: Optional[Dict[str, Any]], action: str) -> Optional[str]:
    """Why ``action`` (``"resume"``, ``"cancel"`` or ``"open"``) cannot be done with
    ``job``, or None when it can.

    Resume: a job that is not done and not running (interrupted, cancelled, failed).
    Cancel: a job that is running or waiting in this engine. Open: a job whose
    GeoPackage is on this computer.
    """
    if job is None:
        return "Choose a job in the table first."
    if action == "resume":
        if job.get("running"):
            return "The job is running."
        return None if job.get("resumable") else "The job is done: nothing is left to do."
    if action == "cancel":
        return None if job.get("running") else "The job is not running."
    if action == "open":
        path = str(job.get("out_path") or "")
        if not os.path.isfile(path):
            return (f"Its GeoPackage {path} is not on this computer (yet): an engine on "
                    f"another computer writes it there.")
        return None
    raise ValueError(action)


__all__ = ["STATE_TEXT", "COLUMNS", "JobRow", "job_row", "why_not"]
