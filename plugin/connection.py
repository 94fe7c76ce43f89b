"""The plugin's connection to the engine (the daemon): connect, starting it when
allowed, and put the engine's errors and warnings into sentences a user can act on.

No QGIS here, so scripts (``tools/demo.py``) use it too. ``protocol.client`` and
``protocol.launcher`` (pyzmq) are imported only when a connection is made, so the plugin
loads where pyzmq is missing and says how to install it when it is needed. Which model
card to use is :mod:`.cards`' business.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from protocol.errors import (
    E_FORBIDDEN,
    E_NOT_FOUND,
    DaemonError,
    DaemonUnavailable,
    InputError,
    ResultLayerError,
)

from .settings import TOKEN_FROM_ENV, DaemonSettings

#: The command that starts the daemon by hand, for messages.
START_BY_HAND = "'ortholens-daemon' (or 'python -m backend') in the engine's environment"


def connect_daemon(settings: DaemonSettings, start: bool = True, timeout_s: float = 5.0):
    """An ``OrtholensClient`` that answered a ping (worker thread: may take seconds).

    Args:
        settings: endpoint, interpreter and folder of the daemon.
        start: start the daemon when it does not answer and ``settings.can_start()``.
        timeout_s: the client's per-request timeout, seconds.

    Returns:
        A connected ``protocol.client.OrtholensClient``; its ``process`` is the daemon's
        ``subprocess.Popen`` when this call started it, else None. The caller closes it.

    Raises:
        DaemonUnavailable: no answer (after the start attempt); the message says how to
            fix it.
        DaemonError: ``forbidden`` with ``field`` ``"token"``: the engine refused the
            token (:func:`describe_error` says where to give it).
        ImportError: pyzmq is missing (see :func:`describe_error`).
    """
    from protocol.client import OrtholensClient
    from protocol.framing import is_loopback, parse_endpoint
    from protocol.launcher import ensure_daemon, port_open

    try:
        if start and settings.can_start():
            return ensure_daemon(settings.endpoint, settings.python, settings.cwd(),
                                 token=settings.token, timeout_s=timeout_s,
                                 args=settings.start_args())
        try:
            host, port = parse_endpoint(settings.endpoint)
        except ValueError as exc:
            raise DaemonUnavailable(str(exc)) from None
        if is_loopback(host) and not port_open(host, port):  # nothing to wait for
            raise DaemonUnavailable("nothing listens there")
        client = OrtholensClient(settings.endpoint, token=settings.token, timeout_s=timeout_s)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        return client
    except DaemonUnavailable as exc:
        if settings.is_remote():
            raise DaemonUnavailable(
                f"The Ortholens engine at {settings.endpoint} (another computer) does "
                f"not answer ({exc}): start it there (ortholens-daemon or python -m "
                f"backend, with --host and its token), or correct the engine's address "
                f"in Ortholens Settings….") from None
        why = settings.start_hint() if start else "it is not running"
        raise DaemonUnavailable(f"The Ortholens daemon at {settings.endpoint} is not "
                                f"reachable ({exc}); {why}. You can start it by hand with "
                                f"{START_BY_HAND}.") from None


def token_refused(settings: DaemonSettings) -> str:
    """The message for an engine that refused the token (a ``forbidden`` answer to a
    ping): which token was sent, where to give the right one.

    Args:
        settings: the settings the request was sent with (``token``,
            ``token_source``, ``token_problem``).
    """
    head = f"The Ortholens engine at {settings.endpoint} refused the request"
    if settings.token and settings.token_source == TOKEN_FROM_ENV:
        return (f"{head}: the token in ORTHOLENS_TOKEN is not the engine's. Set "
                f"ORTHOLENS_TOKEN to the engine's token (it wins over Ortholens "
                f"Settings…).")
    if settings.token:
        return (f"{head}: the token stored in Ortholens Settings… is not the engine's. "
                f"Type the engine's token there (it is kept in QGIS's authentication "
                f"database), or set ORTHOLENS_TOKEN.")
    why = f" ({settings.token_problem})" if settings.token_problem else ""
    return (f"{head}: it needs a token and none was sent{why}. Give the engine's token "
            f"in Ortholens Settings… (it is kept in QGIS's authentication database), or "
            f"set ORTHOLENS_TOKEN.")


def source_unreadable(exc: BaseException) -> bool:
    """True for the daemon's answer that it may not (``forbidden``: outside its
    ``ORTHOLENS_ROOTS``) or cannot (``not_found``: not on its computer) read the raster
    file a request named: the error's ``field`` is ``"source"``. The plugin then sends
    the pixels instead."""
    return (isinstance(exc, DaemonError) and exc.field == "source"
            and exc.code in (E_FORBIDDEN, E_NOT_FOUND))


def daemon_notes(result: Optional[Dict[str, Any]]) -> List[str]:
    """The daemon's ``stats["warnings"]`` of a result (e.g. a raster resampled from a
    GSD far from the model's, an out-of-memory back-off) as sentences for the user:
    capitalised, ending with a full stop."""
    notes = []
    for w in ((result or {}).get("stats") or {}).get("warnings") or []:
        text = str(w).strip()
        if text:
            text = text[0].upper() + text[1:]
            notes.append(text if text.endswith((".", "!", "?")) else text + ".")
    return notes


def describe_error(exc: BaseException, action: str = "run the detection",
                   settings: Optional[DaemonSettings] = None) -> str:
    """A one-paragraph user message for an exception raised while talking to the daemon.

    Args:
        exc: the exception.
        action: what the daemon was asked to do, as in "The daemon could not
            <action>", e.g. ``"retrain"``.
        settings: the settings the request was sent with; a refused token
            (``field`` ``"token"``) is then explained with where the token came from
            (:func:`token_refused`).
    """
    if source_unreadable(exc):
        dock = (", or use Detect in extent in the Ortholens dock, which sends the pixels "
                "of the map view" if action == "run the detection" else "")
        return (f"The daemon could not {action}: it cannot read the raster file ({exc}). "
                f"It reads files on its own computer below its ORTHOLENS_ROOTS: put the "
                f"raster there{dock}.")
    if isinstance(exc, DaemonError) and exc.field == "token":
        return token_refused(settings) if settings is not None else (
            f"The Ortholens engine refused the request ({exc}): give the engine's token "
            f"in Ortholens Settings… (it is kept in QGIS's authentication database), or "
            f"set ORTHOLENS_TOKEN.")
    if isinstance(exc, DaemonError):
        return f"The daemon could not {action} ({exc.code}): {exc}"
    if isinstance(exc, (DaemonUnavailable, InputError, LookupError, ResultLayerError)):
        return str(exc)
    if isinstance(exc, ImportError) and "zmq" in str(exc):
        return ("pyzmq is not installed in QGIS's Python: install python3-zmq (Debian/"
                "Ubuntu) or 'pip install pyzmq' in the QGIS Python, then restart QGIS.")
    return f"Unexpected error: {exc!r} (details in the Ortholens log)."


__all__ = ["connect_daemon", "token_refused", "source_unreadable", "daemon_notes",
           "describe_error", "START_BY_HAND"]
