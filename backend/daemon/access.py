"""Access control of the daemon: who may send requests, and which files they may name.

The daemon binds to the loopback interface by default, where every local user could
connect anyway and may read any file they can. Binding any other address needs a
shared token, and then every request must carry it as ``"token"``; such a daemon also
only reads (and writes) files that resolve inside the allowed roots
(``ORTHOLENS_ROOTS``), so that a remote client cannot read ``/etc/passwd`` or escape
through a symlink.
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Dict, List, Optional, Sequence

import protocol as P
from protocol.framing import is_loopback


def roots_from_env() -> List[str]:
    """Folders of ``ORTHOLENS_ROOTS`` (``os.pathsep``-separated; empty entries dropped)."""
    return [r for r in os.environ.get("ORTHOLENS_ROOTS", "").split(os.pathsep) if r.strip()]


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

    def check_path(self, path: str, field: str = "source",
                   what: str = "the raster path") -> str:
        """``path`` resolved (symlinks, ``..``) when paths are restricted, else as given.

        The resolved path is what the job must use, so that a symlink swapped after the
        check cannot lead it outside the roots.

        Args:
            path: the path a request names.
            field: the request field it came from, named by the error.
            what: what it is, as the error's message says it.

        Raises:
            ProtocolError: ``forbidden`` for a path outside the allowed roots (its
                ``field`` is ``field``).
        """
        if not self.restrict_paths:
            return path
        if path.startswith(("http://", "https://", "/vsi")):
            # fetching URLs for remote clients would let them reach any host the
            # daemon's network can (server-side request forgery)
            raise P.ProtocolError("this daemon reads only files under its allowed "
                                  "folders (ORTHOLENS_ROOTS), not URLs or GDAL virtual "
                                  "paths", P.E_FORBIDDEN, field=field)
        real = os.path.normcase(os.path.realpath(path))
        for root in self.allowed_roots:
            prefix = root if root.endswith(os.sep) else root + os.sep
            if real == root or real.startswith(prefix):
                return real
        raise P.ProtocolError(f"{what} is outside the folders this daemon may "
                              f"read (ORTHOLENS_ROOTS)", P.E_FORBIDDEN, field=field)

    def check_source(self, source: Dict[str, Any]) -> Dict[str, Any]:
        """A wire ``source`` with its file path checked and resolved (pixels pass).

        Raises:
            ProtocolError: ``forbidden`` (see :meth:`check_path`).
        """
        if source.get("kind") != "file":
            return source
        path = self.check_path(source["path"])
        return source if path == source["path"] else dict(source, path=path)

    def check_inventory(self, header: Dict[str, Any]) -> Dict[str, Any]:
        """The paths of an ``inventory`` header checked and resolved: the layers it
        reads and the folder it writes (``out_dir``).

        Returns:
            The fields to replace in the job's request (``detections``, ``buildings``,
            ``zones``, ``earlier``, ``out_dir``, those it carries).

        Raises:
            ProtocolError: ``forbidden`` for a path outside the allowed roots (its
                ``field`` names the request field).
        """
        out: Dict[str, Any] = {}
        for name in ("detections", "buildings", "zones", "earlier"):
            layer = header.get(name)
            if layer is not None:
                out[name] = dict(layer, path=self.check_path(
                    layer["path"], name, f"the {name} layer's path"))
        out["out_dir"] = self.check_path(header["out_dir"], "out_dir",
                                         "the output folder")
        return out


__all__ = ["is_loopback", "roots_from_env", "Access"]
