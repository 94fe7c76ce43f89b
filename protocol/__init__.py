"""Ortholens protocol: what the QGIS plugin and the daemon share.

QGIS-free and torch-free (the standard library, numpy, pyzmq). Shipped inside the
plugin zip and beside the backend alike. The requests and replies: ``docs/protocol.md``.

Modules:
    errors      the one exception family and its stable error codes
    framing     message framing (multipart JSON header + raw array frames), limits,
                endpoints, ids, reply builders
    checks      the checker of each kind of request field (value -> error text)
    rules       how a parameter declares its field's checker, and a header is checked
    params      typed request parameters: :class:`DetectParams`, :class:`BatchParams`,
                :class:`RetrainParams`, :class:`PixelUpload`, each field with its rule
    inventory   typed parameters of a solar inventory (:class:`InventoryParams`,
                :class:`Assumptions`, :class:`VectorLayer`)
    version_params  typed parameters of ``versions`` (with an extent) and ``delete``
    schema      the schema of every request type, :func:`validate_request`,
                :func:`request`
    window      :class:`~protocol.window.Window`, a rectangle of pixels of a grid, and the
                windows a pixel upload travels in
    results     the attribute schema of a result polygon, shared by layers and GeoPackages
    paths       where a user's engine and model versions live (both sides)
    metrics     pixel IoU and object precision/recall/F1: how both sides score a result
    connection  :class:`~protocol.connection.DaemonConnection`, a DEALER socket to the
                daemon: requests out, their replies in (pyzmq)
    uploading   :class:`~protocol.uploading.PixelUploads`: an image streamed window by
                window, a few windows in flight
    client      :class:`~protocol.client.OrtholensClient` (detect, upload, batch, retrain,
                inventory and version requests; liveness checks)
    launcher    starting a daemon on this computer (``start_daemon``, ``ensure_daemon``),
                its default interpreter and log folder

``import protocol as P`` gives the names of ``errors``, ``framing``, ``schema`` and
``window``, and those of ``checks`` that callers use (:func:`check_source`,
:func:`upload_bytes`, the retrain limits).
"""

from .checks import MAX_RETRAIN_FEATURES, MAX_REVIEWED_AREAS, check_source, upload_bytes
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .framing import *  # noqa: F401,F403
from .framing import __all__ as _framing_all
from .schema import *  # noqa: F401,F403
from .schema import __all__ as _schema_all
from .window import *  # noqa: F401,F403
from .window import __all__ as _window_all

__all__ = (list(_errors_all) + list(_framing_all) + list(_schema_all) + list(_window_all)
           + ["MAX_RETRAIN_FEATURES", "MAX_REVIEWED_AREAS", "check_source", "upload_bytes"])
