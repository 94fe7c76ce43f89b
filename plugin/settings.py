"""Where the plugin finds its daemon and its resources.

Every value is read in this order: environment variable, then QGIS setting (``QgsSettings``
key under ``ortholens/``), then a default:

* endpoint: ``ORTHOLENS_ENDPOINT`` / ``ortholens/endpoint``, default
  ``tcp://127.0.0.1:5591`` (the protocol's default);
* repository (the daemon's working directory, holds ``backend/``): ``ORTHOLENS_REPO`` /
  ``ortholens/repo``, default the folder above the plugin folder when it holds
  ``backend/`` (a development checkout);
* daemon interpreter: ``ORTHOLENS_BACKEND_PYTHON`` (as in ``protocol.launcher``) or
  ``ORTHOLENS_PYTHON`` / ``ortholens/python``, default ``<repo>/.venv/backend/bin/python``
  in a checkout; without a repository, the engine *Set up the engine…* installed
  (``<engine folder>/venv/bin/python``, see :mod:`.install.locate`);
  (``Scripts/python.exe`` on Windows);
* token: ``ORTHOLENS_TOKEN``, else the QGIS authentication database (the auth config
  whose id ``ortholens/token_authcfg`` holds, see :func:`stored_token`; never plain
  settings: a plain ``ortholens/token`` of an earlier version is moved there), default
  none;
* results folder: ``ORTHOLENS_RESULTS`` / ``ortholens/results_dir``, default none (then
  the saved project's folder, else ``<QGIS profile>/ortholens/results``, see
  ``layers.naming.default_result_path``);
* start the engine when the dock opens: ``ORTHOLENS_AUTOSTART`` / ``ortholens/autostart``,
  default on;
* stop an engine the plugin started after minutes without work:
  ``ORTHOLENS_IDLE_EXIT_MIN`` / ``ortholens/idle_exit_min``, default 30 (0: never; an
  engine started by hand stays until stopped);
* the graphs an engine the plugin starts runs: ``ORTHOLENS_PRECISION`` /
  ``ortholens/precision``, ``auto`` (default: a card's INT8 graph on the CPU for the
  layers it serves) or ``fp32`` (the fp32 graphs only).

:class:`~.settings_dialog.SettingsWidget` edits the QGIS settings (the dock's *Settings…*
button and *Settings > Options > Ortholens*); an environment variable still wins over
the stored value, and the dialog says so next to the field.

Where the engine runs: an endpoint whose host is not a loopback address
(:meth:`DaemonSettings.is_remote`) is an engine on another computer, which cannot read
the user's files; the plugin then sends the pixels of the extent.

Nothing here imports ``qgis`` at module level (only inside functions), so the module is
cheap to import.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from protocol.framing import DEFAULT_ENDPOINT

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


#: The settings (under ``ortholens/``) and the environment variable that overrides each
#: (None: no variable). ``token`` is not a QGIS setting: it lives in the authentication
#: database (:func:`store_token`).
SETTING_KEYS = {"endpoint": "ORTHOLENS_ENDPOINT", "repo": "ORTHOLENS_REPO",
                "python": "ORTHOLENS_PYTHON", "token": "ORTHOLENS_TOKEN",
                "results_dir": "ORTHOLENS_RESULTS", "autostart": "ORTHOLENS_AUTOSTART",
                "idle_exit_min": "ORTHOLENS_IDLE_EXIT_MIN", "precision": "ORTHOLENS_PRECISION"}

#: Minutes without work after which an engine the plugin started stops (the default).
DEFAULT_IDLE_EXIT_MIN = 30.0

#: The QGIS setting holding the id of the token's auth config.
TOKEN_AUTHCFG_KEY = "token_authcfg"
#: The name of that auth config (*Settings > Options > Authentication*).
TOKEN_AUTH_NAME = "Ortholens engine token"
#: Where the token can come from, for messages (:attr:`DaemonSettings.token_source`).
TOKEN_FROM_ENV, TOKEN_FROM_AUTH = "ORTHOLENS_TOKEN", "the QGIS authentication database"
#: Why an auth config cannot be read or written, for messages.
_LOCKED = ("QGIS's authentication database is locked: enter its master password when "
           "QGIS asks (for qgis_process, name a file holding it in "
           "QGIS_AUTH_PASSWORD_FILE), or set ORTHOLENS_TOKEN")


def _auth_manager():
    """``QgsApplication.authManager()``, or None outside QGIS or when QGIS's
    authentication system is disabled (no Qt cryptography plugin)."""
    try:
        from qgis.core import QgsApplication
    except ImportError:  # pragma: no cover - outside QGIS
        return None
    am = QgsApplication.authManager()
    return None if am is None or am.isDisabled() else am


def stored_token() -> Tuple[Optional[str], Optional[str]]:
    """The token kept in QGIS's authentication database, ignoring ``ORTHOLENS_TOKEN``.

    A plain ``ortholens/token`` setting (an earlier version stored it so) is moved into
    the database first (:func:`migrate_plain_token`).

    Returns:
        ``(token, problem)``: the token or None (none stored, or unreadable), and None or
        one sentence saying why a stored token cannot be read (the database is locked:
        no master password given; the auth config was deleted).
    """
    problem = migrate_plain_token()
    if problem:  # not moved: it is still usable from the plain setting
        return _setting("token"), None
    cfg_id = _setting(TOKEN_AUTHCFG_KEY)
    if not cfg_id:
        return None, None
    am = _auth_manager()
    if am is None:
        return None, "QGIS's authentication system is disabled, so the engine token " \
                     "cannot be read: set ORTHOLENS_TOKEN"
    from qgis.core import QgsAuthMethodConfig
    if cfg_id not in am.configIds():
        return None, (f"the engine token's auth config {cfg_id} is no longer in QGIS's "
                      "authentication database: give the token again in Ortholens "
                      "Settings…")
    ok, cfg = am.loadAuthenticationConfig(cfg_id, QgsAuthMethodConfig(), True)
    token = cfg.config("password") if ok else ""
    if not ok or not token:
        return None, f"the engine token cannot be read: {_LOCKED}"
    return token, None


def store_token(token: str) -> Optional[str]:
    """Keep ``token`` in QGIS's authentication database (a *Basic* auth config named
    :data:`TOKEN_AUTH_NAME`, user ``ortholens``, the token as its password, encrypted
    with the master password) and its id in the setting ``ortholens/token_authcfg``;
    an existing config is updated. A plain ``ortholens/token`` setting is removed.

    Returns:
        None when stored, else one sentence saying why not (nothing changed then).
    """
    am = _auth_manager()
    if am is None:
        return ("The token cannot be stored: QGIS's authentication system is disabled. "
                "Set ORTHOLENS_TOKEN instead.")
    from qgis.core import QgsAuthMethodConfig, QgsSettings
    cfg = QgsAuthMethodConfig("Basic")
    cfg.setName(TOKEN_AUTH_NAME)
    cfg.setConfig("username", "ortholens")
    cfg.setConfig("password", token)
    cfg_id = _setting(TOKEN_AUTHCFG_KEY)
    if cfg_id and cfg_id in am.configIds():
        cfg.setId(cfg_id)
        ok = am.updateAuthenticationConfig(cfg)
    else:
        result = am.storeAuthenticationConfig(cfg)
        ok, cfg = result if isinstance(result, tuple) else (result, cfg)
    ok = bool(ok[0] if isinstance(ok, tuple) else ok)
    if not ok or not cfg.id():
        return f"The token was not stored: {_LOCKED}."
    qs = QgsSettings()
    qs.setValue(f"ortholens/{TOKEN_AUTHCFG_KEY}", cfg.id())
    qs.remove("ortholens/token")
    return None


def forget_token() -> None:
    """Delete the token's auth config and setting (and a plain ``ortholens/token``)."""
    from qgis.core import QgsSettings
    cfg_id = _setting(TOKEN_AUTHCFG_KEY)
    am = _auth_manager()
    if cfg_id and am is not None and cfg_id in am.configIds():
        am.removeAuthenticationConfig(cfg_id)
    qs = QgsSettings()
    qs.remove(f"ortholens/{TOKEN_AUTHCFG_KEY}")
    qs.remove("ortholens/token")


