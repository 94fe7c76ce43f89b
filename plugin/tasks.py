"""How the plugin's ``QgsTask`` s run: work that never raises into QGIS, daemon
progress mapped onto the task's progress bar, and the daemon status task.

Used by the detect and retrain flows alike (:mod:`.detect.task`, :mod:`.retrain.task`).
"""

from __future__ import annotations

import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional

from qgis.core import Qgis, QgsMessageLog, QgsTask

from protocol.errors import DaemonUnavailable, JobCancelled

from .connection import connect_daemon, describe_error
from .settings import DaemonSettings
from .timeleft import TimeLeft

#: Tag of the plugin's messages in QGIS's log panel.
LOG_TAG = "Ortholens"


def job_fraction(value: Any) -> Optional[float]:
    """A daemon ``progress`` fraction clamped to 0..1; None when it is not a number
    (the message is then ignored rather than failing the task)."""
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return None


def progress_callback(task: QgsTask, start: float, span: float,
                      on_message: Callable[[Any], None],
                      time_left: Optional[TimeLeft] = None) -> Callable[..., None]:
    """An ``on_progress(fraction, message)`` for ``protocol.client`` job calls.

    Args:
        task: its progress becomes ``start + span * fraction`` (percent).
        start, span: the part of the progress bar the daemon job fills, percent.
        on_message: called with the daemon's message (may be empty) after each valid
            progress event.
        time_left: the run's :class:`~.timeleft.TimeLeft`, fed the task's progress (the
            dock says the elapsed time and the time left from it).
    """
    def on_progress(fraction: Any = None, message: Any = None, *_: Any) -> None:
        f = job_fraction(fraction)
        if f is None:
            return
        task.setProgress(start + span * f)
        if time_left is not None:
            time_left.update((start + span * f) / 100.0)
        on_message(message)
    return on_progress


def run_reporting(task: Any, work: Callable[[], bool],
                  describe: Callable[[BaseException], str] = describe_error) -> bool:
    """Run a QgsTask's ``work`` in its worker thread without ever raising (an exception
    escaping ``QgsTask.run`` crashes QGIS).

    A cancel (``InterruptedError`` or ``protocol.errors.JobCancelled``) sets
    ``task.cancelled``; any other error sets ``task.error`` to ``describe(exc)`` and is
    logged with its traceback.

    Returns:
        ``work()``'s result, or False when it raised.
    """
    try:
        return work()
    except (InterruptedError, JobCancelled):
        task.cancelled = True
        return False
    except Exception as exc:  # noqa: BLE001 - reported to the user
        task.error = describe(exc)
        QgsMessageLog.logMessage(f"{task.error}\n{traceback.format_exc()}", LOG_TAG,
                                 Qgis.Warning)
        return False


#: Every engine process a task of this plugin started (``subprocess.Popen``), whichever
#: task it was: :func:`started_engines` hands them to whoever stops them.
_STARTED: List[Any] = []


def remember_started(proc: Any) -> Any:
    """Record ``proc``, an engine process a task started (None: nothing started), so
    that stopping the plugin's engines finds it; returns ``proc``."""
    if proc is not None:
        _STARTED.append(proc)
    return proc


def started_engines() -> List[Any]:
    """The engine processes the plugin's tasks started and that still run, forgotten
    once returned (the caller stops them)."""
    out = [p for p in _STARTED if p.poll() is None]
    _STARTED.clear()
    return out


@contextmanager
def task_client(task: Any) -> Iterator[Any]:
    """A daemon client for the ``with`` body of a task's work (worker thread).

    Connects with ``task.settings`` and ``task.timeout_s``, starting the daemon when it
    does not answer and the settings allow it; sets ``task.daemon_process`` (the started
    daemon, or None); closes the client after the body.

    Raises:
        DaemonUnavailable: see ``connection.connect_daemon``.
    """
    client = connect_daemon(task.settings, start=True, timeout_s=task.timeout_s)
    task.daemon_process = remember_started(getattr(client, "process", None))
    try:
        yield client
    finally:
        client.close()


class DaemonStatusTask(QgsTask):
    """Pings the daemon and lists its models (worker thread); with ``start``, starts
    the daemon first when nothing answers and the settings allow it.

    Args:
        settings: where the daemon listens (and how to start it).
        on_done: called with this task on the UI thread when it finishes.
        timeout_s: per-request timeout, seconds.
        start: start the daemon when it does not answer and ``settings.can_start()``
            (it loads its models: seconds to a minute).

    After ``finished``: ``pong`` (dict or None), ``cards`` (the ``models`` reply),
    ``error`` (a message, or None when the daemon simply is not running and was not to
    be started), ``daemon_process`` (the ``Popen`` of a daemon this task started, else
    None).
    """

    def __init__(self, settings: DaemonSettings,
                 on_done: Optional[Callable[["DaemonStatusTask"], None]] = None,
                 timeout_s: float = 2.0, start: bool = False):
        super().__init__("Ortholens: daemon status", QgsTask.CanCancel)
        self.settings = settings
        self.on_done = on_done
        self.timeout_s = timeout_s
        self.start = bool(start and settings.can_start())
        self.pong: Optional[Dict[str, Any]] = None
        self.cards: List[Dict[str, Any]] = []
        self.error: Optional[str] = None
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Ping (starting the daemon if asked) and list the models; never raises."""
        try:
            if self.start:
                client = connect_daemon(self.settings, start=True,
                                        timeout_s=max(self.timeout_s, 5.0))
                self.daemon_process = remember_started(getattr(client, "process", None))
            else:
                from protocol.client import OrtholensClient
                client = OrtholensClient(self.settings.endpoint, token=self.settings.token,
                                         timeout_s=self.timeout_s)
            with client:
                self.pong = client.ping()
                self.cards = list(client.models())
            return True
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            # not running is the normal state before the first detection: no error,
            # unless the daemon was to be started and could not be
            self.error = (describe_error(exc, settings=self.settings) if self.start
                          or not isinstance(exc, DaemonUnavailable) else None)
            return True  # the answer is the status; QGIS must not report a failed task

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Call ``on_done`` (UI thread)."""
        if self.on_done is not None:
            self.on_done(self)


__all__ = ["LOG_TAG", "job_fraction", "progress_callback", "run_reporting", "task_client",
           "remember_started", "started_engines",
           "DaemonStatusTask"]
