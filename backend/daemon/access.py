"""Access control of the daemon: who may send requests, and which files they may name.

The daemon binds to the loopback interface by default, where every local user could
connect anyway and may read any file they can. Binding any other address needs a
shared token, and then every request must carry it as ``"token"``; such a daemon also
only reads (and writes) files that resolve inside the allowed roots
(``ORTHOLENS_ROOTS``), so that a remote client cannot read ``/etc/passwd`` or escape
through a symlink.

One rule for every path: :data:`REQUEST_PATHS` names, for each request type, the fields
that hold a path and whether the daemon reads or writes it, and
:meth:`Access.check_request` (called by the server for every request, before its
handler) checks each of them with :meth:`Access.check_path` and hands the handler the
resolved paths. A request type missing from the table is an internal error, never an
unchecked request.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import protocol as P
from protocol.framing import is_loopback

#: How the daemon uses a path: it reads the file, or writes (creates, replaces) it.
READ, WRITE = "read", "write"


@dataclass(frozen=True)
class PathField:
    """One path a request names.

    Attributes:
        field: the request field it is in, named by a ``forbidden`` error.
        at: the keys from the header down to the path; ``"*"`` steps into every item of
            a list. A key that is missing or None there means no path (a pixels
            source, an optional layer not given).
        mode: :data:`READ` or :data:`WRITE`.
        what: what it is, as the error says it; ``{0}`` is the index of the list item.
    """

    field: str
    at: Tuple[str, ...]
    mode: str
    what: str


def _source(field: str = "source") -> PathField:
    return PathField(field, (field, "path"), READ, "the raster path")


def _layer(field: str) -> PathField:
    return PathField(field, (field, "path"), READ, f"the {field} layer's path")


#: Request type -> the paths it names (``protocol.schema.REQUEST_TYPES``, each one).
#: Sources of kind ``pixels`` or ``upload`` carry no ``path``: the daemon's own upload
#: file is not the client's to name.
REQUEST_PATHS: Dict[str, Tuple[PathField, ...]] = {
    "ping": (), "models": (), "status": (), "cancel": (),
    "detect": (_source(),),
    "region": (_source(),),
    "retrain": (_source(),
                PathField("reviewed", ("reviewed", "*", "source", "path"), READ,
                          "the raster of reviewed area {0}")),
    "batch": (_source(),
              PathField("out_path", ("out_path",), WRITE, "the output file")),
    "inventory": (_layer("detections"), _layer("buildings"), _layer("zones"),
                  _layer("earlier"),
                  PathField("out_dir", ("out_dir",), WRITE, "the output folder")),
    "import_model": (PathField("path", ("path",), READ, "the model path"),),
    # pixels only, written to the daemon's own folder
    "upload": (), "window": (),
    # a ``resume`` names a stored job, whose paths are checked again (``batch_service``)
    "jobs": (), "resume": (),
    "versions": (), "activate": (), "rollback": (), "keep": (), "delete": (),
}


def roots_from_env() -> List[str]:
    """Folders of ``ORTHOLENS_ROOTS`` (``os.pathsep``-separated; empty entries dropped)."""
    return [r for r in os.environ.get("ORTHOLENS_ROOTS", "").split(os.pathsep) if r.strip()]


def _replace(node: Any, keys: Tuple[str, ...], fn: Callable[[str, Tuple[int, ...]], str],
             index: Tuple[int, ...] = ()) -> Any:
    """``node`` with the string at ``keys`` (see :attr:`PathField.at`) replaced by
    ``fn(string, list indices on the way)``; the containers on the way are copied, the
    rest is shared. Missing keys, None and values of another type are left as they are
    (the schema checked the request before)."""
    if not keys:
        return fn(node, index) if isinstance(node, str) else node
    key, rest = keys[0], keys[1:]
    if key == "*":
        if not isinstance(node, list):
            return node
        return [_replace(item, rest, fn, index + (i,)) for i, item in enumerate(node)]
    if not isinstance(node, dict) or node.get(key) is None:
        return node
    return dict(node, **{key: _replace(node[key], rest, fn, index)})


class Access:
    """The token and path rules of one daemon.

    Args:
        token: shared secret every request must carry (None: none needed).
        restrict_paths: check file paths against ``allowed_roots``.
        allowed_roots: folders paths must resolve into when restricted.
    """

    def __init__(self, token: Optional[str], restrict_paths: bool,
                 allowed_roots: Sequence[str]):
        self.token = token or None
        self.restrict_paths = bool(restrict_paths)
        self.allowed_roots = [os.path.normcase(os.path.realpath(r)) for r in allowed_roots]

    @classmethod
    def for_bind(cls, host: str, token: Optional[str] = None,
                 restrict_paths: Optional[bool] = None,
                 allowed_roots: Optional[Sequence[str]] = None) -> "Access":
        """The rules of a daemon bound to ``host``.

        Args:
            host: the interface the daemon binds.
            token: the shared secret; required when ``host`` is not loopback.
            restrict_paths: default: restricted exactly when ``host`` is not loopback.
            allowed_roots: default :func:`roots_from_env`.

        Raises:
            ValueError: a non-loopback ``host`` without ``token``.
        """
        loopback = is_loopback(host)
        if not loopback and not token:
            raise ValueError(f"binding {host!r} (not loopback) requires a token "
                             f"(--token or ORTHOLENS_TOKEN)")
        restrict = (not loopback) if restrict_paths is None else restrict_paths
        roots = roots_from_env() if allowed_roots is None else list(allowed_roots)
        return cls(token, restrict, roots)

    def check_token(self, header: Dict[str, Any]) -> None:
        """Accept a request header whose ``token`` matches (in constant time).

        Raises:
            ProtocolError: ``forbidden`` (``field`` ``"token"``) for a missing or wrong
                token.
        """
        if self.token is None:
            return
        given = header.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(
                given.encode("utf-8", "surrogatepass"),
                self.token.encode("utf-8", "surrogatepass")):
            raise P.ProtocolError("missing or wrong token", P.E_FORBIDDEN, field="token")

    def check_request(self, header: Dict[str, Any]) -> Dict[str, Any]:
        """A validated request header with every path it names (:data:`REQUEST_PATHS`)
        checked by :meth:`check_path` and replaced by its resolved form; the header
        itself is not changed (a copy is returned when a path is). Unrestricted: the
        header as it is.

        Raises:
            ProtocolError: ``forbidden`` for the first path outside the allowed roots,
                its ``field`` the request field holding it.
            KeyError: a request type :data:`REQUEST_PATHS` does not know (a new one
                must be added there).
        """
        mtype = header["type"]
        if mtype not in REQUEST_PATHS:
            raise KeyError(f"no path rule for request type {mtype!r} "
                           f"(backend.daemon.access.REQUEST_PATHS)")
        if not self.restrict_paths:
            return header
        for pf in REQUEST_PATHS[mtype]:
            def check(path: str, index: Tuple[int, ...], pf: PathField = pf) -> str:
                return self.check_path(path, pf.field, pf.what.format(*index), pf.mode)
            header = _replace(header, pf.at, check)
        return header

    def check_path(self, path: str, field: str = "source",
                   what: str = "the raster path", mode: str = READ) -> str:
        """``path`` resolved (symlinks, ``..``) when paths are restricted, else as given.

        The resolved path is what the job must use, so that a symlink swapped after the
        check cannot lead it outside the roots. A path to write need not exist yet: it
        resolves to the real path of its nearest existing folder followed by the names
        still to be created (``os.path.realpath``), and that must lie inside the roots;
        an existing file or symlink there resolves like a path to read.

        Args:
            path: the path a request names.
            field: the request field it came from, named by the error.
            what: what it is, as the error's message says it.
            mode: :data:`READ` or :data:`WRITE` (the message says which).

        Raises:
            ProtocolError: ``forbidden`` for a URL, a GDAL virtual path or a path
                outside the allowed roots (its ``field`` is ``field``).
        """
        if not self.restrict_paths:
            return path
        verb = "write" if mode == WRITE else "read"
        if path.startswith(("http://", "https://", "/vsi")):
            # fetching URLs for remote clients would let them reach any host the
            # daemon's network can (server-side request forgery)
            raise P.ProtocolError(f"this daemon {verb}s only files under its allowed "
                                  f"folders (ORTHOLENS_ROOTS), not URLs or GDAL virtual "
                                  f"paths", P.E_FORBIDDEN, field=field)
        real = os.path.normcase(os.path.realpath(path))
        for root in self.allowed_roots:
            prefix = root if root.endswith(os.sep) else root + os.sep
            if real == root or real.startswith(prefix):
                return real
        raise P.ProtocolError(f"{what} is outside the folders this daemon may "
                              f"{verb} (ORTHOLENS_ROOTS)", P.E_FORBIDDEN, field=field)


__all__ = ["is_loopback", "roots_from_env", "Access", "PathField", "REQUEST_PATHS",
           "READ", "WRITE"]