def token_is_stored() -> bool:
    """True when a token is kept for the engine (its auth config id, or a plain setting
    not yet moved); nothing is decrypted."""
    return bool(_setting(TOKEN_AUTHCFG_KEY) or _setting("token"))


def migrate_plain_token() -> Optional[str]:
    """Move a plain ``ortholens/token`` setting (an earlier version's) into QGIS's
    authentication database (:func:`store_token`), then remove it.

    Returns:
        None when there was nothing to move or it was moved; else why it stays (the
        database is locked): it is then still used from the plain setting.
    """
    plain = _setting("token")
    if not plain:
        return None
    return store_token(plain)


def overriding_env(key: str) -> Optional[str]:
    """The environment variable that currently overrides the QGIS setting ``key``
    (e.g. ``"ORTHOLENS_REPO"``), or None when the stored value is used."""
    names = {"python": ("ORTHOLENS_BACKEND_PYTHON", "ORTHOLENS_PYTHON")}.get(
        key, (SETTING_KEYS.get(key),))
    return next((n for n in names if n and os.environ.get(n)), None)


def stored_setting(key: str) -> str:
    """The value stored in QGIS settings for ``key`` (``""`` when unset), ignoring the
    environment: what the settings dialog shows and edits (``""`` for ``token``, which
    is never shown: see :func:`token_is_stored`)."""
    return "" if key == "token" else _setting(key) or ""


