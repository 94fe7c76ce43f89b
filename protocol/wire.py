"""Ortholens wire protocol: the one source of truth for the plugin and the daemon.

Transport: ZeroMQ. The daemon binds a ROUTER socket (``tcp://127.0.0.1:<port>`` by
default); each client connects a DEALER socket. Every message is *multipart*:

    frame 0          UTF-8 JSON header (an object, at most ``MAX_HEADER_BYTES``)
    frames 1..n      raw, C-contiguous array buffers, described in ``header["arrays"]``

Nothing is ever pickled. Arrays travel as their raw bytes and are rebuilt with
``numpy.frombuffer`` from the ``dtype`` and ``shape`` given in the header, after both
are checked against ``ALLOWED_DTYPES`` and the frame's byte length.

Every header carries ``"v"`` (``PROTOCOL_VERSION``), ``"type"`` (one of
``REQUEST_TYPES`` or ``REPLY_TYPES``) and ``"id"`` (a client-chosen request id, echoed in
every reply to that request). :func:`validate_request` checks a request header field by
field against ``REQUEST_SCHEMAS`` and raises :class:`ProtocolError` with a stable
``code`` and a human-readable message on anything else.

Requests (client -> daemon) and the replies they get:

``ping``      -> ``pong`` {version, protocol, device, device_info, models, jobs};
                 ``device_info``: ``{"kind": "cuda", "name", "memory_gib"}`` or
                 ``{"kind": "cpu", "cores"}``, with ``runtime`` (``onnxruntime`` or
                 ``torch``) and ``torch`` (its version, None when not installed)
``models``    -> ``models`` {models: [model card + {"default": bool}, ...]}; one
                 card is the default for this daemon's device (``backend.models.catalog``)
``detect``    -> ``accepted`` {job_id}, then ``progress`` events
                 {job_id, fraction 0..1, message} and finally one of
                 ``result`` {job_id, crs, features, stats}, ``error`` {job_id, code,
                 message} or ``cancelled`` {job_id}
``status``    -> ``status`` {jobs: [{job_id, state, fraction, message}]}
``cancel``    -> ``cancelled`` {job_id} (the job stops at its next batch boundary); the
                 id of an upload (below) drops that upload
``upload``    -> ``upload`` {upload_id, width, height, count, dtype, window_px, windows,
                 received, complete, expires_s}: opens a *pixel upload*, an image of
                 ``width`` x ``height`` pixels, ``count`` bands of ``dtype``, georeferenced
                 by ``crs`` and ``transform`` (as a ``pixels`` source), that the client
                 then streams window by window; at most ``MAX_UPLOAD_BYTES``
``window``    -> ``upload`` (as above) after storing one window of an upload: ``row``,
                 ``col`` (its top-left pixel) and exactly one array frame (``count``, rows,
                 cols) of the upload's dtype. Windows lie on the grid of the reply's
                 ``window_px`` (``protocol.window.upload_windows``: row and col multiples
                 of ``window_px``, clipped at the right and bottom edges); a window sent again
                 replaces the earlier one. Once every window arrived (``complete``) a
                 ``detect`` may name it as its source ``{"kind": "upload", "upload_id"}``;
                 the detection consumes it (one detection per upload). An upload nobody
                 sends to for ``expires_s`` seconds is dropped. Neither side ever holds the
                 whole image in memory: the daemon writes each window to a file, the
                 client renders one window at a time (``protocol.client``'s
                 ``OrtholensClient.upload``)
``batch``     -> ``accepted`` {job_id}, then ``progress`` events and one ``result``
                 {job_id, crs, features: [], stats: {out_path, layer, count, ...}} /
                 ``error`` / ``cancelled``: a streaming, resumable job over a raster
                 file of any size that writes its polygons to ``out_path`` (GeoPackage)
                 chunk by chunk (see ``backend.daemon.batch_runner``); ``cancel`` stops it, and it
                 stays resumable
``jobs``      -> ``jobs`` {jobs: [{job_id, state, running, resumable, chunks_done,
                 chunks_total, fraction, polygons, out_path, layer, model, source,
                 executor, created, updated, message}]}: batch jobs of the job store,
                 running and resumable ones included (state ``interrupted``: the
                 daemon stopped while it ran)
``resume``    -> like ``batch``: continues a stored batch job where it stopped
``retrain``   -> ``accepted`` {job_id}, ``progress`` events, then ``result`` {job_id,
                 crs: "", features: [], stats, retrain: {accepted, verdict, reason,
                 model, parent, active, scope, in_use, change, pending, before, after,
                 corrections, train, time, rule, ...}} /
                 ``error`` / ``cancelled``: fine-tunes ``model`` on the user's corrected
                 polygons (``features`` + ``crs``, like a result) inside the
                 ``reviewed`` areas, the whole job within ``budget_s`` (progress
                 messages name the phase and the time left); a better model becomes a new
                 version ``<model>@<n>`` (see ``backend.learning.finetune``)
``versions``  -> ``versions`` {model, active, versions: [{id, number, version, parent,
                 created, active, corrections, metrics, decision, verdict, scope,
                 in_use}]}
``activate``  -> ``versions`` (as above) after making ``model`` (an id of a version)
                 the active version of its lineage
``rollback``  -> ``versions`` after making the active version's parent active (for a
                 version in use in its own area: after taking it out of use there)
``keep``      -> ``versions`` + {kept: the new version's id} after making the retrain
                 report's ``pending`` candidate (one the rule did not accept) a version
                 after all; its lineage records the rule's verdict and the user's choice

An ``error`` reply {code, message, job_id?, field?} names in ``field`` the request field
at fault when there is one: ``"source"`` for a raster file outside the folders the
daemon may read (``forbidden``) or missing on its computer (``not_found``), the cases in
which the plugin sends the pixels instead.

A ``result`` feature is ``{"wkt": str, "class": str, "class_id": int, "score": float,
"agreement": float, "area_m2": float, "model": str, "model_version": str}`` (``score``:
mean class probability over the polygon; ``agreement``: fraction of ensemble members
voting for it, 1.0 for a single model); the geometry is in the CRS
given as ``result["crs"]`` (the raster layer's CRS, as WKT), units of that CRS.

This module needs only the standard library (numpy is imported lazily for arrays), so
the QGIS plugin, which never imports torch, and the daemon, which never imports qgis,
both import it.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5591
DEFAULT_HOST = "127.0.0.1"
#: Where clients look for the daemon unless told otherwise.
DEFAULT_ENDPOINT = f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}"

#: Largest accepted JSON header of a request, bytes.
MAX_HEADER_BYTES = 1 << 20
#: Largest JSON header of a reply, bytes: a ``result`` carries its polygons in the
#: header, and a large extent can hold tens of thousands of them.
MAX_REPLY_HEADER_BYTES = 256 << 20
#: Largest accepted array frame, bytes (a 3 x 8192 x 8192 uint8 image is 192 MiB).
MAX_FRAME_BYTES = 256 << 20
#: Most array frames in one message.
MAX_FRAMES = 4
#: Largest accepted extent side, in pixels at the model's GSD (see ``backend.inference.detect``).
MAX_EXTENT_PIXELS = 100_000

ALLOWED_DTYPES = ("uint8", "uint16", "int16", "float32")
#: Bytes per pixel and band of each allowed dtype.
DTYPE_BYTES = {"uint8": 1, "uint16": 2, "int16": 2, "float32": 4}

#: Largest pixel upload (``width * height * count`` times the dtype's bytes), bytes:
#: 1 GiB, e.g. an RGB extent of 18 000 x 18 000 pixels, more than one in-extent
#: detection takes (the daemon's grid limit, 64 Mpx).
MAX_UPLOAD_BYTES = 1 << 30
#: Side of an upload's windows, pixels: the client's default, and the range a client
#: may ask for (a 3 x 4096 x 4096 uint8 window is 48 MiB; the daemon lowers the side
#: when a window of a deeper image would exceed ``MAX_FRAME_BYTES``).
DEFAULT_WINDOW_PX, MIN_WINDOW_PX, MAX_WINDOW_PX = 1024, 64, 4096

REQUEST_TYPES = ("ping", "models", "detect", "status", "cancel", "upload", "window")
REPLY_TYPES = ("pong", "models", "accepted", "progress", "result", "error",
               "status", "cancelled", "upload")

from .errors import E_BAD_REQUEST, E_UNKNOWN_TYPE, E_VERSION, ProtocolError


# ----------------------------------------------------------------------------- fields

def _is_number(x: Any) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # a JSON integer too large for a float
        return False


def _short(x: Any, limit: int = 60) -> str:
    """``repr(x)`` cut to ``limit`` characters, for error messages built from input."""
    try:
        r = repr(x)
    except Exception:  # e.g. RecursionError on a deeply nested value
        r = f"<{type(x).__name__}>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _check_extent(x: Any) -> Optional[str]:
    if (not isinstance(x, list) or len(x) != 4 or not all(_is_number(v) for v in x)):
        return "must be [xmin, ymin, xmax, ymax], four finite numbers"
    if not (x[0] < x[2] and x[1] < x[3]):
        return "is empty: xmin must be < xmax and ymin < ymax"
    return None


def _check_transform(x: Any) -> Optional[str]:
    if not isinstance(x, list) or len(x) != 6 or not all(_is_number(v) for v in x):
        return "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"
    if x[0] * x[4] - x[1] * x[3] == 0:
        return "is singular (zero pixel size)"
    return None


def check_source(x: Any, allow_upload: bool = False) -> Optional[str]:
    """Why ``x`` is not a valid ``source`` object, or None when it is.

    Args:
        x: the decoded ``source`` field.
        allow_upload: also accept kind ``upload`` (``{"kind": "upload", "upload_id"}``,
            a completed pixel upload; only a ``detect`` takes one).
    """
    if not isinstance(x, dict):
        return "must be an object"
    kind = x.get("kind")
    if kind == "upload" and allow_upload:
        if _string(64)(x.get("upload_id")):
            return "of kind 'upload' needs an 'upload_id' string of 1-64 characters"
        extra = set(x) - {"kind", "upload_id"}
        return f"has unknown field(s) {sorted(extra)}" if extra else None
    if kind == "file":
        if not isinstance(x.get("path"), str) or not x["path"] or len(x["path"]) > 4096:
            return "of kind 'file' needs a non-empty 'path' string"
        if "\x00" in x["path"]:
            return "path contains a NUL byte"
        extra = set(x) - {"kind", "path"}
    elif kind == "pixels":
        if not isinstance(x.get("crs"), str) or not x["crs"]:
            return "of kind 'pixels' needs a 'crs' string (WKT or authority id)"
        err = _check_transform(x.get("transform"))
        if err:
            return "transform " + err
        if "nodata" in x and x["nodata"] is not None and not _is_number(x["nodata"]):
            return "nodata must be a number or null"
        extra = set(x) - {"kind", "crs", "transform", "nodata"}
    else:
        return ("kind must be 'file', 'pixels' or 'upload'" if allow_upload
                else "kind must be 'file' or 'pixels'")
    if extra:
        return f"has unknown field(s) {sorted(extra)}"
    return None


def _num_range(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], Optional[str]]:
    def check(x: Any) -> Optional[str]:
        if not _is_number(x):
            return "must be a finite number"
        if (x <= lo if lo_open else x < lo) or x > hi:
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}]"
        return None
    return check


def _int_range(lo: int, hi: int) -> Callable[[Any], Optional[str]]:
    def check(x: Any) -> Optional[str]:
        if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
            return f"must be an integer in [{lo}, {hi}]"
        return None
    return check


def _string(maxlen: int = 256) -> Callable[[Any], Optional[str]]:
    def check(x: Any) -> Optional[str]:
        if not isinstance(x, str) or not x or len(x) > maxlen:
            return f"must be a non-empty string of at most {maxlen} characters"
        return None
    return check


def _bands(x: Any) -> Optional[str]:
    if (not isinstance(x, list) or not 1 <= len(x) <= 16
            or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 1024
                       for b in x)):
        return "must be a list of 1-based band numbers"
    return None


def check_stretch(x: Any) -> Optional[str]:
    """Error text for a ``stretch`` field, or None when valid.

    ``{"mode": "percentile", "low": 2, "high": 98}`` (per band, over the extent; 0 <=
    low < high <= 100), ``{"mode": "minmax", "min": [...], "max": [...]}`` (one finite
    value per band, min < max) or ``{"mode": "none"}`` (values taken as 8-bit).
    """
    if not isinstance(x, dict) or x.get("mode") not in ("percentile", "minmax", "none"):
        return "must be an object with mode 'percentile', 'minmax' or 'none'"
    extra = set(x) - {"mode", "low", "high", "min", "max"}
    if extra:
        return f"has unknown field(s) {sorted(extra)}"
    if x["mode"] == "percentile":
        lo, hi = x.get("low", 2.0), x.get("high", 98.0)
        if not (_is_number(lo) and _is_number(hi) and 0.0 <= lo < hi <= 100.0):
            return "percentiles must satisfy 0 <= low < high <= 100"
    if x["mode"] == "minmax":
        lo, hi = x.get("min"), x.get("max")
        if (not isinstance(lo, list) or not isinstance(hi, list) or not 1 <= len(lo) <= 16
                or len(lo) != len(hi) or not all(_is_number(v) for v in lo + hi)
                or not all(a < b for a, b in zip(lo, hi))):
            return "min and max must be lists of numbers, one per band, with min < max"
    return None


def _boolean(x: Any) -> Optional[str]:
    return None if isinstance(x, bool) else "must be true or false"


def _optional_string(x: Any) -> Optional[str]:
    return None if x is None else _string(20000)(x)


def _token(x: Any) -> Optional[str]:
    return None if isinstance(x, str) and len(x) <= 256 else "must be a string"


_COMMON: Dict[str, Tuple[bool, Callable[[Any], Optional[str]]]] = {
    "v": (True, lambda x: None),
    "type": (True, lambda x: None),
    "id": (True, _string(128)),
    "arrays": (False, lambda x: None),
    "token": (False, _token),
}

#: field -> (required, checker returning an error text or None), per request type.
REQUEST_SCHEMAS: Dict[str, Dict[str, Tuple[bool, Callable[[Any], Optional[str]]]]] = {
    "ping": {},
    "models": {},
    "status": {"job_id": (False, _string(64))},
    "cancel": {"job_id": (True, _string(64))},
    "detect": {
        "source": (True, lambda x: check_source(x, allow_upload=True)),
        "model": (True, _string(128)),
        # Extent to process, in ``extent_crs`` (default: the raster's CRS). Omit or
        # null for the whole raster.
        "extent": (False, lambda x: None if x is None else _check_extent(x)),
        "extent_crs": (False, _optional_string),
        "threshold": (False, _num_range(0.0, 1.0, lo_open=True)),
        "min_area_m2": (False, _num_range(0.0, 1e6)),
        "simplify_m": (False, _num_range(0.0, 100.0)),
        "bands": (False, _bands),
        # How bands other than 8-bit become the model's 0-255 (default: per-band 2-98 %
        # percentiles over the extent for 16-bit and float rasters; see check_stretch).
        "stretch": (False, check_stretch),
        "batch_size": (False, _int_range(1, 256)),
        # Replace near-rectangular polygons (panels, roofs) by their minimum rotated
        # rectangle (default: the model card's ``orthogonalize``, else false).
        "orthogonalize": (False, _boolean),
        # Run the version of the model's lineage taught on this area, where one covers
        # the whole extent (default false: exactly ``model``).
        "by_area": (False, _boolean),
    },
}


# ----------------------------------------------------------------------------- uploads

def _nodata(x: Any) -> Optional[str]:
    return None if x is None or _is_number(x) else "must be a number or null"


REQUEST_SCHEMAS["upload"] = {
    "crs": (True, _string(20000)),               # WKT or an authority id (EPSG:n)
    "transform": (True, _check_transform),       # pixel -> CRS affine (a, b, c, d, e, f)
    "width": (True, _int_range(1, MAX_EXTENT_PIXELS)),   # columns, pixels
    "height": (True, _int_range(1, MAX_EXTENT_PIXELS)),  # rows, pixels
    "count": (True, _int_range(1, 16)),          # bands
    "dtype": (True, lambda x: None if x in ALLOWED_DTYPES
              else f"must be one of {list(ALLOWED_DTYPES)}"),
    "nodata": (False, _nodata),
    # the window side the client would like; the daemon's reply says the one to use
    "window_px": (False, _int_range(MIN_WINDOW_PX, MAX_WINDOW_PX)),
}
REQUEST_SCHEMAS["window"] = {
    "upload_id": (True, _string(64)),
    "row": (True, _int_range(0, MAX_EXTENT_PIXELS - 1)),  # top-left pixel of the window
    "col": (True, _int_range(0, MAX_EXTENT_PIXELS - 1)),
}


def upload_bytes(header: Dict[str, Any]) -> int:
    """Bytes of the image an ``upload`` header describes (``width * height * count`` x
    the dtype's bytes); its fields must have passed their own checks."""
    return (int(header["width"]) * int(header["height"]) * int(header["count"])
            * DTYPE_BYTES[header["dtype"]])


def _check_upload(header: Dict[str, Any]) -> Optional[str]:
    n = upload_bytes(header)
    if n > MAX_UPLOAD_BYTES:
        return (f"the image of {header['width']} x {header['height']} pixels "
                f"({n >> 20} MiB) exceeds the {MAX_UPLOAD_BYTES >> 20} MiB an upload may "
                f"hold; detect in a smaller extent")
    return None


#: Checks of a whole request header after its fields passed: type -> checker.
REQUEST_CHECKS: Dict[str, Callable[[Dict[str, Any]], Optional[str]]] = {
    "upload": _check_upload}


# ----------------------------------------------------------------------------- batch jobs

def _check_file_source(x: Any) -> Optional[str]:
    err = check_source(x)
    if err:
        return err
    if x.get("kind") != "file":
        return ("must be of kind 'file': a batch job reads the raster again when it "
                "resumes")
    return None


def _gpkg_path(x: Any) -> Optional[str]:
    if (not isinstance(x, str) or not x or len(x) > 4096 or "\x00" in x
            or not x.lower().endswith(".gpkg")):
        return "must be the path of a .gpkg file (at most 4096 characters)"
    return None


def _layer_name(x: Any) -> Optional[str]:
    if (not isinstance(x, str) or not 1 <= len(x) <= 63
            or not all(c.isascii() and (c.isalnum() or c in "_-") for c in x)):
        return "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"
    return None


def _bool(x: Any) -> Optional[str]:
    return None if isinstance(x, bool) else "must be true or false"


def _one_of(*values: str) -> Callable[[Any], Optional[str]]:
    def check(x: Any) -> Optional[str]:
        return None if x in values else f"must be one of {list(values)}"
    return check


REQUEST_SCHEMAS["batch"] = {k: v for k, v in REQUEST_SCHEMAS["detect"].items()
                             if k != "by_area"}  # a batch job runs the model it names
REQUEST_SCHEMAS["batch"].update({
    "source": (True, _check_file_source),
    "out_path": (True, _gpkg_path),        # the GeoPackage the job writes
    "layer": (False, _layer_name),         # its table (default "detections")
    "overwrite": (False, _bool),           # replace an existing out_path
    "chunk_px": (False, _int_range(32, 16384)),   # chunk side, model-GSD pixels
    "halo_px": (False, _int_range(0, 8192)),      # first halo around a chunk
    "executor": (False, _one_of("local", "ray")),  # ray: backend.inference.batch.distributed
})
REQUEST_SCHEMAS["jobs"] = {"job_id": (False, _string(64))}
REQUEST_SCHEMAS["resume"] = {"job_id": (True, _string(64))}
REQUEST_TYPES = REQUEST_TYPES + ("batch", "jobs", "resume")
REPLY_TYPES = REPLY_TYPES + ("jobs",)

#: Most corrected features and reviewed areas one ``retrain`` request may carry.
MAX_RETRAIN_FEATURES = 100_000
MAX_REVIEWED_AREAS = 1024


def _check_features(x: Any) -> Optional[str]:
    """``[{"wkt": str, "class": str, "class_id": int?, "area": int?}, ...]``."""
    if not isinstance(x, list) or len(x) > MAX_RETRAIN_FEATURES:
        return f"must be a list of at most {MAX_RETRAIN_FEATURES} features"
    for i, f in enumerate(x):
        if not isinstance(f, dict) or not isinstance(f.get("wkt"), str) or not f["wkt"]:
            return f"[{i}] needs a non-empty 'wkt' string"
        if "class" in f and f["class"] is not None and not isinstance(f["class"], str):
            return f"[{i}] 'class' must be a string"
        for k in ("class_id", "area"):
            if k in f and f[k] is not None and (not isinstance(f[k], int)
                                                 or isinstance(f[k], bool) or f[k] < 0):
                return f"[{i}] '{k}' must be a non-negative integer"
        if f.get("class") is None and f.get("class_id") is None:
            return f"[{i}] needs a 'class' (or 'class_id')"
    return None


def _check_reviewed(x: Any) -> Optional[str]:
    """``[{"extent": [4] | null, "extent_crs": str?, "source": {...}?, "holdout": bool?,
    "array": int?}, ...]``."""
    if not isinstance(x, list) or not 1 <= len(x) <= MAX_REVIEWED_AREAS:
        return f"must be a list of 1 to {MAX_REVIEWED_AREAS} reviewed areas"
    allowed = {"extent", "extent_crs", "source", "holdout", "array"}
    for i, a in enumerate(x):
        if not isinstance(a, dict):
            return f"[{i}] must be an object"
        extra = set(a) - allowed
        if extra:
            return f"[{i}] has unknown field(s) {sorted(extra)}"
        if a.get("extent") is not None:
            err = _check_extent(a["extent"])
            if err:
                return f"[{i}] extent {err}"
        if a.get("extent_crs") is not None and _optional_string(a["extent_crs"]):
            return f"[{i}] extent_crs must be a string"
        if a.get("source") is not None:
            err = check_source(a["source"])
            if err:
                return f"[{i}] source {err}"
        if a.get("holdout") is not None and not isinstance(a["holdout"], bool):
            return f"[{i}] holdout must be true, false or null"
        if "array" in a and _int_range(0, MAX_FRAMES - 1)(a["array"]):
            return f"[{i}] array must be a frame index in [0, {MAX_FRAMES - 1}]"
    return None


REQUEST_SCHEMAS["retrain"] = {
    "model": (True, _string(128)),          # the model (or version) to fine-tune
    "source": (True, check_source),        # the raster (reviewed areas may override)
    "crs": (False, _optional_string),       # CRS of the features (WKT / "EPSG:n")
    "features": (True, _check_features),    # the corrected layer, every polygon in it
    # Areas the user reviewed (default: one, ``extent`` over ``source``); inside them
    # whatever no feature covers is background. Features with ``area`` belong to that
    # area only (tiles that overlap).
    "reviewed": (False, _check_reviewed),
    "extent": (False, lambda x: None if x is None else _check_extent(x)),
    "extent_crs": (False, _optional_string),
    "budget_s": (False, _num_range(1.0, 86400.0)),     # whole job's time, seconds
    "steps": (False, _int_range(1, 1_000_000)),        # at most this many steps
    "seed": (False, _int_range(0, 2 ** 31 - 1)),
    "activate": (False, _boolean),          # make an accepted version active (default)
    "guard": (False, _boolean),             # check the pv01 held-out split (default)
    "holdout_fraction": (False, _num_range(0.05, 0.5)),
    "max_iou_drop": (False, _num_range(0.0, 1.0)),
    "replay_fraction": (False, _num_range(0.0, 0.95)),
    "mistake_weight": (False, _num_range(1.0, 100.0)),
    "invalid_geometry": (False, _one_of("repair", "refuse")),
    "bands": (False, _bands),
    # a version for the reviewed area (default) or for everywhere
    "scope": (False, _one_of("area", "general")),
    "site_margin_m": (False, _num_range(0.0, 10000.0)),  # footprint beyond the extents, m
}
REQUEST_SCHEMAS["versions"] = {"model": (True, _string(128))}
REQUEST_SCHEMAS["activate"] = {"model": (True, _string(128))}
REQUEST_SCHEMAS["rollback"] = {"model": (True, _string(128))}
# keep a candidate the rule did not accept: the retrain report's ``pending``
REQUEST_SCHEMAS["keep"] = {"model": (True, _string(128)), "pending": (True, _string(64)),
                           "note": (False, _string(500))}
REQUEST_TYPES = REQUEST_TYPES + ("retrain", "versions", "activate", "rollback", "keep")
REPLY_TYPES = REPLY_TYPES + ("versions",)

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
        raise ProtocolError(f"protocol version {_short(header['v'])} is not "
                                       f"supported; this side speaks {PROTOCOL_VERSION}", E_VERSION)
    mtype = header.get("type")
    if not isinstance(mtype, str) or mtype not in REQUEST_SCHEMAS:
        raise ProtocolError(f"unknown request type {_short(mtype)}; "
                                            f"expected one of {list(REQUEST_TYPES)}", E_UNKNOWN_TYPE)
    schema = dict(_COMMON)
    schema.update(REQUEST_SCHEMAS[mtype])
    unknown = set(header) - set(schema)
    if unknown:
        raise ProtocolError(f"{mtype}: unknown field(s) "
                                           f"{_short(sorted(unknown), 200)}", E_BAD_REQUEST)
    for name, (required, check) in schema.items():
        if name not in header:
            if required:
                raise ProtocolError(f"{mtype}: missing field '{name}'", E_BAD_REQUEST)
            continue
        err = check(header[name])
        if err:
            raise ProtocolError(f"{mtype}: field '{name}' {err}", E_BAD_REQUEST)
    whole = REQUEST_CHECKS.get(mtype)
    err = whole(header) if whole else None
    if err:
        raise ProtocolError(f"{mtype}: {err}", E_BAD_REQUEST)
    return header


# ----------------------------------------------------------------------------- frames

def _array_meta(arr: Any) -> Dict[str, Any]:
    return {"dtype": str(arr.dtype), "shape": [int(s) for s in arr.shape]}


def encode(header: Dict[str, Any], arrays: Sequence[Any] = (),
           max_header_bytes: int = MAX_HEADER_BYTES) -> List[Any]:
    """Encode a message as ZeroMQ frames.

    Args:
        header: JSON-serialisable dict; ``v`` is filled in when absent.
        arrays: numpy arrays (dtype in ``ALLOWED_DTYPES``); sent zero-copy when
            C-contiguous.
        max_header_bytes: size limit of the encoded header (``MAX_REPLY_HEADER_BYTES``
            for replies).

    Returns:
        ``[header_bytes, buffer, ...]`` ready for ``socket.send_multipart``.

    Raises:
        ProtocolError: ``E_BAD_REQUEST`` if an array has a dtype that is not allowed or
            the encoded header is too large.
    """
    header = dict(header)
    header.setdefault("v", PROTOCOL_VERSION)
    frames: List[Any] = []
    if arrays:
        import numpy as np
        metas = []
        for a in arrays:
            a = np.ascontiguousarray(a)
            if str(a.dtype) not in ALLOWED_DTYPES:
                raise ProtocolError(f"array dtype {a.dtype} not allowed", E_BAD_REQUEST)
            metas.append(_array_meta(a))
            frames.append(memoryview(a).cast("B"))
        header["arrays"] = metas
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(raw) > max_header_bytes:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds "
                                           f"{max_header_bytes}", E_BAD_REQUEST)
    return [raw] + frames


