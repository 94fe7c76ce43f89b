"""The Ortholens settings, as a QGIS user edits them: a dialog from the dock's
*Settings…* button and a page in *Settings > Options*.

Both show one :class:`SettingsWidget`: where the detection engine listens (endpoint) and,
to start it, its Python interpreter and folder; the token; the results folder; whether
the engine starts when the dock opens. Values are stored with ``QgsSettings`` under
``ortholens/`` (:func:`~.settings.save_settings`), the token in QGIS's authentication
database (:func:`~.settings.store_token`; the field never shows it: typing replaces it,
*Remove* deletes it); a field that an environment variable overrides is shown read-only
with the variable's name, because the variable wins (see :mod:`.settings`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory, QgsPasswordLineEdit

from protocol.framing import is_loopback

from .settings import (
    TOKEN_AUTH_NAME,
    autostart,
    daemon_settings,
    forget_token,
    overriding_env,
    precision,
    save_settings,
    store_token,
    stored_setting,
    token_is_stored,
)

#: ``tcp://host:port`` with a port 1-65535 (IPv6 hosts in brackets).
_ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def check_values(values: Dict[str, str], token_kept: bool = False) -> List[str]:
    """Problems with settings a user typed, as sentences (empty list: all usable).

    Args:
        values: ``{key: text}`` as :meth:`SettingsWidget.values` returns them; an empty
            text means "use the default" (for ``token``: keep the stored one).
        token_kept: a token stays stored (or ``ORTHOLENS_TOKEN`` is set) when ``token``
            is empty.

    Checks: the endpoint is ``tcp://host:port`` with a port in 1-65535, and an engine
    on another computer (a host that is not loopback) has a token; the token is at
    most 256 printable characters; the Python interpreter is an existing file; the
    engine folder holds ``backend/``; the results folder, when given, exists or can be
    created (its parent exists).
    """
    problems = []
    endpoint = values.get("endpoint", "")
    token = values.get("token", "")
    if endpoint:
        m = _ENDPOINT.match(endpoint.strip())
        if not m or not 1 <= int(m.group(2)) <= 65535:
            problems.append(f"The engine address '{endpoint}' is not tcp://host:port "
                            "(e.g. tcp://127.0.0.1:5591).")
        elif not is_loopback(m.group(1)) and not token and not token_kept:
            problems.append(f"The engine at '{endpoint}' runs on another computer, which "
                            "only answers requests that carry its token: give the token "
                            "(the engine's ORTHOLENS_TOKEN).")
    if token and (len(token) > 256 or not token.isprintable()):
        problems.append("The token must be at most 256 printable characters (no line "
                        "breaks).")
    python = values.get("python", "")
    if python and not Path(python).is_file():
        problems.append(f"The engine Python '{python}' does not exist.")
    repo = values.get("repo", "")
    if repo and not (Path(repo) / "backend").is_dir():
        problems.append(f"The engine folder '{repo}' does not hold a backend/ folder.")
    results = values.get("results_dir", "")
    if results and not Path(results).is_dir() and not Path(results).parent.is_dir():
        problems.append(f"The results folder '{results}' does not exist and cannot be "
                        "created (its parent folder is missing).")
    return problems


class SettingsWidget(QWidget):
    """The settings form (no buttons): fields, their defaults as placeholder text, and
    the environment variables that override them.

    Object names of the fields (for tests and style sheets): ``ortholensEndpoint``,
    ``ortholensPython``, ``ortholensRepo``, ``ortholensToken``, ``ortholensResultsDir``,
    ``ortholensAutostart``.
    """

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        form = QFormLayout(self)
        effective = daemon_settings()
        self.endpoint = QLineEdit(self)
        self.endpoint.setObjectName("ortholensEndpoint")
        self.endpoint.setPlaceholderText(effective.endpoint)
        self.endpoint.setToolTip("Where the detection engine listens. Use a loopback "
                                 "address unless the engine runs on another machine "
                                 "(then also set a token).")
        self.python = QgsFileWidget(self)
        self.python.setObjectName("ortholensPython")
        self.python.setStorageMode(QgsFileWidget.GetFile)
        self.python.lineEdit().setPlaceholderText(effective.python or "not found")
        self.python.setToolTip("The Python of the engine's virtual environment (it has "
                               "PyTorch or ONNX Runtime); used to start the engine.")
        self.repo = QgsFileWidget(self)
        self.repo.setObjectName("ortholensRepo")
        self.repo.setStorageMode(QgsFileWidget.GetDirectory)
        self.repo.lineEdit().setPlaceholderText(effective.repo or "not found")
        self.repo.setToolTip("The engine's folder (it holds backend/ and models/).")
        self.token = QgsPasswordLineEdit(self)
        self.token.setObjectName("ortholensToken")
        self.token.setToolTip("Shared secret sent with every request; needed when the "
                              "engine listens on a network address. Kept in QGIS's "
                              "authentication database (encrypted with its master "
                              f"password) as '{TOKEN_AUTH_NAME}'.")
        self.forget_token = QToolButton(self)
        self.forget_token.setObjectName("ortholensForgetToken")
        self.forget_token.setText("Remove")
        self.forget_token.setToolTip("Delete the stored token when OK is pressed")
        self.forget_token.setCheckable(True)
        self.forget_token.toggled.connect(self._forget_toggled)
        token_row = QWidget(self)
        lay = QHBoxLayout(token_row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.token, 1)
        lay.addWidget(self.forget_token)
        self.results_dir = QgsFileWidget(self)
        self.results_dir.setObjectName("ortholensResultsDir")
        self.results_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.results_dir.lineEdit().setPlaceholderText(
            "the project's folder, else the QGIS profile's ortholens/results")
        self.results_dir.setToolTip("Where the result GeoPackages are written.")
        self.autostart = QCheckBox("Start the engine when the Ortholens panel opens", self)
        self.autostart.setObjectName("ortholensAutostart")
        self.autostart.setToolTip("Then its models are listed and chosen before the "
                                  "first detection.")
        self.fp32 = QCheckBox("Run the models' full-precision (fp32) graphs only", self)
        self.fp32.setObjectName("ortholensFp32")
        self.fp32.setToolTip("On the CPU a model may run an INT8 graph, about 1.7 times as "
                             "fast, for the imagery it was checked on (0.15 m or finer); "
                             "applies to an engine the plugin starts next.")
        self._rows = {"endpoint": ("Engine address", self.endpoint),
                      "python": ("Engine Python", self.python),
                      "repo": ("Engine folder", self.repo),
                      "token": ("Token", self.token),
                      "results_dir": ("Results folder", self.results_dir)}
        for key, (label, widget) in self._rows.items():
            form.addRow(label, token_row if key == "token" else widget)
            env = overriding_env(key)
            if env:
                widget.setEnabled(False)
                note = QLabel(f"Set by the environment variable {env}, which wins.", self)
                note.setObjectName(f"ortholensEnvNote_{key}")
                note.setWordWrap(True)
                form.addRow("", note)
        form.addRow("", self.autostart)
        form.addRow("", self.fp32)
        if overriding_env("precision"):
            self.fp32.setEnabled(False)
        self.load()

    def _text(self, key: str) -> str:
        w = self._rows[key][1]
        return (w.filePath() if isinstance(w, QgsFileWidget) else w.text()).strip()

    def _set_text(self, key: str, text: str) -> None:
        w = self._rows[key][1]
        if isinstance(w, QgsFileWidget):
            w.setFilePath(text)
        else:
            w.setText(text)

    def load(self) -> None:
        """Show the stored QGIS settings (not the environment's values); the token
        field stays empty, its placeholder says whether one is stored."""
        for key in self._rows:
            self._set_text(key, stored_setting(key))
        self.autostart.setChecked(autostart())
        self.fp32.setChecked(precision() == "fp32")
        self.forget_token.setChecked(False)
        self._show_token_state()

    def _show_token_state(self) -> None:
        kept = token_is_stored()
        self.token.setPlaceholderText(
            "stored in the QGIS authentication database; type to replace" if kept
            else "none (an engine on this computer needs none)")
        self.forget_token.setEnabled(kept and overriding_env("token") is None)

    def _forget_toggled(self, on: bool) -> None:
        self.token.setEnabled(not on and overriding_env("token") is None)
        if on:
            self.token.clear()
            self.token.setPlaceholderText("the stored token is removed when OK is pressed")
        else:
            self._show_token_state()

    def values(self) -> Dict[str, str]:
        """``{key: text}`` of the form; ``""`` means the default."""
        out = {key: self._text(key) for key in self._rows}
        out["autostart"] = "true" if self.autostart.isChecked() else "false"
        out["precision"] = "fp32" if self.fp32.isChecked() else ""
        return out

    def save(self) -> List[str]:
        """Store the form when :func:`check_values` finds no problem: the settings in
        QgsSettings, a typed token in QGIS's authentication database (*Remove* pressed:
        the stored one is deleted; field left empty: it is kept).

        Returns:
            The problems (nothing was stored, or, for a token the database refused,
            everything but the token), or an empty list (stored).
        """
        values = self.values()
        forget = self.forget_token.isChecked()
        kept = (token_is_stored() and not forget) or overriding_env("token") is not None
        problems = check_values(values, token_kept=kept)
        if problems:
            return problems
        token = values.pop("token")
        save_settings(values)
        if forget:
            forget_token()
        if token:
            problem = store_token(token)
            if problem:
                return [problem]
            self.token.clear()
        self.forget_token.setChecked(False)
        self._show_token_state()
        return []


class SettingsDialog(QDialog):
    """*Ortholens settings*: a :class:`SettingsWidget` with OK/Cancel. OK stores the
    values, or keeps the dialog open and lists the problems in red."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Ortholens settings")
        self.setObjectName("OrtholensSettingsDialog")
        lay = QVBoxLayout(self)
        self.form = SettingsWidget(self)
        lay.addWidget(self.form)
        self.problems = QLabel("", self)
        self.problems.setObjectName("ortholensSettingsProblems")
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #b71c1c;")
        lay.addWidget(self.problems)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    def accept(self) -> None:  # noqa: D401 - Qt API
        """Store and close, or show why not."""
        problems = self.form.save()
        if problems:
            self.problems.setText("\n".join(problems))
            return
        super().accept()


