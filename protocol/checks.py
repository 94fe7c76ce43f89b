"""Checkers of request fields: what a valid value of each field of the protocol is.

A *checker* takes the JSON-decoded value of one request field and returns None when it
is valid, else an error text that completes ``"<type>: field '<name>' ..."`` (the
messages are part of the protocol: clients and tests read them word for word). Where a
field is checked with which checker is declared beside its parameter
(:mod:`protocol.rules`, :mod:`protocol.params`, :mod:`protocol.schema`).

Needs only the standard library.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

from .framing import (ALLOWED_DTYPES, DTYPE_BYTES, MAX_EXTENT_PIXELS, MAX_FRAMES,
                      MAX_UPLOAD_BYTES)
from .results import REVIEW_STATES

#: A field checker: value -> error text, or None when valid.
Checker = Callable[[Any], Optional[str]]

#: Most corrected features and reviewed areas one ``retrain`` request may carry.
MAX_RETRAIN_FEATURES = 100_000
MAX_REVIEWED_AREAS = 1024


# ----------------------------------------------------------------------------- values

def is_number(x: Any) -> bool:
    """True for a finite int or float (``bool`` excluded; an int too large for a float
    is not finite)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # a JSON integer too large for a float
        return False


def short(x: Any, limit: int = 60) -> str:
    """``repr(x)`` cut to ``limit`` characters, for error messages built from input."""
    try:
        r = repr(x)
    except Exception:  # e.g. RecursionError on a deeply nested value
        r = f"<{type(x).__name__}>"
    return r if len(r) <= limit else r[:limit - 3] + "..."


def num_range(lo: float, hi: float, lo_open: bool = False) -> Checker:
    """A checker of a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def check(x: Any) -> Optional[str]:
        if not is_number(x):
            return "must be a finite number"
        if (x <= lo if lo_open else x < lo) or x > hi:
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}]"
        return None
    return check


def int_range(lo: int, hi: int) -> Checker:
    """A checker of an integer (not ``bool``) in ``[lo, hi]``."""
    def check(x: Any) -> Optional[str]:
        if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
            return f"must be an integer in [{lo}, {hi}]"
        return None
    return check


def string(maxlen: int = 256) -> Checker:
    """A checker of a non-empty string of at most ``maxlen`` characters."""
    def check(x: Any) -> Optional[str]:
        if not isinstance(x, str) or not x or len(x) > maxlen:
            return f"must be a non-empty string of at most {maxlen} characters"
        return None
    return check


def one_of(*values: str) -> Checker:
    """A checker of one of ``values``."""
    def check(x: Any) -> Optional[str]:
        return None if x in values else f"must be one of {list(values)}"
    return check


def check_anything(x: Any) -> Optional[str]:
    """Any value (fields checked elsewhere: ``v``, ``type``, ``arrays``)."""
    return None


def check_boolean(x: Any) -> Optional[str]:
    """``true`` or ``false``."""
    return None if isinstance(x, bool) else "must be true or false"


#: A CRS: WKT or an authority id (``EPSG:n``).
check_crs = string(20000)


def check_optional_string(x: Any) -> Optional[str]:
    """Null, or a non-empty string of at most 20 000 characters (a CRS as WKT)."""
    return None if x is None else check_crs(x)


def check_token(x: Any) -> Optional[str]:
    """The daemon's access token: a string of at most 256 characters."""
    return None if isinstance(x, str) and len(x) <= 256 else "must be a string"


def check_nodata(x: Any) -> Optional[str]:
    """A no-data value: a finite number or null."""
    return None if x is None or is_number(x) else "must be a number or null"


def check_dtype(x: Any) -> Optional[str]:
    """One of ``protocol.framing.ALLOWED_DTYPES``."""
    return None if x in ALLOWED_DTYPES else f"must be one of {list(ALLOWED_DTYPES)}"


#: A model id (``<base>`` or a version ``<base>@<n>``).
check_model = string(128)


def check_optional_model(x: Any) -> Optional[str]:
    """Null (the engine chooses by the layer's GSD) or a model id."""
    return None if x is None else check_model(x)
