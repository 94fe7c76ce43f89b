"""What the Ortholens Processing algorithms share: the daemon connection, its model
list, the model to use, raster files, and feedback plumbing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer

from protocol.errors import JobCancelled

from ..detect.plan import file_source_path
from ..engine import connect_daemon, default_card, describe_error
from ..settings import daemon_settings

#: How long the daemon's model list is reused for help texts and labels, seconds.
_MODELS_TTL_S = 60.0
_models_cache: Tuple[float, List[Dict[str, Any]]] = (0.0, [])


def model_cards(timeout_s: float = 1.0) -> List[Dict[str, Any]]:
    """The daemon's model cards if it answers at once (cached 60 s), else ``[]``.

    Never starts the daemon and never waits long: a stopped daemon refuses the
    connection immediately. For help texts and parameter labels only; a run asks the
    daemon again (:func:`resolve_model`).
    """
    global _models_cache
    stamp, cards = _models_cache
    if time.monotonic() - stamp < _MODELS_TTL_S:
        return list(cards)
    cards = []
    try:
        from protocol.client import OrtholensClient, is_loopback, port_open, parse_endpoint
        s = daemon_settings()
        host, port = parse_endpoint(s.endpoint)
        if not is_loopback(host) or port_open(host, port):
            with OrtholensClient(s.endpoint, token=s.token, timeout_s=timeout_s) as c:
                cards = [m for m in c.models() if isinstance(m, dict) and m.get("id")]
    except Exception:  # noqa: BLE001 - no daemon, no zmq: the labels say so
        cards = []
    _models_cache = (time.monotonic(), cards)
    return list(cards)


def model_ids() -> List[str]:
    """Ids of :func:`model_cards`."""
    return [str(c["id"]) for c in model_cards()]


def model_label(what: str) -> str:
    """A parameter label ``what`` plus the daemon's models and its default, when the
    daemon answers now (an empty parameter means the daemon's default model)."""
    cards = model_cards()
    if not cards:
        return f"{what} (default: the daemon's default model)"
    return (f"{what} ({', '.join(str(c['id']) for c in cards)}; default "
            f"{default_card(cards)['id']})")


def resolve_model(client: Any, model: Optional[str]) -> str:
    """``model`` when given, else the daemon's default model id (its ``models`` reply).

    Raises:
        QgsProcessingException: the daemon has no models.
    """
    model = (model or "").strip()
    if model:
        return model
    card = default_card(client.models())
    if card is None:
        raise QgsProcessingException("The daemon has no models installed.")
    return str(card["id"])


def connect(feedback: Optional[QgsProcessingFeedback] = None, timeout_s: float = 10.0):
    """A client of a daemon that answers (started from the settings when needed); the
    caller closes it.

    Raises:
        QgsProcessingException: no daemon and none can be started (says how to fix).
    """
    settings = daemon_settings()
    if feedback is not None:
        feedback.pushInfo(f"Ortholens daemon: {settings.endpoint}")
    try:
        return connect_daemon(settings, start=True, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - DaemonUnavailable, ImportError (zmq)
        raise QgsProcessingException(describe_error(exc)) from None


@contextmanager
def daemon_session(feedback: Optional[QgsProcessingFeedback] = None,
                   action: str = "run the detection") -> Iterator[Any]:
    """A connected client (:func:`connect`) for the ``with`` body, closed after it.

    Errors of the body other than ``QgsProcessingException`` and ``JobCancelled`` (the
    algorithm reports a cancel its own way) become a ``QgsProcessingException`` with a
    user message (``engine.describe_error`` with ``action``).
    """
    client = connect(feedback)
    try:
        yield client
    except (QgsProcessingException, JobCancelled):
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the user
        raise QgsProcessingException(describe_error(exc, action)) from None
    finally:
        client.close()


def raster_file(layer: Optional[QgsRasterLayer]) -> str:
    """The file behind a GDAL raster layer (GeoTIFF, VRT, COG...).

    Raises:
        QgsProcessingException: no layer, or a layer the daemon cannot read by path
            (web services: use *Detect in extent*, which renders them).
    """
    if layer is None or not layer.isValid():
        raise QgsProcessingException("The input raster cannot be read.")
    path = file_source_path(layer)
    if not path:
        raise QgsProcessingException(
            f"'{layer.name()}' is not a raster file the daemon can read (it is a "
            f"{layer.providerType()} layer). Batch detection reads files (GeoTIFF, VRT, "
            "COG); for web layers use 'Detect in extent' in the Ortholens dock.")
    return path


def progress_to(feedback: QgsProcessingFeedback) -> Callable[[float, str], None]:
    """An ``on_progress(fraction, message)`` for ``protocol.client`` job calls that
    drives ``feedback``'s progress bar (percent) and progress text."""
    def on_progress(fraction: float, message: str) -> None:
        feedback.setProgress(100.0 * fraction)
        if message:
            feedback.setProgressText(message)
    return on_progress


__all__ = ["model_cards", "model_ids", "model_label", "resolve_model", "connect",
           "daemon_session", "raster_file", "progress_to"]