def decode(frames: Sequence[Any], max_header_bytes: int = MAX_HEADER_BYTES
           ) -> Tuple[Dict[str, Any], List[Any]]:
    """Decode ZeroMQ frames into a header and its arrays.

    Args:
        frames: the message parts *after* any ROUTER identity frame; ``bytes``,
            ``memoryview`` or ``zmq.Frame``.
        max_header_bytes: size limit of the header frame (clients decoding replies pass
            ``MAX_REPLY_HEADER_BYTES``).

    Returns:
        ``(header, arrays)``: the JSON header (not yet validated against a request
        schema) and read-only numpy arrays with the declared dtype and shape.

    Raises:
        ProtocolError: ``E_BAD_REQUEST`` for no frames, a header that is not UTF-8 JSON
            object or too large, too many/too large frames, an array description that
            does not match its frame (dtype not allowed, negative dims, byte count).
    """
    if not frames:
        raise ProtocolError("empty message", E_BAD_REQUEST)
    if len(frames) > 1 + MAX_FRAMES:
        raise ProtocolError(f"too many frames ({len(frames)}); at most "
                                           f"{1 + MAX_FRAMES}", E_BAD_REQUEST)
    head = _as_buffer(frames[0])
    if len(head) > max_header_bytes:
        raise ProtocolError(f"header of {len(head)} bytes exceeds "
                                           f"{max_header_bytes}", E_BAD_REQUEST)
    raw = bytes(head)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}", E_BAD_REQUEST) from None
    except RecursionError:
        raise ProtocolError("header JSON is nested too deeply", E_BAD_REQUEST) from None
    if not isinstance(header, dict):
        raise ProtocolError("the header must be a JSON object", E_BAD_REQUEST)
    metas = header.get("arrays", [])
    if not isinstance(metas, list) or len(metas) != len(frames) - 1:
        raise ProtocolError(f"header describes {len(metas) if isinstance(metas, list) else '?'}"
                                           f" array(s) but {len(frames) - 1} frame(s) follow", E_BAD_REQUEST)
    arrays = []
    if metas:
        import numpy as np
        for i, (meta, frame) in enumerate(zip(metas, frames[1:])):
            if (not isinstance(meta, dict) or meta.get("dtype") not in ALLOWED_DTYPES
                    or not isinstance(meta.get("shape"), list)
                    or not 1 <= len(meta["shape"]) <= 4
                    or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 20
                               for s in meta["shape"])):
                raise ProtocolError(f"array {i}: needs dtype in "
                                                   f"{list(ALLOWED_DTYPES)} and a shape of 1-4 positive ints", E_BAD_REQUEST)
            buf = _as_buffer(frame)
            nbytes = np.dtype(meta["dtype"]).itemsize * math.prod(meta["shape"])
            if len(buf) > MAX_FRAME_BYTES or nbytes > MAX_FRAME_BYTES:
                raise ProtocolError(f"array {i}: frame exceeds "
                                                   f"{MAX_FRAME_BYTES} bytes", E_BAD_REQUEST)
            if len(buf) != nbytes:
                raise ProtocolError(f"array {i}: frame has {len(buf)} bytes, "
                                                   f"shape/dtype need {nbytes}", E_BAD_REQUEST)
            arrays.append(np.frombuffer(buf, dtype=meta["dtype"]).reshape(meta["shape"]))
    return header, arrays