#: A job id, and the id of a pixel upload (32 hex characters when the daemon made it).
check_job_id = check_upload_id = string(64)
#: A pixel row or column of an image, and the width or height of one, pixels.
check_pixel_index = int_range(0, MAX_EXTENT_PIXELS - 1)
check_image_side = int_range(1, MAX_EXTENT_PIXELS)


# ----------------------------------------------------------------------------- geometry

def check_extent(x: Any) -> Optional[str]:
    """``[xmin, ymin, xmax, ymax]``, four finite numbers with xmin < xmax, ymin < ymax."""
    if (not isinstance(x, list) or len(x) != 4 or not all(is_number(v) for v in x)):
        return "must be [xmin, ymin, xmax, ymax], four finite numbers"
    if not (x[0] < x[2] and x[1] < x[3]):
        return "is empty: xmin must be < xmax and ymin < ymax"
    return None


def check_optional_extent(x: Any) -> Optional[str]:
    """Null (the whole raster), or as :func:`check_extent`."""
    return None if x is None else check_extent(x)


def check_transform(x: Any) -> Optional[str]:
    """Six finite numbers ``(a, b, c, d, e, f)`` of a GDAL-order affine, not singular."""
    if not isinstance(x, list) or len(x) != 6 or not all(is_number(v) for v in x):
        return "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"
    if x[0] * x[4] - x[1] * x[3] == 0:
        return "is singular (zero pixel size)"
    return None


def check_bands(x: Any) -> Optional[str]:
    """A list of 1 to 16 band numbers, each 1..1024."""
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
        if not (is_number(lo) and is_number(hi) and 0.0 <= lo < hi <= 100.0):
            return "percentiles must satisfy 0 <= low < high <= 100"
    if x["mode"] == "minmax":
        lo, hi = x.get("min"), x.get("max")
        if (not isinstance(lo, list) or not isinstance(hi, list) or not 1 <= len(lo) <= 16
                or len(lo) != len(hi) or not all(is_number(v) for v in lo + hi)
                or not all(a < b for a, b in zip(lo, hi))):
            return "min and max must be lists of numbers, one per band, with min < max"
    return None


# ----------------------------------------------------------------------------- sources

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
        if check_upload_id(x.get("upload_id")):
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
        err = check_transform(x.get("transform"))
        if err:
            return "transform " + err
        if "nodata" in x and check_nodata(x["nodata"]):
            return "nodata must be a number or null"
        extra = set(x) - {"kind", "crs", "transform", "nodata"}
    else:
        return ("kind must be 'file', 'pixels' or 'upload'" if allow_upload
                else "kind must be 'file' or 'pixels'")
    if extra:
        return f"has unknown field(s) {sorted(extra)}"
    return None


def check_source_or_upload(x: Any) -> Optional[str]:
    """A source of any kind, a completed pixel upload included (a ``detect``'s)."""
    return check_source(x, allow_upload=True)


def check_file_source(x: Any) -> Optional[str]:
    """A source of kind ``file`` (a batch job reads the raster again when it resumes)."""
    err = check_source(x)
    if err:
        return err
    if x.get("kind") != "file":
        return ("must be of kind 'file': a batch job reads the raster again when it "
                "resumes")
    return None


# ----------------------------------------------------------------------------- outputs

def check_gpkg_path(x: Any) -> Optional[str]:
    """The path of a ``.gpkg`` file, at most 4096 characters, without NUL."""
    if (not isinstance(x, str) or not x or len(x) > 4096 or "\x00" in x
            or not x.lower().endswith(".gpkg")):
        return "must be the path of a .gpkg file (at most 4096 characters)"
    return None


def check_layer_name(x: Any) -> Optional[str]:
    """A GeoPackage table name: 1-63 ASCII letters, digits, ``_`` or ``-``."""
    if (not isinstance(x, str) or not 1 <= len(x) <= 63
            or not all(c.isascii() and (c.isalnum() or c in "_-") for c in x)):
        return "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"
    return None


def check_path(x: Any) -> Optional[str]:
    """The path of a file or folder: 1-4096 characters, without NUL."""
    if not isinstance(x, str) or not x or len(x) > 4096 or "\x00" in x:
        return "must be a path of 1-4096 characters without NUL"
    return None


