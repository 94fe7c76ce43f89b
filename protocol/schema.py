"""Request schemas: which fields each request type takes, and :func:`validate_request`.

The rules of ``detect``, ``upload``, ``batch``, ``retrain``, ``inventory``,
``versions``, ``delete`` and ``import_model`` are those their parameter classes
declare beside each field (:mod:`protocol.params`, :mod:`protocol.inventory`,
:mod:`protocol.version_params`, :mod:`protocol.importing`, read with
``protocol.rules.request_rules``); the requests without a parameter class declare
theirs here. :func:`validate_request` checks a decoded request header field by field
and raises :class:`~protocol.errors.ProtocolError` with a stable ``code`` and a
human-readable message on anything else; :func:`request` builds a checked header. The
requests and the replies they get: ``docs/protocol.md``.

Needs only the standard library.
"""

from __future__ import annotations

from typing import Any, Dict

from .checks import check_job_id, check_model, check_pixel_index, check_upload_id, short, string
from .errors import E_BAD_REQUEST, E_UNKNOWN_TYPE, E_VERSION, ProtocolError
from .framing import PROTOCOL_VERSION, request_header
from .importing import ImportParams
from .inventory import InventoryParams
from .params import BatchParams, DetectParams, PixelUpload, RetrainParams
from .review import RegionParams
from .rules import HeaderCheck, Rule, check_fields, request_rules
from .version_params import DeleteParams, VersionsParams

_JOB = {"job_id": Rule(True, check_job_id)}
_ANY_JOB = {"job_id": Rule(False, check_job_id)}  # default: every job
_MODEL = {"model": Rule(True, check_model)}

#: Request type -> field -> :class:`~protocol.rules.Rule` (the fields every request
#: carries, ``protocol.rules.COMMON_RULES``, come on top), in the order of
#: :data:`REQUEST_TYPES`.
REQUEST_SCHEMAS: Dict[str, Dict[str, Rule]] = {
    "ping": {},
    "models": {},
    "detect": request_rules(DetectParams),
    "status": _ANY_JOB,
    "cancel": _JOB,
    "upload": request_rules(PixelUpload),
    # one window of an upload: its top-left pixel, the pixels as the one array frame
    "window": {"upload_id": Rule(True, check_upload_id),
               "row": Rule(True, check_pixel_index), "col": Rule(True, check_pixel_index)},
    "batch": request_rules(BatchParams),
    "jobs": _ANY_JOB,
    "resume": _JOB,
    "retrain": request_rules(RetrainParams),
    "versions": request_rules(VersionsParams),
    "activate": _MODEL,
    "rollback": _MODEL,
    # keep a candidate the acceptance rule did not accept: the retrain report's
    # ``pending``
    "keep": {**_MODEL, "pending": Rule(True, string(64)), "note": Rule(False, string(500))},
    "inventory": request_rules(InventoryParams),
    "delete": request_rules(DeleteParams),
    # make an ONNX file on the engine's computer one of its models (bring your own
    # model); the reply ``imported`` carries the new card
    "import_model": request_rules(ImportParams),
    "region": request_rules(RegionParams),
}
REQUEST_TYPES = tuple(REQUEST_SCHEMAS)

#: Checks of a whole request header after its fields passed: type -> check.
REQUEST_CHECKS: Dict[str, HeaderCheck] = {
    cls.TYPE: cls.HEADER_CHECK
    for cls in (DetectParams, PixelUpload, BatchParams, RetrainParams, InventoryParams)
    if cls.HEADER_CHECK is not None}


def validate_request(header: Any) -> Dict[str, Any]:
    """Check a decoded request header and return it unchanged.

    Args:
        header: the JSON-decoded frame 0 of a request.

    Returns:
        The same dict, known to match ``REQUEST_SCHEMAS[header["type"]]``.

    Raises:
        ProtocolError: ``E_BAD_REQUEST`` for a non-object, missing/unknown/ill-typed
            fields; ``E_VERSION`` for another protocol version; ``E_UNKNOWN_TYPE`` for a
            type that is not a request.
    """
    if not isinstance(header, dict):
        raise ProtocolError("the header must be a JSON object", E_BAD_REQUEST)
    if "v" not in header:
        raise ProtocolError("the header has no protocol version 'v'", E_BAD_REQUEST)
    if (not isinstance(header["v"], int) or isinstance(header["v"], bool)
            or header["v"] != PROTOCOL_VERSION):
        raise ProtocolError(f"protocol version {short(header['v'])} is not "
                            f"supported; this side speaks {PROTOCOL_VERSION}", E_VERSION)
    mtype = header.get("type")
    if not isinstance(mtype, str) or mtype not in REQUEST_SCHEMAS:
        raise ProtocolError(f"unknown request type {short(mtype)}; "
                            f"expected one of {list(REQUEST_TYPES)}", E_UNKNOWN_TYPE)
    check_fields(mtype, header, REQUEST_SCHEMAS[mtype], REQUEST_CHECKS.get(mtype))
    return header


def request(mtype: str, **fields: Any) -> Dict[str, Any]:
    """Build a request header of ``mtype`` with a fresh ``id`` (or ``fields``' ``id``)
    and the ``fields`` that are not None; validated before return.

    Raises:
        ProtocolError: as :func:`validate_request`.
    """
    return validate_request(request_header(mtype, **fields))


__all__ = ["REQUEST_TYPES", "REQUEST_SCHEMAS", "REQUEST_CHECKS", "validate_request",
           "request"]