class OrtholensOptionsPage(QgsOptionsPageWidget):
    """The *Ortholens* page of *Settings > Options* (QGIS calls :meth:`apply` on OK)."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.form = SettingsWidget(self)
        lay.addWidget(self.form)
        lay.addStretch(1)

    def apply(self) -> None:  # noqa: D401 - QGIS API
        """Store the values; problems are logged and the old values kept."""
        problems = self.form.save()
        if problems:
            from qgis.core import Qgis, QgsMessageLog
            QgsMessageLog.logMessage("Ortholens settings not saved: " + " ".join(problems),
                                     "Ortholens", Qgis.Warning)


class OrtholensOptionsFactory(QgsOptionsWidgetFactory):
    """Registers :class:`OrtholensOptionsPage` in *Settings > Options* (see
    ``QgisInterface.registerOptionsWidgetFactory``)."""

    def __init__(self, icon=None):
        super().__init__()
        self.setTitle("Ortholens")
        if icon is not None:
            self.setIcon(icon)

    def createWidget(self, parent: Optional[QWidget] = None) -> QgsOptionsPageWidget:  # noqa: N802
        """A new page."""
        return OrtholensOptionsPage(parent)


__all__ = ["check_values", "SettingsWidget", "SettingsDialog", "OrtholensOptionsPage",
           "OrtholensOptionsFactory"]