def save_settings(values: dict) -> None:
    """Store ``{key: value}`` under ``ortholens/<key>`` (QgsSettings); an empty value
    removes the key, so the default applies again. ``token`` is not stored here (see
    :func:`store_token`).

    Raises:
        KeyError: a key that is not in :data:`SETTING_KEYS`, or ``token``.
    """
    from qgis.core import QgsSettings
    qs = QgsSettings()
    for key, value in values.items():
        if key not in SETTING_KEYS or key == "token":
            raise KeyError(f"unknown Ortholens setting {key!r}" if key != "token" else
                           "the token goes to the authentication database: store_token")
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


def idle_exit_min() -> float:
    """Minutes without work after which an engine started by the plugin (or by
    ``qgis_process``) stops: ``ORTHOLENS_IDLE_EXIT_MIN`` or the setting
    ``ortholens/idle_exit_min``, default :data:`DEFAULT_IDLE_EXIT_MIN`; 0: never."""
    try:
        value = float(_value("ORTHOLENS_IDLE_EXIT_MIN", "idle_exit_min")
                      or DEFAULT_IDLE_EXIT_MIN)
    except ValueError:
        return DEFAULT_IDLE_EXIT_MIN
    return max(0.0, value)


def precision() -> str:
    """The graphs an engine started by the plugin runs: ``"fp32"`` when
    ``ORTHOLENS_PRECISION`` or the setting ``ortholens/precision`` says so (any case),
    else ``"auto"`` (the engine's ``--precision``)."""
    value = (_value("ORTHOLENS_PRECISION", "precision") or "auto").strip().lower()
    return "fp32" if value == "fp32" else "auto"


