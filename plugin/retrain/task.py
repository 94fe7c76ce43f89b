"""The retrain and versions ``QgsTask`` s (worker thread): :class:`RetrainTask` runs a
``retrain`` job, :class:`VersionsTask` lists, activates or rolls back versions."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import QgsTask

from protocol.errors import OrtholensError

from ..cards import pick_card
from ..connection import describe_error
from ..detect.render import pixel_source, render_pixels
from ..settings import DaemonSettings
from ..tasks import progress_callback, run_reporting, task_client
from ..timeleft import TimeLeft
from .plan import RetrainPlan


class RetrainTask(QgsTask):
    """Runs a ``retrain`` job off the UI thread.

    Args:
        plan: from :func:`~.plan.prepare_retrain`.
        settings: how to reach/start the daemon.
        budget_s: time of the whole retrain (preparing, training, checking, saving),
            seconds.
        options: further :class:`~protocol.params.RetrainParams` fields
            (``invalid_geometry``, ``activate``...).
        on_done: called with this task on the UI thread when it finishes.
        timeout_s: per-request timeout of the daemon client, seconds.
        job_timeout_s: give up after this many seconds without news of the job.

    While it runs, :attr:`message` carries what it is doing: connecting, rendering,
    then the daemon's phase and time left ("training: step 3/40, loss 0.41 — about
    50 s left").

    After ``finished``: ``report`` (the daemon's retrain report or None), ``error``
    (message or None), ``cancelled``, ``last_message`` (the last progress message),
    ``daemon_process`` (a daemon this task started, else None); then ``on_done(self)``
    on the UI thread.
    """

    #: A progress message for the dock (worker thread -> UI thread).
    message = pyqtSignal(str)

    def __init__(self, plan: RetrainPlan, settings: DaemonSettings, budget_s: float,
                 options: Optional[Dict[str, Any]] = None,
                 on_done: Optional[Callable[["RetrainTask"], None]] = None,
                 timeout_s: float = 5.0, job_timeout_s: float = 900.0):
        super().__init__(f"Ortholens: retrain {plan.model}", QgsTask.CanCancel)
        self.plan, self.settings, self.budget_s = plan, settings, float(budget_s)
        self.options = dict(options or {})
        self.on_done = on_done
        self.timeout_s, self.job_timeout_s = timeout_s, job_timeout_s
        self.report: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.cancelled = False
        self.last_message = ""
        self.daemon_process = None
        #: elapsed time (and time left, when the engine does not say it) in messages
        self.time_left = TimeLeft()

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Connect, retrain; never raises, errors go to ``self.error``."""
        self._keep_message("connecting to the daemon…")
        def work() -> bool:
            with task_client(self) as client:
                return self._run(client)
        return run_reporting(self, work, lambda exc: describe_error(exc, "retrain"))

    def _run(self, client) -> bool:
        self.setProgress(2)
        pixels, source = None, self.plan.source
        if self.plan.render is not None:
            self._keep_message("preparing data: rendering the layer…")
            card = pick_card(client.models(), self.plan.model)
            rendered = render_pixels(self.plan.render, float(card["gsd_m"]),
                                     is_cancelled=self.isCanceled)
            source, pixels = pixel_source(self.plan.render, rendered), rendered.array
        if self.isCanceled():
            raise InterruptedError
        self.setProgress(5)
        self._keep_message(f"preparing data: sending {len(self.plan.features)} polygons…")
        res = client.retrain(self.plan.params(source, self.budget_s, **self.options),
                             pixels=pixels, is_cancelled=self.isCanceled,
                             on_progress=progress_callback(self, 5, 94, self._keep_message,
                                                           self.time_left),
                             job_timeout_s=self.job_timeout_s)
        self.report = dict(res.get("retrain") or {})
        self.setProgress(100)
        return True

    def _keep_message(self, message: Any) -> None:
        if message:
            self.last_message = str(message)
            self.message.emit(self.last_message)

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Settle ``cancelled`` / ``error`` and call ``on_done`` (UI thread)."""
        if self.isCanceled():
            self.cancelled = True
        if not ok and not self.cancelled and not self.error:
            self.error = "The retrain stopped without a result (see the Ortholens log)."
        if self.on_done is not None:
            self.on_done(self)


class VersionsTask(QgsTask):
    """``versions`` / ``activate`` / ``rollback`` / ``keep`` / ``delete`` on the daemon
    (worker thread).

    Args:
        action: ``"versions"`` (``extra`` may give the map view's ``extent`` and
            ``extent_crs``: the reply then names the version in use there),
            ``"activate"``, ``"rollback"``, ``"keep"`` (keep a retrain candidate the
            rule did not accept: ``extra`` gives its ``pending`` and an optional
            ``note``) or ``"delete"`` (``extra`` may give ``roll_back``: the user
            confirmed deleting a version in use).
        model: the model id (``<base>`` or ``<base>@<n>``).
        settings: how to reach/start the daemon.
        on_done: called with this task on the UI thread when it finishes.
        timeout_s: per-request timeout, seconds.
        extra: further arguments of the client call.

    After ``finished``: ``result`` ({model, active, versions}; ``here`` for
    ``versions`` with an extent, ``kept`` for ``keep``, ``deleted`` and ``rolled_back``
    for ``delete``) or ``error``; ``daemon_process`` (a daemon this task started, else
    None).

    Raises:
        ValueError: an unknown ``action``.
    """

    def __init__(self, action: str, model: str, settings: DaemonSettings,
                 on_done: Optional[Callable[["VersionsTask"], None]] = None,
                 timeout_s: float = 10.0, extra: Optional[Dict[str, Any]] = None):
        super().__init__(f"Ortholens: {action} {model}", QgsTask.CanCancel)
        if action not in ("versions", "activate", "rollback", "keep", "delete"):
            raise ValueError(action)
        self.action, self.model, self.settings = action, model, settings
        self.extra = dict(extra or {})
        self.on_done, self.timeout_s = on_done, timeout_s
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Send the request; never raises, errors go to ``self.error``."""
        try:
            with task_client(self) as client:
                self.result = getattr(client, self.action)(self.model, **self.extra)
            return True
        except Exception as exc:  # noqa: BLE001 - shown to the user
            # the daemon's own sentence ("no earlier version...") says it best
            self.error = str(exc) if isinstance(exc, OrtholensError) else describe_error(exc)
            return False

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Call ``on_done`` (UI thread)."""
        if self.on_done is not None:
            self.on_done(self)


__all__ = ["RetrainTask", "VersionsTask"]
