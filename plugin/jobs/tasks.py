"""The job table's requests, off the UI thread: :class:`JobsTask` lists the engine's
batch jobs and models (and first cancels one, when asked); :class:`ResumeTask` resumes
a job, follows it with its elapsed time and time left, and adds its result to the map
when it is done."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import QgsTask

from ..connection import describe_error
from ..settings import DaemonSettings
from ..tasks import progress_callback, run_reporting, task_client
from ..timeleft import TimeLeft
from .results import open_batch_result


class JobsTask(QgsTask):
    """Lists the engine's batch jobs and models; with ``cancel``, cancels that job
    first (worker thread).

    Args:
        settings: how to reach (and start) the engine.
        on_done: called with this task on the UI thread when it finishes.
        cancel: the id of a job to cancel first, or None.
        timeout_s: per-request timeout, seconds.

    After ``finished``: ``jobs`` (the ``jobs`` reply, newest first), ``cards`` (the
    ``models`` reply), ``error`` (a message or None), ``daemon_process``.
    """

    def __init__(self, settings: DaemonSettings,
                 on_done: Optional[Callable[["JobsTask"], None]] = None,
                 cancel: Optional[str] = None, timeout_s: float = 5.0):
        super().__init__("Ortholens: batch jobs", QgsTask.CanCancel)
        self.settings, self.on_done, self.cancel_id = settings, on_done, cancel
        self.timeout_s = timeout_s
        self.jobs: List[Dict[str, Any]] = []
        self.cards: List[Dict[str, Any]] = []
        self.error: Optional[str] = None
        self.cancelled = False
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Cancel (when asked), then list; never raises."""
        def work() -> bool:
            with task_client(self) as client:
                if self.cancel_id:
                    client.cancel(self.cancel_id)
                self.jobs = list(client.jobs())
                self.cards = list(client.models())
            return True
        return run_reporting(self, work, lambda exc: describe_error(exc, "list its jobs"))

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Call ``on_done`` (UI thread)."""
        if self.on_done is not None:
            self.on_done(self)


class ResumeTask(QgsTask):
    """Resumes a batch job and waits for it (worker thread); adds its result to the map,
    styled and named, when it is done (UI thread).

    Args:
        job: the job (an entry of the ``jobs`` reply).
        cards: the engine's model cards (for the result's colours and name).
        settings: how to reach (and start) the engine.
        on_done: called with this task on the UI thread when it finishes.
        job_timeout_s: give up after this many seconds without news of the job.

    While it runs, :attr:`message` carries its progress and :attr:`time_left` measures
    it. After ``finished``: ``result`` (the job's ``result``), ``layer`` (the result
    layer added, or None), ``error``, ``cancelled`` (the user cancelled: the job stays
    resumable), ``daemon_process``.
    """

    #: A progress message (worker thread -> UI thread).
    message = pyqtSignal(str)

    def __init__(self, job: Dict[str, Any], cards: List[Dict[str, Any]],
                 settings: DaemonSettings,
                 on_done: Optional[Callable[["ResumeTask"], None]] = None,
                 job_timeout_s: float = 3600.0, timeout_s: float = 5.0):
        super().__init__(f"Ortholens: resume batch job {str(job.get('job_id'))[:8]}",
                         QgsTask.CanCancel)
        self.job, self.cards, self.settings = dict(job), list(cards), settings
        self.on_done, self.job_timeout_s, self.timeout_s = on_done, job_timeout_s, timeout_s
        self.time_left = TimeLeft()
        self.result: Optional[Dict[str, Any]] = None
        self.layer = None
        self.error: Optional[str] = None
        self.cancelled = False
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Resume the job and follow it to its end; never raises."""
        def work() -> bool:
            with task_client(self) as client:
                self.result = client.resume(
                    str(self.job["job_id"]),
                    progress_callback(self, 0, 100, self._emit, self.time_left),
                    self.isCanceled, self.job_timeout_s)
            return True
        return run_reporting(self, work, lambda exc: describe_error(exc, "resume the job"))

    def _emit(self, text: Any) -> None:
        if text:
            self.message.emit(str(text))

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Add the result layer (UI thread), then call ``on_done``."""
        if self.isCanceled():
            self.cancelled = True
        if ok and self.result is not None and not self.cancelled:
            stats = self.result.get("stats") or {}
            job = dict(self.job, out_path=stats.get("out_path", self.job.get("out_path")),
                       layer=stats.get("layer", self.job.get("layer")))
            try:
                self.layer = open_batch_result(job, self.cards)
            except Exception as exc:  # noqa: BLE001 - reported to the user
                self.error = describe_error(exc)
        elif not self.cancelled and not self.error:
            self.error = "The job stopped without a result (see the Ortholens log)."
        if self.on_done is not None:
            self.on_done(self)


__all__ = ["JobsTask", "ResumeTask"]