@dataclass
class DaemonSettings:
    """How to reach (and, if needed, start) the inference daemon.

    Attributes:
        endpoint: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5591``.
        python: the daemon's Python interpreter (a venv with torch/onnxruntime), or None
            when no daemon installation was found (then it cannot be auto-started).
        repo: working directory for ``python -m backend`` (holds ``backend/``), or None.
        token: shared secret sent with every request, or None.
        token_source: where ``token`` came from (:data:`TOKEN_FROM_ENV`,
            :data:`TOKEN_FROM_AUTH`), or None.
        token_problem: why a stored token could not be read (a locked authentication
            database), or None.
        idle_exit_min: minutes without work after which an engine started from here
            stops (0: never).
        precision: ``"auto"`` or ``"fp32"``: the graphs an engine started from here
            runs (:func:`precision`).
    """

    endpoint: str
    python: Optional[str]
    repo: Optional[str]
    token: Optional[str]
    token_source: Optional[str] = None
    token_problem: Optional[str] = None
    idle_exit_min: float = DEFAULT_IDLE_EXIT_MIN
    precision: str = "auto"

    def start_args(self) -> List[str]:
        """The daemon options an engine started from here gets: its idle exit and the
        graphs it runs."""
        return ["--idle-exit-s", f"{self.idle_exit_min * 60:g}",
                "--precision", self.precision]

    def host(self) -> Optional[str]:
        """The endpoint's host (brackets of IPv6 removed), or None when the endpoint is
        not ``tcp://host:port``."""
        from protocol.framing import parse_endpoint
        try:
            return parse_endpoint(self.endpoint)[0]
        except ValueError:
            return None

    def is_remote(self) -> bool:
        """True when the engine runs on another computer (the endpoint's host is not a
        loopback address): it cannot read this computer's files, and it is never
        started from here."""
        from protocol.framing import is_loopback
        host = self.host()
        return host is not None and not is_loopback(host)

    def where(self) -> str:
        """Where the engine runs, for the dock and messages: ``"on this computer"`` or
        ``"on 10.0.0.5 (remote)"``."""
        return f"on {self.host()} (remote)" if self.is_remote() else "on this computer"

    def installed_engine(self) -> Optional[str]:
        """The version of the engine package installed in ``python``'s virtual
        environment (by *Set up the engine…* or pip), or None (see
        :func:`.install.locate.installed_version`; nothing is run)."""
        from .install.locate import installed_version
        return installed_version(self.python)

    def can_start(self) -> bool:
        """True when the interpreter exists and either the backend folder exists on disk
        (a checkout) or the engine package is installed in the interpreter's
        environment."""
        if not (self.python and Path(self.python).is_file()):
            return False
        return bool(self.repo and (Path(self.repo) / "backend").is_dir()
                    or self.installed_engine())

    def cwd(self) -> Optional[str]:
        """The engine's working directory: the repository when it holds ``backend/``,
        else the engine folder above the interpreter's environment (``<venv>/..``)."""
        if self.repo and (Path(self.repo) / "backend").is_dir():
            return self.repo
        if self.python:
            return str(Path(self.python).absolute().parent.parent.parent)
        return None

    def start_hint(self) -> str:
        """One sentence saying why the daemon cannot be started, for user messages."""
        has_repo = bool(self.repo and (Path(self.repo) / "backend").is_dir())
        if not has_repo and not self.installed_engine():
            if self.python and Path(self.python).is_file():
                return (f"the engine's Python {self.python} has no Ortholens engine "
                        "installed: press 'Set up the engine…' in the Ortholens panel to "
                        "install or repair it")
            return ("no detection engine is set up: press 'Set up the engine…' in the "
                    "Ortholens panel to install one, or give the address of a running "
                    "engine in Settings…")
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
    if not python and not repo:  # an engine installed by 'Set up the engine…'
        from .install.locate import installed_python
        python = installed_python()
    if not python and repo:
        sub = ("Scripts", "python.exe") if sys.platform == "win32" else ("bin", "python")
        python = str(Path(repo, ".venv", "backend", *sub))
    token, source, problem = os.environ.get("ORTHOLENS_TOKEN") or None, TOKEN_FROM_ENV, None
    if token is None:
        token, problem = stored_token()
        source = TOKEN_FROM_AUTH if token else None
    return DaemonSettings(endpoint=endpoint, python=python, repo=repo, token=token,
                          token_source=source, token_problem=problem,
                          idle_exit_min=idle_exit_min(), precision=precision())


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
