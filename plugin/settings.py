"""Where the plugin finds its daemon and its resources.

Every value is read in this order: environment variable, then QGIS setting (``QgsSettings``
key under ``ortholens/``), then a default:

* endpoint: ``ORTHOLENS_ENDPOINT`` / ``ortholens/endpoint``, default
  ``tcp://127.0.0.1:5591`` (the protocol's default);
* repository (the daemon's working directory, holds ``backend/``): ``ORTHOLENS_REPO`` /
  ``ortholens/repo``, default the folder above the plugin folder when it holds
  ``backend/`` (a development checkout);
* daemon interpreter: ``ORTHOLENS_BACKEND_PYTHON`` (as in ``protocol.client``) or
  ``ORTHOLENS_PYTHON`` / ``ortholens/python``, default ``<repo>/.venv/backend/bin/python``
  (``Scripts/python.exe`` on Windows);
* token: ``ORTHOLENS_TOKEN`` / ``ortholens/token``, default none;
* results folder: ``ORTHOLENS_RESULTS`` / ``ortholens/results_dir``, default none (then
  the saved project's folder, else ``<QGIS profile>/ortholens/results``, see
  ``layers.default_result_path``);
* start the engine when the dock opens: ``ORTHOLENS_AUTOSTART`` / ``ortholens/autostart``,
  default on.

:class:`~.settings_dialog.SettingsWidget` edits the QGIS settings (the dock's *Settings…*
button and *Settings > Options > Ortholens*); an environment variable still wins over
the stored value, and the dialog says so next to the field.

Nothing here imports ``qgis`` at module level except inside :func:`_setting`, so the module
is cheap to import.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from protocol.wire import DEFAULT_ENDPOINT

PLUGIN_DIR = Path(__file__).resolve().parent


def _setting(key: str) -> Optional[str]:
    """``QgsSettings().value("ortholens/<key>")`` as a non-empty string, or None."""
    try:
        from qgis.core import QgsSettings
    except ImportError:  # pragma: no cover - outside QGIS
        return None
    value = QgsSettings().value(f"ortholens/{key}", "")
    return str(value) if value else None


def _value(env: str, key: str) -> Optional[str]:
    return os.environ.get(env) or _setting(key)


#: The QGIS setting keys (under ``ortholens/``) and the environment variable that
#: overrides each (None: no variable).
SETTING_KEYS = {"endpoint": "ORTHOLENS_ENDPOINT", "repo": "ORTHOLENS_REPO",
                "python": "ORTHOLENS_PYTHON", "token": "ORTHOLENS_TOKEN",
                "results_dir": "ORTHOLENS_RESULTS", "autostart": "ORTHOLENS_AUTOSTART"}


def overriding_env(key: str) -> Optional[str]:
    """The environment variable that currently overrides the QGIS setting ``key``
    (e.g. ``"ORTHOLENS_REPO"``), or None when the stored value is used."""
    names = {"python": ("ORTHOLENS_BACKEND_PYTHON", "ORTHOLENS_PYTHON")}.get(
        key, (SETTING_KEYS.get(key),))
    return next((n for n in names if n and os.environ.get(n)), None)


def stored_setting(key: str) -> str:
    """The value stored in QGIS settings for ``key`` (``""`` when unset), ignoring the
    environment: what the settings dialog shows and edits."""
    return _setting(key) or ""


def save_settings(values: dict) -> None:
    """Store ``{key: value}`` under ``ortholens/<key>`` (QgsSettings); an empty value
    removes the key, so the default applies again.

    Raises:
        KeyError: a key that is not in :data:`SETTING_KEYS`.
    """
    from qgis.core import QgsSettings
    qs = QgsSettings()
    for key, value in values.items():
        if key not in SETTING_KEYS:
            raise KeyError(f"unknown Ortholens setting {key!r}")
        if value in (None, ""):
            qs.remove(f"ortholens/{key}")
        else:
            qs.setValue(f"ortholens/{key}", str(value))


def results_dir() -> Optional[str]:
    """The results folder the user chose (``ORTHOLENS_RESULTS`` or the setting
    ``ortholens/results_dir``), or None for the default place."""
    return _value("ORTHOLENS_RESULTS", "results_dir")


def autostart() -> bool:
    """Start the engine when the dock opens: ``ORTHOLENS_AUTOSTART`` or the setting
    ``ortholens/autostart``, default True; ``"false"``/``"0"``/``"no"`` turn it off."""
    value = _value("ORTHOLENS_AUTOSTART", "autostart") or "true"
    return value.strip().lower() not in ("false", "0", "no")


@dataclass
class DaemonSettings:
    """How to reach (and, if needed, start) the inference daemon.

    Attributes:
        endpoint: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5591``.
        python: the daemon's Python interpreter (a venv with torch/onnxruntime), or None
            when no daemon installation was found (then it cannot be auto-started).
        repo: working directory for ``python -m backend`` (holds ``backend/``), or None.
        token: shared secret sent with every request, or None.
    """

    endpoint: str
    python: Optional[str]
    repo: Optional[str]
    token: Optional[str]

    def can_start(self) -> bool:
        """True when both the interpreter and the backend folder exist on disk."""
        return bool(self.python and Path(self.python).is_file()
                    and self.repo and (Path(self.repo) / "backend").is_dir())

    def start_hint(self) -> str:
        """One sentence saying why the daemon cannot be started, for user messages."""
        if not self.repo or not (Path(self.repo) / "backend").is_dir():
            return ("no detection engine is set up: in Ortholens Settings… give the "
                    "engine's folder (it holds backend/) and its Python, or the address "
                    "of a running engine")
        if not self.python or not Path(self.python).is_file():
            return (f"the engine's Python {self.python or '(unset)'} does not exist: "
                    "give the engine's Python in Ortholens Settings…")
        return "the daemon was started but did not answer"


def daemon_settings() -> DaemonSettings:
    """Read the daemon settings (environment, then QgsSettings, then defaults)."""
    endpoint = _value("ORTHOLENS_ENDPOINT", "endpoint") or DEFAULT_ENDPOINT
    repo = _value("ORTHOLENS_REPO", "repo")
    if not repo and (PLUGIN_DIR.parent / "backend").is_dir():
        repo = str(PLUGIN_DIR.parent)
    python = (os.environ.get("ORTHOLENS_BACKEND_PYTHON") or os.environ.get("ORTHOLENS_PYTHON")
              or _setting("python"))
    if not python and repo:
        sub = ("Scripts", "python.exe") if sys.platform == "win32" else ("bin", "python")
        python = str(Path(repo, ".venv", "backend", *sub))
    token = _value("ORTHOLENS_TOKEN", "token")
    return DaemonSettings(endpoint=endpoint, python=python, repo=repo, token=token)


def resource_path(name: str) -> str:
    """Absolute path of a file in ``resources/``.

    Looks in ``<plugin>/resources`` (the packaged ``ortholens/`` layout) and then in
    ``<plugin>/../resources`` (the repository layout). Returns the first candidate even if
    it does not exist (Qt then shows an empty icon rather than failing).
    """
    candidates = [PLUGIN_DIR / "resources" / name, PLUGIN_DIR.parent / "resources" / name]
    for c in candidates:
        if c.is_file():
            return str(c)
    return str(candidates[0])
