"""The *Set up the detection engine* dialog: what will be installed and why, the choices
(the Python to use, a folder of wheels for an offline computer, PyTorch), the install's
progress lines with Cancel, the log, and Reinstall / Remove for an installed engine."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.PyQt.QtCore import Qt, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices, QFontDatabase
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget

from protocol.errors import EngineSetupError

from .locate import (
    bundled_wheel,
    detect_gpu,
    engine_home,
    find_python,
    installed_python,
    installed_version,
)
from .plan import SetupPlan, make_plan
from .task import EngineSetupTask, remove_engine

_RED, _GREEN = "#b71c1c", "#2e7d32"


class EngineSetupDialog(QDialog):
    """Install, repair or remove the engine (see the module docstring).

    Args:
        parent: the parent window.
        before_change: called before the engine's files change (install, repair,
            remove), e.g. to stop the engine the plugin started from them.
        confirm: ask before removing (tests pass False).

    Signals:
        engineChanged(): an install or repair succeeded, or the engine was removed.

    Attributes: ``task`` (the running :class:`~.task.EngineSetupTask` or None),
    ``last_task`` (the last finished one), ``plan`` (the plan the form shows, or None
    with the reason in ``plan_problem``). Object names (tests, screenshots):
    ``ortholensSetupDialog``, ``ortholensSetupStart``, ``ortholensSetupCancel``,
    ``ortholensSetupRemove``, ``ortholensSetupLog``, ``ortholensSetupStatus``.
    """

    engineChanged = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None,
                 before_change: Optional[Callable[[], None]] = None, confirm: bool = True):
        super().__init__(parent)
        self.setObjectName("ortholensSetupDialog")
        self.setWindowTitle("Ortholens — set up the detection engine")
        self.before_change = before_change
        self.confirm = confirm
        self.task: Optional[EngineSetupTask] = None
        self.last_task: Optional[EngineSetupTask] = None
        self.plan: Optional[SetupPlan] = None
        self.plan_problem: Optional[str] = None
        self.gpu = detect_gpu()
        self.found_python = find_python()

        lay = QVBoxLayout(self)
        self._build_intro(lay)
        self._build_choices(lay)
        self._build_progress(lay)
        self._build_buttons(lay)
        self.resize(760, 620)
        self.update_plan()
        self._show_state()

    # construction --------------------------------------------------------------------
    def _build_intro(self, lay: QVBoxLayout) -> None:
        """What the engine is, and the state line (installed or not)."""
        intro = QLabel(
            "Ortholens detects with its engine, a Python program of its own that the "
            "plugin carries. Setting it up creates a virtual environment for it and "
            "installs it there with pip; QGIS's own Python is not changed.", self)
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.state_label = QLabel("", self)
        self.state_label.setObjectName("ortholensSetupState")
        self.state_label.setWordWrap(True)
        lay.addWidget(self.state_label)

    def _build_choices(self, lay: QVBoxLayout) -> None:
        """The form: the Python to use, a folder of offline wheels, PyTorch, the GPU."""
        form = QFormLayout()
        self.python_edit = QgsFileWidget(self)
        self.python_edit.setObjectName("ortholensSetupPython")
        self.python_edit.setStorageMode(QgsFileWidget.GetFile)
        self.python_edit.lineEdit().setPlaceholderText(
            f"found: {self.found_python.describe()}" if self.found_python.ok
            else "none found: choose a Python 3.10 or newer")
        self.python_edit.setToolTip("The Python the engine's environment is created from "
                                    "(3.10 or newer, with venv). Leave empty to use the "
                                    "one found.")
        self.python_edit.fileChanged.connect(lambda *_: self.update_plan())
        form.addRow("Python", self.python_edit)
        self.wheels_edit = QgsFileWidget(self)
        self.wheels_edit.setObjectName("ortholensSetupWheels")
        self.wheels_edit.setStorageMode(QgsFileWidget.GetDirectory)
        self.wheels_edit.lineEdit().setPlaceholderText(
            "none: packages come from the package index (PyPI)")
        self.wheels_edit.setToolTip("A computer without internet: a folder of wheels made "
                                    "with 'pip download' on another computer (README, "
                                    "Install in QGIS).")
        self.wheels_edit.fileChanged.connect(lambda *_: self.update_plan())
        form.addRow("Offline wheels", self.wheels_edit)
        self.torch_check = QCheckBox(
            "PyTorch (GPU detection, retraining; CUDA build on a GPU)", self)
        self.torch_check.setObjectName("ortholensSetupTorch")
        self.torch_check.setChecked(self.gpu is not None)
        self.torch_check.toggled.connect(lambda *_: self.update_plan())
        form.addRow("", self.torch_check)
        gpu = QLabel(f"GPU: {self.gpu.describe()} (nvidia-smi)" if self.gpu
                     else "GPU: none found (nvidia-smi): the CPU path", self)
        gpu.setObjectName("ortholensSetupGpu")
        form.addRow("", gpu)
        lay.addLayout(form)

    def _build_progress(self, lay: QVBoxLayout) -> None:
        """The plan, the progress bar, the status line and the install's log."""
        self.plan_label = QLabel("", self)
        self.plan_label.setObjectName("ortholensSetupPlan")
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.plan_label)

        row = QHBoxLayout()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        row.addWidget(self.progress, 1)
        self.status_label = QLabel("", self)
        self.status_label.setObjectName("ortholensSetupStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addLayout(row)
        lay.addWidget(self.status_label)
        self.log_view = QPlainTextEdit(self)
        self.log_view.setObjectName("ortholensSetupLog")
        self.log_view.setReadOnly(True)
        self.log_view.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setMinimumHeight(180)
        lay.addWidget(self.log_view, 1)

    def _build_buttons(self, lay: QVBoxLayout) -> None:
        """Set up (or Repair), Cancel, Remove engine…, Open log and Close."""
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Set up", self)
        self.start_button.setObjectName("ortholensSetupStart")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("ortholensSetupCancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.remove_button = QPushButton("Remove engine…", self)
        self.remove_button.setObjectName("ortholensSetupRemove")
        self.remove_button.clicked.connect(self.remove)
        self.open_log_button = QPushButton("Open log", self)
        self.open_log_button.setObjectName("ortholensSetupOpenLog")
        self.open_log_button.setToolTip("The full log of the last setup (setup.log)")
        self.open_log_button.clicked.connect(self._open_log)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.close)
        for b in (self.start_button, self.cancel_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.open_log_button)
        buttons.addWidget(self.close_button)
        lay.addLayout(buttons)

    # state ---------------------------------------------------------------------------
    def home(self) -> Path:
        """The engine folder."""
        return engine_home()

    def _show_state(self) -> None:
        python = installed_python(self.home())
        running = self.task is not None
        if python:
            self.state_label.setText(f"Installed: Ortholens engine "
                                     f"{installed_version(python)} in "
                                     f"{Path(python).parent.parent}. Reinstall only to "
                                     f"repair it.")
            self.start_button.setText("Reinstall")
        else:
            self.state_label.setText("No engine is installed for this user yet.")
            self.start_button.setText("Set up")
        self.start_button.setEnabled(not running and self.plan is not None)
        self.remove_button.setEnabled(not running and (
            python is not None or (self.home() / "venv").exists()))
        self.cancel_button.setEnabled(running)
        self.open_log_button.setEnabled((self.home() / "setup.log").is_file())
        for w in (self.python_edit, self.wheels_edit, self.torch_check):
            w.setEnabled(not running)

    def update_plan(self) -> Optional[SetupPlan]:
        """Decide the plan from the form and show it (or why there is none)."""
        given = self.python_edit.filePath().strip()
        python = find_python(given) if given else self.found_python
        try:
            self.plan = make_plan(python, self.gpu, self.torch_check.isChecked(),
                                  self.wheels_edit.filePath().strip() or None,
                                  home=self.home(), wheel=bundled_wheel())
            self.plan_problem = None
            self.plan_label.setStyleSheet("")
            self.plan_label.setText("\n".join(self.plan.describe()))
        except EngineSetupError as exc:
            self.plan, self.plan_problem = None, str(exc)
            self.plan_label.setStyleSheet(f"color: {_RED};")
            self.plan_label.setText(str(exc))
        if hasattr(self, "start_button"):
            self._show_state()
        return self.plan

    # actions -------------------------------------------------------------------------
    def start(self) -> Optional[EngineSetupTask]:
        """Start the setup of the shown plan as a QgsTask (Cancel stops it).

        Returns:
            The task, or None when there is no plan or one is running.
        """
        if self.task is not None or self.update_plan() is None:
            return None
        if self.before_change is not None:
            self.before_change()
        self.log_view.clear()
        self.progress.setValue(0)
        self._status("Setting up the engine…", "")
        task = EngineSetupTask(self.plan, on_done=self._done)
        task.line.connect(self._line)
        task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self.task = task
        self._show_state()
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        """Cancel the running setup (its command is stopped at once)."""
        if self.task is not None:
            self.task.cancel()
            self._status("Cancelling…", "")

    def remove(self) -> bool:
        """Remove the installed engine (after asking, unless ``confirm`` is False).

        Returns:
            True when it was removed.
        """
        home = self.home()
        if self.confirm and QMessageBox.question(
                self, "Remove the Ortholens engine",
                f"Delete the engine's environment and files in {home}?\nYour results "
                f"and retrained model versions are kept.") != QMessageBox.Yes:
            return False
        if self.before_change is not None:
            self.before_change()
        try:
            removed = remove_engine(home)
        except EngineSetupError as exc:
            self._status(str(exc), _RED)
            return False
        self._status(f"Removed: {', '.join(removed) or 'nothing was installed'}.", _GREEN)
        self.update_plan()
        self.engineChanged.emit()
        return True

    def _line(self, text: str) -> None:
        self.log_view.appendPlainText(text)
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())  # the newest line stays in view
        if text.startswith(("$ ", "Self-test", "Installed", "Collecting", "Installing")):
            self.status_label.setText(status_line(text))

    def _status(self, text: str, color: str) -> None:
        self.status_label.setStyleSheet(f"color: {color};" if color else "")
        self.status_label.setText(text)

    def _done(self, task: EngineSetupTask) -> None:
        self.task = None
        self.last_task = task
        if task.report is not None:
            self.progress.setValue(100)
            self._status(f"The engine is set up ({task.seconds:.0f} s): "
                         f"{task.report.summary()}.", _GREEN)
            self.close_button.setDefault(True)  # done: Close, not Reinstall, comes next
            self.close_button.setFocus()
        elif task.cancelled:
            self._status("Cancelled: nothing is left running. Set up again to finish "
                         "or repair the installation.", "")
        else:
            self._status(str(task.error or "The setup failed."), _RED)
        self.update_plan()
        if task.report is not None:
            self.engineChanged.emit()

    def _open_log(self) -> None:
        log = self.home() / "setup.log"
        if log.is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(log)))


def status_line(text: str, limit: int = 150) -> str:
    """A setup line short enough for the status line, cut between words:
    ``"Installing collected packages: numpy, rasterio, … (28 in all)"`` for a list,
    else at the last space before ``limit`` characters with ``…``."""
    if len(text) <= limit:
        return text
    head, sep, rest = text.partition(": ")
    items = [i.strip() for i in rest.split(",")] if sep and "," in rest else []
    if items:
        shown = []
        for item in items:
            if len(head) + 2 + len(", ".join(shown + [item])) + 16 > limit:
                break
            shown.append(item)
        return f"{head}: {', '.join(shown)}, … ({len(items)} in all)"
    return text[:limit].rsplit(" ", 1)[0] + " …"


__all__ = ["EngineSetupDialog", "status_line"]
