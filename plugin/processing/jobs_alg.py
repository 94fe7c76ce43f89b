"""*List / resume batch jobs* (``ortholens:batchjobs``): the daemon's batch jobs, running
and resumable; resume or cancel one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterString,
)

from protocol.errors import JobCancelled

from ..jobs.results import job_card
from ..jobs.rows import job_row
from .common import cancelled_text, daemon_session, progress_to, with_help
from .outputs import ResultStyler, load_when_done

#: The ACTION choices, in order.
ACTIONS = ["list", "resume", "cancel"]


def job_line(j: Dict[str, Any]) -> str:
    """One line of the log's job table: the job, its state, progress, area, model and
    output, in the job table's words (:func:`~..jobs.rows.job_row`)."""
    row = job_row(j)
    flag = ", resumable" if j.get("resumable") else ""
    return (f"{j.get('job_id')}  {row.state}{flag}  {row.progress}  "
            f"{row.area or '?'}  {row.model}  {j.get('source')} → {j.get('out_path')}")


class BatchJobsAlgorithm(QgsProcessingAlgorithm):
    """List the daemon's batch jobs, resume an interrupted one, or cancel a running one."""

    ACTION, JOB_ID = "ACTION", "JOB_ID"

    def name(self) -> str:
        return "batchjobs"

    def displayName(self) -> str:  # noqa: N802
        return "List / resume batch jobs"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Lists the daemon's batch jobs (running, interrupted, cancelled, failed, "
                "done) with their progress and output GeoPackage; resumes a job where it "
                "stopped (default: the newest resumable one) and waits for it; or cancels "
                "a running job (it stays resumable). A resumed job writes no polygon twice "
                "and loses none.")

    def createInstance(self):  # noqa: N802
        return BatchJobsAlgorithm()

    def createCustomParametersWidget(self, parent=None):  # noqa: N802 - QGIS API
        """QGIS's dialog, saying a cancel and a failure right (:mod:`.dialog`)."""
        from .dialog import algorithm_dialog
        return algorithm_dialog(self, parent)

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(
            self.ACTION, "Action", options=["List jobs", "Resume a job", "Cancel a job"],
            defaultValue=0))
        job = with_help(QgsProcessingParameterString(self.JOB_ID, "Job", optional=True),
                        "The job to resume or cancel, picked from the engine's jobs (a "
                        "script passes its id). Resume default: the newest resumable job.")
        job.setMetadata({"widget_wrapper": {
            "class": f"{__package__}.job_widget.JobWidgetWrapper"}})
        self.addParameter(job)
        self.addOutput(QgsProcessingOutputString("JOBS", "Jobs (JSON)"))
        self.addOutput(QgsProcessingOutputString("OUT_PATH", "Output GeoPackage"))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Polygons"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """List the jobs (JOBS); then resume one (OUT_PATH, COUNT) or cancel one.

        Raises:
            QgsProcessingException: no daemon, no job to resume or cancel, or a daemon
                error.
        """
        action = ACTIONS[self.parameterAsEnum(parameters, self.ACTION, context)]
        job_id = (self.parameterAsString(parameters, self.JOB_ID, context) or "").strip()
        with daemon_session(feedback) as client:
            jobs = client.jobs()
            feedback.pushInfo(f"{len(jobs)} batch job(s), newest first:" if jobs
                              else "No batch jobs.")
            for j in jobs:
                feedback.pushInfo(job_line(j))
            out: Dict[str, Any] = {"JOBS": json.dumps(jobs), "OUT_PATH": "", "COUNT": 0}
            if action == "list":
                return out
            if action == "cancel":
                if not job_id:
                    raise QgsProcessingException("Give the id of the job to cancel.")
                client.cancel(job_id)
                feedback.pushInfo(f"Cancel requested for {job_id}.")
                return out
            if not job_id:
                resumable = [j for j in jobs if j.get("resumable")]
                if not resumable:
                    raise QgsProcessingException("No resumable batch job.")
                job_id = resumable[0]["job_id"]
            feedback.pushInfo(f"Resuming {job_id}…")
            try:
                result = client.resume(job_id, progress_to(feedback), feedback.isCanceled)
            except JobCancelled as exc:
                feedback.pushWarning(cancelled_text(exc))
                return out
            cards = client.models()
        stats = result.get("stats") or {}
        feedback.pushInfo(f"{stats.get('count')} polygons in {stats.get('out_path')}")
        out.update({"OUT_PATH": stats.get("out_path", ""),
                    "COUNT": int(stats.get("count") or 0)})
        job = next((j for j in jobs if j.get("job_id") == job_id), {"job_id": job_id})
        self._load(context, dict(job, out_path=out["OUT_PATH"],
                                 layer=stats.get("layer") or job.get("layer")), cards)
        return out

    @staticmethod
    def _load(context, job: Dict[str, Any], cards) -> None:
        """Have Processing add a resumed job's GeoPackage to the project when it has
        finished, styled and named as the dock's results (not in ``qgis_process``,
        which has no map)."""
        project = context.project()
        if project is None or not job.get("out_path"):
            return
        card = job_card(job, cards)
        stats = {"threshold": job["threshold"]} if job.get("threshold") is not None else {}
        load_when_done(context, f"{job['out_path']}|layername={job.get('layer') or 'detections'}",
                       "OUT_PATH", ResultStyler(card, stats, Path(str(job.get("source"))).stem),
                       project)
