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
* token: ``ORTHOLENS_TOKEN`` / ``ortholens/token``, default none.

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
            return ("no Ortholens backend folder was found: set ORTHOLENS_REPO (or the QGIS "
                    "setting ortholens/repo) to the folder that holds backend/")
        if not self.python or not Path(self.python).is_file():
            return (f"the daemon Python {self.python or '(unset)'} does not exist: set "
                    "ORTHOLENS_BACKEND_PYTHON (or the QGIS setting ortholens/python) to the "
                    "backend venv's python")
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
