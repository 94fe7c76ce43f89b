"""What the Ortholens Processing algorithms share: the daemon connection, its model
list (asked when a dialog opens, never waited for long), the MODEL parameter, the model
to use, raster files, and feedback plumbing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from protocol.errors import DaemonError, DaemonUnavailable, JobCancelled
from protocol.importing import ImportParams, missing_keys

from ..cards import default_card
from ..connection import connect_daemon, describe_error
from ..detect.plan import file_source_path
from ..settings import daemon_settings
from ..timeleft import TimeLeft

#: How long a model list the daemon sent is reused, seconds: the help text and the
#: model widget of one dialog opening share one request. A failure is never reused.
MODELS_TTL_S = 5.0
#: The longest wait for the model list when a dialog opens, seconds.
MODELS_TIMEOUT_S = 1.0
T = TypeVar("T")

#: What the dialogs say when no daemon answers and the settings can start one.
NOT_RUNNING = "Engine not running: it will be started when the algorithm runs."


@dataclass(frozen=True)
class EngineModels:
    """The daemon's models as the Processing dialogs show them.

    Attributes:
        cards: the ``models`` reply's cards (dicts with ``id``, ``version``, ``classes``
            and ``default``); empty when the daemon did not answer or has no models.
        note: ``""`` when ``cards`` came from the daemon, else one sentence saying why
            no model is listed and what happens when the algorithm runs.
    """

    cards: Tuple[Dict[str, Any], ...] = ()
    note: str = ""

    @property
    def default_id(self) -> Optional[str]:
        """The id of the daemon's default card (``cards.default_card``), or None."""
        card = default_card(list(self.cards))
        return str(card["id"]) if card else None


_models_cache: Optional[Tuple[float, EngineModels]] = None


def engine_models(max_age_s: float = MODELS_TTL_S,
                  timeout_s: float = MODELS_TIMEOUT_S) -> EngineModels:
    """The daemon's model cards, asked now unless a list it sent is younger than
    ``max_age_s`` seconds.

    Never starts the daemon and never waits long: a stopped local daemon refuses the
    connection at once (0.5 s at most), a silent one is given ``timeout_s`` seconds. A
    failure is not remembered: the next call asks again. Never raises: a failure is
    the result's ``note`` (e.g. :data:`NOT_RUNNING`).

    Args:
        max_age_s: reuse a successful answer this recent, seconds (0: always ask).
        timeout_s: how long to wait for the daemon's answer, seconds.
    """
    global _models_cache
    if _models_cache is not None and time.monotonic() - _models_cache[0] < max_age_s:
        return _models_cache[1]
    settings = daemon_settings()
    try:
        cards = tuple(m for m in ask_running_engine(lambda c: c.models(), timeout_s)
                      if isinstance(m, dict) and m.get("id"))
    except ValueError as exc:
        return EngineModels(note=f"The engine endpoint is wrong: {exc}.")
    except DaemonUnavailable:
        return EngineModels(note=_not_running_note(settings))
    except Exception as exc:  # noqa: BLE001 - no zmq, refused token: said in the note
        return EngineModels(note=describe_error(exc, "list its models", settings))
    if not cards:
        return EngineModels(note="The engine has no models installed.")
    result = EngineModels(cards)
    _models_cache = (time.monotonic(), result)
    return result


def ask_running_engine(call: Callable[[Any], T], timeout_s: float) -> T:
    """``call(client)`` with a client of the engine the settings name, if it runs now:
    never starts it, never waits long (a stopped local engine refuses at once, a silent
    one is given ``timeout_s`` seconds).

    Raises:
        ValueError: the endpoint in the settings is wrong.
        DaemonUnavailable: no engine answers.
        Exception: whatever ``call`` raises (a refused token, no pyzmq...).
    """
    from protocol.client import OrtholensClient
    from protocol.framing import is_loopback, parse_endpoint
    from protocol.launcher import port_open
    settings = daemon_settings()
    host, port = parse_endpoint(settings.endpoint)
    if is_loopback(host) and not port_open(host, port):
        raise DaemonUnavailable("connection refused")
    with OrtholensClient(settings.endpoint, token=settings.token,
                         timeout_s=timeout_s) as client:
        return call(client)


