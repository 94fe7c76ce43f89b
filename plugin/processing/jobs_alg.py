"""*List / resume batch jobs*: the daemon's batch jobs, running and resumable."""

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

from .common import connect, describe

ACTIONS = ["list", "resume", "cancel"]


def job_line(j: Dict[str, Any]) -> str:
    """One line of the job table."""
    when = _dt.datetime.fromtimestamp(float(j.get("updated") or 0)).strftime("%Y-%m-%d %H:%M")
    flag = " (resumable)" if j.get("resumable") else ""
    return (f"{j.get('job_id')}  {j.get('state')}{flag}  {j.get('chunks_done')}/"
            f"{j.get('chunks_total')} chunks  {j.get('polygons')} polygons  {when}  "
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
        self.addParameter(QgsProcessingParameterString(
            self.JOB_ID, "Job id (resume: default the newest resumable job)", optional=True))
        self.addOutput(QgsProcessingOutputString("JOBS", "Jobs (JSON)"))
        self.addOutput(QgsProcessingOutputString("OUT_PATH", "Output GeoPackage"))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Polygons"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        from ..batch_client import cancel_job, list_jobs, resume_batch
        from ..client import JobCancelled

        action = ACTIONS[self.parameterAsEnum(parameters, self.ACTION, context)]
        job_id = (self.parameterAsString(parameters, self.JOB_ID, context) or "").strip()
        client = connect(feedback)
        try:
            jobs = list_jobs(client)
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
                cancel_job(client, job_id)
                feedback.pushInfo(f"Cancel requested for {job_id}.")
                return out
            if not job_id:
                resumable = [j for j in jobs if j.get("resumable")]
                if not resumable:
                    raise QgsProcessingException("No resumable batch job.")
                job_id = resumable[0]["job_id"]
            feedback.pushInfo(f"Resuming {job_id}…")

            def on_progress(fraction: float, message: str) -> None:
                feedback.setProgress(100.0 * fraction)
                if message:
                    feedback.setProgressText(message)

            try:
                result = resume_batch(client, job_id, on_progress, feedback.isCanceled)
            except JobCancelled:
                feedback.reportError("Cancelled; the job stays resumable.")
                return out
            stats = result.get("stats") or {}
            feedback.pushInfo(f"{stats.get('count')} polygons in {stats.get('out_path')}")
            out.update({"OUT_PATH": stats.get("out_path", ""),
                        "COUNT": int(stats.get("count") or 0)})
            return out
        except QgsProcessingException:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the user
            raise QgsProcessingException(describe(exc)) from None
        finally:
            client.close()
