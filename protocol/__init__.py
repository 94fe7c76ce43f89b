"""Ortholens protocol: what the QGIS plugin and the daemon share.

QGIS-free and torch-free (the standard library, numpy, pyzmq). Shipped inside the
plugin zip and beside the backend alike.

Modules:
    errors    the one exception family and its stable error codes
    wire      message framing, request schemas and validation (``import protocol as P``
              gives its names and those of ``errors``)
    params    typed request parameters: :class:`DetectParams`, :class:`BatchParams`,
              :class:`RetrainParams`
    results   the attribute schema of a result polygon, shared by layers and GeoPackages
    paths     where a user's engine and model versions live (both sides)
    metrics   pixel IoU and object precision/recall/F1: how both sides score a result
    window    :class:`~protocol.window.Window`, a rectangle of pixels of a grid, and the
              windows a pixel upload travels in
    client    :class:`~protocol.client.OrtholensClient` (detect, batch, retrain and
              version requests; liveness checks), daemon start-up (pyzmq)
"""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .wire import *  # noqa: F401,F403
from .wire import __all__ as _wire_all
from .window import *  # noqa: F401,F403
from .window import __all__ as _window_all

__all__ = list(_errors_all) + list(_wire_all) + list(_window_all)
