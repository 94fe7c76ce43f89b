"""Message framing: how a request or a reply travels between the plugin and the engine.

Transport: ZeroMQ. The daemon binds a ROUTER socket (``tcp://127.0.0.1:<port>`` by
default); each client connects a DEALER socket. Every message is *multipart*:

    frame 0          UTF-8 JSON header (an object, at most ``MAX_HEADER_BYTES``)
    frames 1..n      raw, C-contiguous array buffers, described in ``header["arrays"]``

Nothing is ever pickled. Arrays travel as their raw bytes and are rebuilt with
``numpy.frombuffer`` from the ``dtype`` and ``shape`` given in the header, after both
are checked against ``ALLOWED_DTYPES`` and the frame's byte length (:func:`decode`).

Every header carries ``"v"`` (``PROTOCOL_VERSION``), ``"type"`` (a request type of
``protocol.schema.REQUEST_TYPES`` or one of ``REPLY_TYPES``) and ``"id"`` (a
client-chosen request id, echoed in every reply to that request). The requests, their
fields and the replies they get: ``docs/protocol.md``; how a request header is checked:
:mod:`protocol.schema`.

Needs only the standard library (numpy is imported lazily for arrays), so the QGIS
plugin, which never imports torch, and the daemon, which never imports qgis, both
import it.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import E_BAD_REQUEST, ProtocolError

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

REPLY_TYPES = ("pong", "models", "accepted", "progress", "result", "error",
               "status", "cancelled", "upload", "jobs", "versions", "imported")


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


def request_header(mtype: str, **fields: Any) -> Dict[str, Any]:
    """A request header of ``mtype``, not yet checked: ``v``, ``type``, ``id`` (``fields``'
    ``id``, else a fresh one) and the ``fields`` that are not None
    (``protocol.schema.request`` checks it too)."""
    header = {"v": PROTOCOL_VERSION, "type": mtype, "id": fields.pop("id", new_id())}
    header.update({k: v for k, v in fields.items() if v is not None})
    return header


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


__all__ = ["PROTOCOL_VERSION", "DEFAULT_PORT", "DEFAULT_HOST", "DEFAULT_ENDPOINT",
           "MAX_HEADER_BYTES", "MAX_REPLY_HEADER_BYTES", "MAX_FRAME_BYTES", "MAX_FRAMES",
           "MAX_EXTENT_PIXELS", "ALLOWED_DTYPES", "DTYPE_BYTES", "MAX_UPLOAD_BYTES",
           "DEFAULT_WINDOW_PX", "MIN_WINDOW_PX", "MAX_WINDOW_PX", "REPLY_TYPES", "encode",
           "decode", "parse_endpoint", "is_loopback", "new_id", "request_header", "reply",
           "error_reply"]
