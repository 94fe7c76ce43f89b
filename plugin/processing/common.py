"""Helpers shared by the Ortholens Processing algorithms (daemon, models, rasters)."""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

from qgis.core import QgsProcessingException, QgsRasterLayer

from ..settings import daemon_settings

#: Model id offered when the daemon cannot be asked (the shipped model).
DEFAULT_MODEL = "pv-unet-r18"
_MODELS_TTL_S = 60.0
_models_cache: Tuple[float, List[str]] = (0.0, [])


def model_ids(timeout_s: float = 1.0) -> List[str]:
    """Model ids of the daemon if it answers at once (cached 60 s), else ``[]``.

    Never starts the daemon and never waits long: a stopped daemon refuses the
    connection immediately.
    """
    global _models_cache
    stamp, ids = _models_cache
    if time.monotonic() - stamp < _MODELS_TTL_S:
        return list(ids)
    ids = []
    try:
        from ..client import OrtholensClient, _is_loopback, _port_open, parse_endpoint
        s = daemon_settings()
        host, port = parse_endpoint(s.endpoint)
        if not _is_loopback(host) or _port_open(host, port):
            with OrtholensClient(s.endpoint, token=s.token, timeout_s=timeout_s) as c:
                ids = [str(m["id"]) for m in c.models()]
    except Exception:  # noqa: BLE001 - no daemon, no zmq: fall back to the default
        ids = []
    _models_cache = (time.monotonic(), ids)
    return list(ids)


def connect(feedback=None, timeout_s: float = 10.0):
    """A client of a daemon that answers (started from the settings when needed).

    Raises:
        QgsProcessingException: no daemon and none can be started (says how to fix).
    """
    from ..tasks import connect_daemon
    settings = daemon_settings()
    if feedback is not None:
        feedback.pushInfo(f"Ortholens daemon: {settings.endpoint}")
    try:
        return connect_daemon(settings, start=True, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - DaemonUnavailable, ImportError (zmq)
        raise QgsProcessingException(str(exc)) from None


def raster_file(layer: Optional[QgsRasterLayer]) -> str:
    """The file behind a GDAL raster layer (GeoTIFF, VRT, COG...).

    Raises:
        QgsProcessingException: no layer, or a layer the daemon cannot read by path
            (web services: use *Detect in extent*, which renders them).
    """
    from ..tasks import file_source_path
    if layer is None or not layer.isValid():
        raise QgsProcessingException("The input raster cannot be read.")
    path = file_source_path(layer)
    if not path:
        raise QgsProcessingException(
            f"'{layer.name()}' is not a raster file the daemon can read (it is a "
            f"{layer.providerType()} layer). Batch detection reads files (GeoTIFF, VRT, "
            "COG); for web layers use 'Detect in extent' in the Ortholens dock.")
    return path


def describe(exc: BaseException) -> str:
    from ..tasks import describe_error
    return describe_error(exc)