def _as_buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", frame)  # zmq.Frame -> memoryview
    return memoryview(buf).cast("B")


def _as_bytes(frame: Any) -> bytes:
    return bytes(_as_buffer(frame))


# ----------------------------------------------------------------------------- helpers

def parse_endpoint(endpoint: str) -> Tuple[str, int]:
    """``"tcp://host:port"`` -> ``(host, port)`` (IPv6 brackets removed).

    Raises:
        ValueError: not a ``tcp://host:port`` endpoint.
    """
    if not endpoint.startswith("tcp://") or ":" not in endpoint[6:]:
        raise ValueError(f"not a tcp://host:port endpoint: {endpoint!r}")
    host, port = endpoint[6:].rsplit(":", 1)
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed): the
    addresses a daemon may serve without a token, and an engine on this computer."""
    import ipaddress
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def new_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def request(mtype: str, **fields: Any) -> Dict[str, Any]:
    """Build a request header of ``mtype`` with a fresh ``id``; validated before return.

    Raises:
        ProtocolError: as :func:`validate_request`.
    """
    header = {"v": PROTOCOL_VERSION, "type": mtype, "id": fields.pop("id", new_id())}
    header.update({k: v for k, v in fields.items() if v is not None})
    return validate_request(header)


def reply(mtype: str, request_id: Optional[str], **fields: Any) -> Dict[str, Any]:
    """Build a reply header of ``mtype`` answering ``request_id``."""
    if mtype not in REPLY_TYPES:
        raise ValueError(f"not a reply type: {mtype}")
    header = {"v": PROTOCOL_VERSION, "type": mtype, "id": request_id}
    header.update(fields)
    return header


def error_reply(request_id: Optional[str], code: str, message: str,
                job_id: Optional[str] = None, field: Optional[str] = None
                ) -> Dict[str, Any]:
    """Build an ``error`` reply; ``job_id`` set when the error ends a job, ``field`` when
    it is about one request field (e.g. ``"source"``)."""
    fields: Dict[str, Any] = {"code": code, "message": message}
    if job_id is not None:
        fields["job_id"] = job_id
    if field is not None:
        fields["field"] = field
    return reply("error", request_id, **fields)


__all__ = ["PROTOCOL_VERSION", "DEFAULT_PORT", "DEFAULT_HOST", "DEFAULT_ENDPOINT", "MAX_HEADER_BYTES",
           "MAX_REPLY_HEADER_BYTES", "MAX_FRAME_BYTES", "MAX_FRAMES", "MAX_EXTENT_PIXELS",
           "ALLOWED_DTYPES", "DTYPE_BYTES", "MAX_UPLOAD_BYTES", "DEFAULT_WINDOW_PX",
           "MIN_WINDOW_PX", "MAX_WINDOW_PX", "upload_bytes",
           "REQUEST_CHECKS", "parse_endpoint", "is_loopback", "REQUEST_TYPES",
           "REPLY_TYPES", "REQUEST_SCHEMAS",
           "MAX_RETRAIN_FEATURES", "MAX_REVIEWED_AREAS", "validate_request", "encode",
           "decode", "check_source", "new_id", "request", "reply", "error_reply"]
