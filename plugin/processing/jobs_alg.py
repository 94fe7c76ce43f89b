"""*List / resume batch jobs* (``ortholens:batchjobs``): the daemon's batch jobs, running
and resumable; resume or cancel one."""

from __future__ import annotations

import datetime as _dt
import json
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

from .common import daemon_session, progress_to, with_help

#: The ACTION choices, in order.
ACTIONS = ["list", "resume", "cancel"]


def job_line(j: Dict[str, Any]) -> str:
    """One line of the job table."""
    when = _dt.datetime.fromtimestamp(float(j.get("updated") or 0)).strftime("%Y-%m-%d %H:%M")
    flag = " (resumable)" if j.get("resumable") else ""
    return (f"{j.get('job_id')}  {j.get('state')}{flag}  {j.get('regions_done')}/"
            f"{j.get('regions_total')} regions  {j.get('polygons')} polygons  {when}  "
            f"{j.get('source')} -> {j.get('out_path')}")


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

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(
            self.ACTION, "Action", options=["List jobs", "Resume a job", "Cancel a job"],
            defaultValue=0))
        self.addParameter(with_help(QgsProcessingParameterString(
            self.JOB_ID, "Job id", optional=True),
            "The job to resume or cancel. Resume default: the newest resumable job."))
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
            for j in jobs:
                feedback.pushInfo(job_line(j))
            if not jobs:
                feedback.pushInfo("No batch jobs.")
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
            except JobCancelled:
                feedback.reportError("Cancelled; the job stays resumable.")
                return out
        stats = result.get("stats") or {}
        feedback.pushInfo(f"{stats.get('count')} polygons in {stats.get('out_path')}")
        out.update({"OUT_PATH": stats.get("out_path", ""),
                    "COUNT": int(stats.get("count") or 0)})
        return out