#: A layer of a vector file, and an attribute field of it: any name of 1-255 characters
#: (QGIS and GDAL allow spaces and non-ASCII letters in both).
check_layer_field = string(255)


def check_vector_layer(x: Any) -> Optional[str]:
    """``{"path": str, "layer": str?}``: a vector file the daemon reads (GeoPackage,
    GeoJSON, Shapefile... anything GDAL opens) and, when it holds several, its layer."""
    if not isinstance(x, dict):
        return "must be an object {path, layer?}"
    extra = set(x) - {"path", "layer"}
    if extra:
        return f"has unknown field(s) {sorted(extra)}"
    err = check_path(x.get("path"))
    if err:
        return f"path {err}"
    if x.get("layer") is not None and check_layer_field(x["layer"]):
        return "layer must be a non-empty string of at most 255 characters"
    return None


def check_optional_vector_layer(x: Any) -> Optional[str]:
    """Null (not given), or as :func:`check_vector_layer`."""
    return None if x is None else check_vector_layer(x)


#: The assumptions of an inventory and the range each may take: name -> (low, high,
#: low excluded). Units: m², W per m² of module area, a fraction, degrees.
ASSUMPTION_RANGES = {"module_area_m2": (0.1, 10.0, True),
                     "power_w_m2": (10.0, 500.0, False),
                     "packing_factor": (0.0, 1.0, True),
                     "tilt_deg": (0.0, 75.0, False)}


def check_assumptions(x: Any) -> Optional[str]:
    """``{"module_area_m2"?, "power_w_m2"?, "packing_factor"?, "tilt_deg"?}``, each a
    number in its :data:`ASSUMPTION_RANGES`; one left out takes its default."""
    if not isinstance(x, dict):
        return "must be an object"
    extra = set(x) - set(ASSUMPTION_RANGES)
    if extra:
        return f"has unknown field(s) {sorted(extra)}"
    for name, (lo, hi, lo_open) in ASSUMPTION_RANGES.items():
        err = num_range(lo, hi, lo_open)(x[name]) if name in x else None
        if err:
            return f"{name} {err}"
    return None


# ----------------------------------------------------------------------------- retraining

def check_features(x: Any) -> Optional[str]:
    """``[{"wkt": str, "class": str, "class_id": int?, "area": int?, "review": str?},
    ...]`` (``review``: one of ``protocol.results.REVIEW_STATES``)."""
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
        if f.get("review") is not None and f["review"] not in REVIEW_STATES:
            return f"[{i}] 'review' must be one of {list(REVIEW_STATES)}"
    return None


def check_reviewed(x: Any) -> Optional[str]:
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
            err = check_extent(a["extent"])
            if err:
                return f"[{i}] extent {err}"
        if a.get("extent_crs") is not None and check_optional_string(a["extent_crs"]):
            return f"[{i}] extent_crs must be a string"
        if a.get("source") is not None:
            err = check_source(a["source"])
            if err:
                return f"[{i}] source {err}"
        if a.get("holdout") is not None and not isinstance(a["holdout"], bool):
            return f"[{i}] holdout must be true, false or null"
        if "array" in a and int_range(0, MAX_FRAMES - 1)(a["array"]):
            return f"[{i}] array must be a frame index in [0, {MAX_FRAMES - 1}]"
    return None


# ----------------------------------------------------------------------------- uploads

def upload_bytes(header: Mapping[str, Any]) -> int:
    """Bytes of the image an ``upload`` header describes (``width * height * count`` x
    the dtype's bytes); its fields must have passed their own checks."""
    return (int(header["width"]) * int(header["height"]) * int(header["count"])
            * DTYPE_BYTES[header["dtype"]])


def check_upload(header: Mapping[str, Any]) -> Optional[str]:
    """A whole ``upload`` header: the image fits in ``MAX_UPLOAD_BYTES``."""
    n = upload_bytes(header)
    if n > MAX_UPLOAD_BYTES:
        return (f"the image of {header['width']} x {header['height']} pixels "
                f"({n >> 20} MiB) exceeds the {MAX_UPLOAD_BYTES >> 20} MiB an upload may "
                f"hold; detect in a smaller extent")
    return None