def forget_models() -> None:
    """Drop the remembered model list (after a retrain registered a new version)."""
    global _models_cache
    _models_cache = None


def _not_running_note(settings) -> str:
    if settings.can_start():
        return NOT_RUNNING
    return (f"Engine not running at {settings.endpoint}, and it cannot be started from "
            f"here: {settings.start_hint()}.")


def card_text(card: Dict[str, Any], default_id: Optional[str] = None) -> str:
    """One line for a model card, as the dock writes it: ``"pv-unet-efl0 v2.0.0 —
    photovoltaic"``, plus ``" [active]"`` for the active version of a retrained model
    and ``" (default)"`` when its id is ``default_id``."""
    names = [str(c.get("name")) for c in card.get("classes") or []
             if isinstance(c, dict) and c.get("name")]
    lineage = card.get("lineage") or {}
    active = " [active]" if lineage.get("active") and lineage.get("number") else ""
    default = " (default)" if card["id"] == default_id else ""
    return (f"{card['id']} v{card.get('version', '?')}{active} — "
            f"{', '.join(names) or 'no classes'}{default}")


def model_help() -> str:
    """The *Model* paragraph of an algorithm's help: the daemon's models and its
    default, asked when the dialog opens (:func:`engine_models`), or why none are
    listed."""
    models = engine_models()
    head = ("Model: the engine's model to use; a script or qgis_process passes its id "
            "(MODEL=pv-unet-efl0) or the path of an ONNX file in Deepness's format, "
            "which is added first; left empty, the engine's default model (for Detect "
            "objects: the model whose GSD range holds the raster's GSD).")
    if not models.cards:
        return f"{head}\n\n{models.note}"
    default = models.default_id
    lines = "\n".join(f"  {card_text(c, default)}" for c in models.cards)
    return f"{head}\n\nModels of the running engine:\n{lines}"


def model_parameter(name: str) -> QgsProcessingParameterString:
    """The optional MODEL string parameter of the algorithms that take a model.

    Dialogs (single, batch, model designer) show it as a combo box of the daemon's
    models with its default selected (:mod:`.model_widget`); ``qgis_process`` and
    scripts pass a model id or the path of an ONNX file in Deepness's format (added
    first, :func:`given_model`); empty means the daemon's default model.
    """
    param = QgsProcessingParameterString(name, "Model", optional=True)
    param.setHelp("The engine's model (id, version, classes), or the path of an ONNX "
                  "file in Deepness's format, which is added first. Empty: the engine's "
                  "default model.")
    param.setMetadata({"widget_wrapper": {
        "class": f"{__package__}.model_widget.ModelWidgetWrapper"}})
    return param


def with_help(param: QgsProcessingParameterDefinition,
              text: str) -> QgsProcessingParameterDefinition:
    """``param`` with ``text`` as its help (the tooltip of its widget): the long
    explanation that would cut a dialog label off. Returns ``param``."""
    param.setHelp(text)
    return param


def resolve_model(client: Any, model: Optional[str]) -> str:
    """``model`` when given, else the daemon's default model id (its ``models`` reply);
    a path to an ``.onnx`` file (Deepness's format) is imported first and its new id
    returned (:func:`import_onnx`).

    Raises:
        QgsProcessingException: the daemon has no models, or refused the file.
    """
    model = given_model(client, model)
    if model:
        return model
    card = default_card(client.models())
    if card is None:
        raise QgsProcessingException("The daemon has no models installed.")
    return str(card["id"])


