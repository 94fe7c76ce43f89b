"""The one exception family of Ortholens, and its stable error codes.

Every error that the daemon, the client or the plugin raises on purpose is an
:class:`OrtholensError`: it carries ``message`` (a sentence a user can read, also
``str(exc)``) and ``code`` (one of the ``E_*`` strings below, stable across versions so
that clients may branch on it). Each subclass has a default code and takes the same
arguments, ``(message, code=None)``, like ``rasterio.errors``. An error about one request
field also names it as ``field`` (keyword-only; e.g. ``"source"`` for a raster file the
daemon may not or cannot read), and an ``error`` reply carries it, so that a client can
react to it without parsing the message (the plugin then sends the pixels instead).

The daemon turns an error that ends a job into an ``error`` reply with the same code;
the client turns that reply back into a :class:`DaemonError` with that code. Codes
that never travel as an ``error`` reply (``cancelled``, ``unavailable``) describe what
happened on the caller's side.

Needs only the standard library.
"""

from __future__ import annotations

from typing import Optional

# Error codes sent in ``error`` replies (see ``docs/protocol.md``).
E_BAD_REQUEST = "bad_request"          # malformed JSON / frames / fields
E_VERSION = "unsupported_version"      # header["v"] != PROTOCOL_VERSION
E_UNKNOWN_TYPE = "unknown_type"        # header["type"] not a request type
E_NOT_FOUND = "not_found"              # unknown model / job / file
E_INVALID_INPUT = "invalid_input"      # raster / extent / CRS cannot be used
E_FORBIDDEN = "forbidden"              # path outside allowed roots, bad token
E_BUSY = "busy"                        # queue full, device out of memory
E_INTERNAL = "internal"                # a bug on the daemon side

#: Every code an ``error`` reply may carry.
ERROR_CODES = (E_BAD_REQUEST, E_VERSION, E_UNKNOWN_TYPE, E_NOT_FOUND, E_INVALID_INPUT,
               E_FORBIDDEN, E_BUSY, E_INTERNAL)

# Codes of what happens on the caller's side; never sent as an ``error`` reply.
E_CANCELLED = "cancelled"              # the job was cancelled (a ``cancelled`` reply)
E_UNAVAILABLE = "unavailable"          # no daemon answered in time
E_SETUP = "setup_failed"               # the plugin could not install its engine


class OrtholensError(Exception):
    """Base of every Ortholens error.

    Args:
        message: a sentence a user can read; ``str(exc)`` returns it.
        code: one of the ``E_*`` codes; default: the class's :attr:`default_code`.
        field: the request field the error is about (e.g. ``"source"``), or None.

    Attributes:
        message, code, field: as given.
    """

    default_code = E_INTERNAL

    def __init__(self, message: str, code: Optional[str] = None, *,
                 field: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field

    def __str__(self) -> str:
        return self.message


class ProtocolError(OrtholensError, ValueError):
    """A message that breaks the protocol (``bad_request``, ``unsupported_version``,
    ``unknown_type``)."""

    default_code = E_BAD_REQUEST


class InputError(OrtholensError, ValueError):
    """Input that cannot be used: a raster, extent, CRS, band mapping, layer or
    correction (``invalid_input``; ``not_found`` for a missing file)."""

    default_code = E_INVALID_INPUT


class CorrectionsError(InputError):
    """Corrected features or reviewed areas a retrain cannot use (``invalid_input``)."""


class ModelNotFound(OrtholensError, LookupError):
    """No model, weights or version of that id (``not_found``)."""

    default_code = E_NOT_FOUND


class ModelCorrupt(OrtholensError, ValueError):
    """A model card or weight file that cannot be read (``invalid_input``)."""

    default_code = E_INVALID_INPUT


class VersionError(OrtholensError, LookupError):
    """Unknown version, nothing to roll back, or a model that cannot have versions
    (``not_found``)."""

    default_code = E_NOT_FOUND


class JobError(OrtholensError):
    """A job (detect, batch or retrain) that cannot run or failed; the code says why."""


class JobCancelled(OrtholensError):
    """A job that stopped because it was cancelled (``cancelled``).

    Args:
        message: default "the job was cancelled".
        code: default ``cancelled``.
        job_id: the job, when known.
    """

    default_code = E_CANCELLED

    def __init__(self, message: str = "the job was cancelled", code: Optional[str] = None,
                 job_id: Optional[str] = None):
        super().__init__(message, code)
        self.job_id = job_id


class DaemonUnavailable(OrtholensError):
    """The daemon did not answer in time, is not running, or could not be started
    (``unavailable``)."""

    default_code = E_UNAVAILABLE


class DaemonError(OrtholensError):
    """The daemon answered with an ``error`` reply; ``code`` is the reply's.

    Args:
        message: the reply's message.
        code: the reply's code.
        job_id: the job the error ended, or None for a rejected request.
        field: the reply's ``field``: the request field at fault (``"source"``), or None.
    """

    def __init__(self, message: str, code: Optional[str] = None,
                 job_id: Optional[str] = None, field: Optional[str] = None):
        super().__init__(message, code, field=field)
        self.job_id = job_id


class ResultLayerError(OrtholensError):
    """A result layer that cannot be written or opened (``invalid_input``): the
    message says why and where."""

    default_code = E_INVALID_INPUT


class EngineSetupError(OrtholensError):
    """The plugin could not install, repair or check its engine (``setup_failed``).

    Args:
        message: what failed, a sentence or two a user can act on.
        code: default ``setup_failed``.
        package: the package pip could not install (e.g. ``onnxruntime==1.32.0``), when
            known.
        command: the command that failed, as the user would type it to retry.
        log_path: the setup's full log.
    """

    default_code = E_SETUP

    def __init__(self, message: str, code: Optional[str] = None, *,
                 package: Optional[str] = None, command: Optional[str] = None,
                 log_path: Optional[str] = None):
        super().__init__(message, code)
        self.package = package
        self.command = command
        self.log_path = log_path


__all__ = ["E_BAD_REQUEST", "E_VERSION", "E_UNKNOWN_TYPE", "E_NOT_FOUND",
           "E_INVALID_INPUT", "E_FORBIDDEN", "E_BUSY", "E_INTERNAL", "ERROR_CODES",
           "E_CANCELLED", "E_UNAVAILABLE", "E_SETUP", "OrtholensError", "ProtocolError", "InputError",
           "CorrectionsError", "ModelNotFound", "ModelCorrupt", "VersionError", "JobError",
           "JobCancelled", "DaemonUnavailable", "DaemonError", "ResultLayerError", "EngineSetupError"]
