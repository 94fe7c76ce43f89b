"""The engine setup as a ``QgsTask``: create the environment, pip install, self-test.

Progress: 0-10 % the environment, 10-85 % pip (one step per package pip collects), 85-100 %
the self-test. Every line (the plan, each command, pip's output, the self-test's steps)
is emitted as :attr:`EngineSetupTask.line` and written to ``<engine folder>/setup.log``.
Cancel stops the running command (its whole process group) at once. Nothing raises into
QGIS: the outcome is ``report`` (success), ``cancelled`` or ``error`` (an
:class:`~protocol.errors.EngineSetupError` whose message names the failing package, the
command to retry and the log).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import Qgis, QgsMessageLog, QgsTask

from protocol.errors import EngineSetupError

from ..tasks import LOG_TAG
from .locate import clean_env, installed_version
from .plan import SetupPlan, pip_error, shell_command
from .selftest import SelfTest, run_self_test

#: pip collects about this many packages for each extra (for the progress bar only).
EXPECTED_PACKAGES = {"": 25, "train": 60, "cuda": 75}


class EngineSetupTask(QgsTask):
    """Install (or repair) the engine a :class:`~.plan.SetupPlan` describes.

    Args:
        plan: what to install where.
        on_done: called with this task on the UI thread when it has finished.

    Signals:
        line(str): one line of progress (the plan, commands, pip's output, the
            self-test); emitted from the worker thread.

    After ``finished``: ``report`` (a :class:`~.selftest.SelfTest`) on success, else
    ``cancelled`` (bool) or ``error`` (an ``EngineSetupError``); ``lines`` holds every
    line; ``seconds`` the time taken.
    """

    line = pyqtSignal(str)

    def __init__(self, plan: SetupPlan,
                 on_done: Optional[Callable[["EngineSetupTask"], None]] = None):
        super().__init__("Ortholens: set up the engine", QgsTask.CanCancel)
        self.plan = plan
        self.on_done = on_done
        self.report: Optional[SelfTest] = None
        self.error: Optional[EngineSetupError] = None
        self.cancelled = False
        self.lines: List[str] = []
        self.seconds = 0.0
        self._log = None
        self._proc: Optional[subprocess.Popen] = None

    # output -----------------------------------------------------------------------
    def _say(self, text: str) -> None:
        for part in str(text).splitlines() or [""]:
            self.lines.append(part)
            if self._log is not None:
                self._log.write(part + "\n")
                self._log.flush()
            self.line.emit(part)

    # the work -----------------------------------------------------------------------
    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Run the setup in the worker thread; never raises (see the class)."""
        t0 = time.monotonic()
        plan = self.plan
        try:
            plan.home.mkdir(parents=True, exist_ok=True)
            self._log = open(plan.log_path, "w", encoding="utf-8")
            self._say(f"Ortholens engine setup, {_dt.datetime.now().isoformat(timespec='seconds')}")
            for text in plan.describe():
                self._say(text)
            self._make_venv()
            self.setProgress(10)
            self._pip(plan.pip_command(), 10, 85, EXPECTED_PACKAGES.get(plan.extra, 30))
            for cmd in plan.gpu_runtime_commands():
                self._pip(cmd, 84, 85, 1)
            if plan.repair:
                self._pip(plan.reinstall_command(), 84, 85, 1)
            version = installed_version(str(plan.engine_python))
            if version is None:
                raise EngineSetupError(f"pip finished, but no engine is installed in "
                                       f"{plan.venv}; the log is {plan.log_path}.",
                                       log_path=str(plan.log_path))
            self._say(f"Installed: ortholens-engine {version} in {plan.venv}")
            self.setProgress(85)
            self._check_cancel()
            self.report = run_self_test(str(plan.engine_python), str(plan.home),
                                        plan.home / "selftest", self._say,
                                        self.isCanceled)
            self._write_record(version)
            self.setProgress(100)
            self._say(f"Done in {time.monotonic() - t0:.0f} s: {self.report.summary()}.")
            return True
        except InterruptedError:
            self.cancelled = True
            self._say("Cancelled. Run 'Set up the engine…' again to finish or repair "
                      "the installation.")
            return False
        except EngineSetupError as exc:
            self.error = exc
            self._say(f"Failed: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - reported, never raised into QGIS
            self.error = EngineSetupError(
                f"The setup failed unexpectedly ({exc!r}); the log is {plan.log_path}.",
                log_path=str(plan.log_path))
            self._say(traceback.format_exc())
            QgsMessageLog.logMessage(f"{self.error}\n{traceback.format_exc()}", LOG_TAG,
                                     Qgis.Warning)
            return False
        finally:
            self.seconds = time.monotonic() - t0
            if self._log is not None:
                self._log.close()
                self._log = None

    def _check_cancel(self) -> None:
        if self.isCanceled():
            raise InterruptedError("cancelled")

    def _make_venv(self) -> None:
        """Create the environment, or keep a working one of the same Python version
        (a repair); a broken one is recreated (``--clear``)."""
        plan = self.plan
        python = plan.engine_python
        if python.is_file():
            r = self._quiet([str(python), "-c",
                             "import sys; print('%d.%d' % sys.version_info[:2])"])
            want = ".".join(map(str, (plan.python.version or ())[:2]))
            if r == want:
                self._say(f"The environment {plan.venv} works (Python {r}): kept.")
                return
            self._say(f"The environment {plan.venv} does not work with Python {want} "
                      f"({r or 'it does not run'}): it is created again.")
            self._run(plan.venv_command()[:-1] + ["--clear", str(plan.venv)])
            return
        self._run(plan.venv_command())

    def _quiet(self, cmd: Sequence[str]) -> str:
        """stdout of a short command, stripped ("" when it fails)."""
        try:
            r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60,
                               env=clean_env(), stdin=subprocess.DEVNULL)
            return r.stdout.strip() if r.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    def _run(self, cmd: Sequence[str]) -> None:
        """Run a command (creating the environment) with its output in the log.

        Raises:
            EngineSetupError: it failed (the message quotes its last lines).
            InterruptedError: cancelled.
        """
        self._say(f"$ {shell_command(cmd)}")
        rc, out = self._stream(cmd)
        if rc != 0:
            tail = "\n".join(out[-8:])
            raise EngineSetupError(f"Creating the environment failed (exit code {rc}):\n"
                                   f"{tail}\nRetry in a terminal with:\n"
                                   f"{shell_command(cmd)}",
                                   command=shell_command(cmd), log_path=str(self.plan.log_path))

    def _pip(self, cmd: Sequence[str], start: float, end: float, expected: int) -> None:
        """Run a pip command, moving the progress bar from ``start`` to ``end`` as it
        collects packages.

        Raises:
            EngineSetupError: pip failed (:func:`~.plan.pip_error`).
            InterruptedError: cancelled.
        """
        self._say(f"$ {shell_command(cmd)}")
        seen = [0]

        def on_line(text: str) -> None:
            s = text.lstrip()
            if s.startswith(("Collecting", "Processing", "Requirement already satisfied")):
                seen[0] += 1
                self.setProgress(start + (end - start - 3) * min(1.0, seen[0] / expected))
            elif s.startswith("Installing collected packages"):
                self.setProgress(end - 3)

        rc, out = self._stream(cmd, on_line)
        if rc != 0:
            raise pip_error(self.plan, cmd, out, rc)
        self.setProgress(end)

    def _stream(self, cmd: Sequence[str],
                on_line: Optional[Callable[[str], None]] = None):
        """Run ``cmd``, saying each output line as it comes; kill its process group on
        cancel. Returns ``(exit code, lines)``.

        Raises:
            InterruptedError: cancelled (the process is killed first).
            EngineSetupError: it cannot be started.
        """
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
                                       | subprocess.CREATE_NO_WINDOW)  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        env = clean_env()
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=str(self.plan.home), text=True,
                                    encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            raise EngineSetupError(f"Cannot run {cmd[0]}: {exc}",
                                   command=shell_command(cmd)) from None
        self._proc = proc
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def read() -> None:
            for text in proc.stdout:  # type: ignore[union-attr]
                lines.put(text.rstrip("\r\n"))
            lines.put(None)

        threading.Thread(target=read, name="ortholens-setup-output", daemon=True).start()
        out: List[str] = []
        try:
            while True:
                if self.isCanceled():
                    _kill_group(proc)
                    raise InterruptedError("cancelled")
                try:
                    text = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if text is None:
                    break
                out.append(text)
                self._say(text)
                if on_line is not None:
                    on_line(text)
            return proc.wait(), out
        finally:
            self._proc = None

    def _write_record(self, version: str) -> None:
        """``<engine folder>/engine.json``: what was installed, from what, and the
        self-test."""
        plan = self.plan
        record = {"version": version, "python": str(plan.engine_python),
                  "created_from": plan.python.describe(), "extra": plan.extra,
                  "gpu": plan.gpu.describe() if plan.gpu else None,
                  "wheel": plan.wheel.name,
                  "wheels_dir": str(plan.wheels_dir) if plan.wheels_dir else None,
                  "installed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(
                      timespec="seconds"),
                  "self_test": self.report.to_dict() if self.report else None}
        (plan.home / "engine.json").write_text(json.dumps(record, indent=2), "utf-8")

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Call ``on_done`` (UI thread)."""
        if self.on_done is not None:
            self.on_done(self)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and the processes it started (its process group / session)."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def remove_engine(home: Path) -> List[str]:
    """Delete the engine *Set up the engine…* installed: ``venv/``, ``selftest/``,
    ``engine.json`` and ``setup.log`` under ``home`` (nothing else: a user's files in
    that folder stay). Stop a running engine first.

    Returns:
        The paths removed.

    Raises:
        EngineSetupError: something could not be deleted (in use, permissions).
    """
    home = Path(home)
    removed = []
    for name in ("venv", "selftest", "engine.json", "setup.log"):
        p = home / name
        if not p.exists() and not p.is_symlink():
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as exc:
            raise EngineSetupError(f"The engine could not be removed: {exc}. Stop the "
                                   f"engine (close QGIS) and delete {p} by hand.") from None
        removed.append(str(p))
    try:
        home.rmdir()  # only when empty
    except OSError:
        pass
    return removed


__all__ = ["EngineSetupTask", "remove_engine", "EXPECTED_PACKAGES"]