def given_model(client: Any, model: Optional[str]) -> Optional[str]:
    """The model id a MODEL parameter names: ``model`` stripped, the id of the model a
    path to an ``.onnx`` file (Deepness's format) becomes once imported
    (:func:`import_onnx`), or None when it is empty (the engine then chooses).

    Raises:
        QgsProcessingException: the engine refused the file.
    """
    model = (model or "").strip()
    if model.lower().endswith(".onnx"):
        return str(import_onnx(client, model)["id"])
    return model or None


def import_onnx(client: Any, path: str, values: Optional[Dict[str, Any]] = None
                ) -> Dict[str, Any]:
    """Import the ONNX file ``path`` (on the engine's computer) with ``values`` for the
    metadata it lacks; returns the new model's card (the engine gives the model it
    already imported from the same file and values).

    Raises:
        QgsProcessingException: the file lacks metadata (the message names the keys and
            the *Add a model (ONNX)* parameters that give them), or another refusal.
    """
    try:
        return client.import_model(ImportParams(path, values or None))
    except DaemonError as exc:
        keys = missing_keys(exc.message) if exc.field == "values" else []
        if not keys:
            raise
        raise QgsProcessingException(
            f"{exc} — run 'Add a model (ONNX)' (ortholens:importmodel) on {path} with "
            f"values for {', '.join(keys)}, then use the model it adds.") from None


def connect(feedback: Optional[QgsProcessingFeedback] = None, timeout_s: float = 10.0):
    """A client of a daemon that answers (started from the settings when needed); the
    caller closes it. The engine settings are the dock's (:func:`~..settings.daemon_settings`:
    endpoint, token from ``ORTHOLENS_TOKEN`` or QGIS's authentication database).

    Raises:
        QgsProcessingException: no daemon and none can be started, or it refused the
            token (says how to fix).
    """
    settings = daemon_settings()
    if feedback is not None:
        token = f", token from {settings.token_source}" if settings.token else ""
        feedback.pushInfo(f"Ortholens engine: {settings.endpoint}, {settings.where()}"
                          f"{token}")
    try:
        return connect_daemon(settings, start=True, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - DaemonUnavailable, ImportError (zmq)
        raise QgsProcessingException(describe_error(exc, settings=settings)) from None


@contextmanager
def daemon_session(feedback: Optional[QgsProcessingFeedback] = None,
                   action: str = "run the detection") -> Iterator[Any]:
    """A connected client (:func:`connect`) for the ``with`` body, closed after it.

    Errors of the body other than ``QgsProcessingException`` and ``JobCancelled`` (the
    algorithm reports a cancel its own way) become a ``QgsProcessingException`` with a
    user message (``connection.describe_error`` with ``action``).
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


def cancelled_text(exc: JobCancelled) -> str:
    """What the log says when the user cancelled a batch job: a cancel, not a failure,
    and how to go on."""
    job = f"batch job {exc.job_id}" if getattr(exc, "job_id", None) else "the batch job"
    return (f"Cancelled as you asked: {job} stopped; the regions it finished are kept. "
            f"'List / resume batch jobs', or Batch jobs… in the Ortholens panel, resumes "
            f"it where it stopped.")


def progress_to(feedback: QgsProcessingFeedback) -> Callable[[float, str], None]:
    """An ``on_progress(fraction, message)`` for ``protocol.client`` job calls that
    drives ``feedback``'s progress bar (percent) and progress text, the message with
    the elapsed time and the time left (:class:`~..timeleft.TimeLeft`)."""
    time_left = TimeLeft()

    def on_progress(fraction: float, message: str) -> None:
        feedback.setProgress(100.0 * fraction)
        time_left.update(fraction)
        if message:
            feedback.setProgressText(time_left.decorate(message))
    return on_progress


__all__ = ["EngineModels", "engine_models", "ask_running_engine", "forget_models",
           "card_text", "model_help", "model_parameter", "with_help", "resolve_model",
           "given_model", "import_onnx", "connect", "daemon_session", "raster_file",
           "cancelled_text", "progress_to", "MODELS_TTL_S", "MODELS_TIMEOUT_S",
           "NOT_RUNNING"]
