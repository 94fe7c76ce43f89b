"""Pixel uploads: images a client streams to the daemon window by window, for a
detection of pixels the daemon cannot read itself (a layer on the client's computer,
a web layer the client rendered).

An ``upload`` request opens one (:meth:`UploadStore.open`): an uncompressed, tiled,
sparse GeoTIFF in the daemon's upload folder, georeferenced as the request says. Each
``window`` request writes one window into it (:meth:`UploadStore.write`), so the daemon
holds one window in memory, never the image. Once every window of the grid
(``protocol.window.upload_windows``) arrived the file is closed and a ``detect`` may name
the upload as its source: :meth:`UploadStore.claim` hands that job the file's path,
and the file is deleted when the job ends (:meth:`UploadStore.release_job`). Uploads no
client sent to for ``idle_s`` seconds, and those whose job ended, are deleted by
:meth:`UploadStore.prune`; :meth:`UploadStore.close` deletes the folder when the daemon
stops.

Limits: one upload at most ``protocol.framing.MAX_UPLOAD_BYTES`` (checked by the request
schema), all open uploads together at most ``max_bytes`` and ``max_uploads``; more get
``busy``. The store is thread-safe (the main loop writes, job threads release).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

import numpy as np

import protocol as P
from protocol.errors import InputError, JobError, ProtocolError
from protocol.window import Window, upload_window_at, upload_windows

log = logging.getLogger("ortholens.uploads")

#: Default limits: bytes of all open uploads, number of open uploads, idle seconds.
DEFAULT_MAX_BYTES, DEFAULT_MAX_UPLOADS, DEFAULT_IDLE_S = 2 << 30, 64, 600.0


@dataclass
class Upload:
    """One pixel upload and its state.

    Attributes:
        upload_id: 32 hex characters (unguessable: it is the upload's only key).
        path: the GeoTIFF it is written to.
        width, height, count, dtype: the image (pixels, bands, numpy dtype name).
        window_px: side of its windows, pixels.
        nbytes: size of the image, bytes.
        windows: every window of its grid (``upload_windows``).
        received: the windows written so far.
        seen: ``time.monotonic()`` of its last request.
        job_id: the detection that claimed it, or None.
        writer: the open rasterio dataset while windows arrive, else None.
    """

    upload_id: str
    path: str
    width: int
    height: int
    count: int
    dtype: str
    window_px: int
    nbytes: int
    windows: Set[Window]
    received: Set[Window] = field(default_factory=set)
    seen: float = field(default_factory=time.monotonic)
    job_id: Optional[str] = None
    writer: Any = None

    @property
    def complete(self) -> bool:
        """True once every window arrived."""
        return len(self.received) == len(self.windows)

    def public(self, idle_s: float) -> Dict[str, Any]:
        """The fields of an ``upload`` reply."""
        return {"upload_id": self.upload_id, "width": self.width, "height": self.height,
                "count": self.count, "dtype": self.dtype, "window_px": self.window_px,
                "windows": len(self.windows), "received": len(self.received),
                "complete": self.complete, "expires_s": idle_s}


def window_side(requested: Optional[int], count: int, dtype: str) -> int:
    """The window side of an upload, pixels: ``requested`` (default
    ``protocol.framing.DEFAULT_WINDOW_PX``), lowered so that one window's frame stays within
    ``protocol.framing.MAX_FRAME_BYTES``; a multiple of 16 (GeoTIFF blocks)."""
    side = int(requested or P.DEFAULT_WINDOW_PX)
    fits = int(math.isqrt(P.MAX_FRAME_BYTES // (count * P.DTYPE_BYTES[dtype])))
    side = min(side, fits, P.MAX_WINDOW_PX)
    return max(P.MIN_WINDOW_PX, side - side % 16)


class UploadStore:
    """The daemon's pixel uploads.

    Args:
        folder: where upload files go; default: a private temporary folder made at the
            first upload (``ortholens-uploads-*``, mode 0700), deleted by :meth:`close`.
        max_bytes: most bytes of all open uploads together.
        max_uploads: most open uploads.
        idle_s: an upload without a request for this long, seconds, is deleted (unless
            a running detection uses it).
    """

    def __init__(self, folder: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_uploads: int = DEFAULT_MAX_UPLOADS, idle_s: float = DEFAULT_IDLE_S):
        self._folder = folder
        self._own_folder = folder is None
        self.max_bytes = int(max_bytes)
        self.max_uploads = int(max_uploads)
        self.idle_s = float(idle_s)
        self._uploads: Dict[str, Upload] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._uploads)

    def _dir(self) -> str:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="ortholens-uploads-")
        os.makedirs(self._folder, mode=0o700, exist_ok=True)
        return self._folder

    def open(self, header: Dict[str, Any]) -> Dict[str, Any]:
        """Open an upload for a validated ``upload`` request header.

        Returns:
            The ``upload`` reply's fields (``upload_id``, ``window_px``, ...).

        Raises:
            JobError: ``busy`` when the open uploads would exceed ``max_bytes`` or
                ``max_uploads``.
            InputError: ``invalid_input`` for a CRS the daemon cannot read.
        """
        import rasterio
        from affine import Affine
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        nbytes = P.upload_bytes(header)
        try:
            crs = CRS.from_user_input(header["crs"])
        except CRSError as exc:
            raise InputError(f"upload: invalid CRS: {exc}", field="crs") from None
        count, dtype = int(header["count"]), str(header["dtype"])
        side = window_side(header.get("window_px"), count, dtype)
        with self._lock:
            held = sum(u.nbytes for u in self._uploads.values())
            if len(self._uploads) >= self.max_uploads or held + nbytes > self.max_bytes:
                raise JobError(f"the daemon already holds {len(self._uploads)} pixel "
                               f"uploads ({held >> 20} MiB); try again later", P.E_BUSY)
            upload_id = uuid.uuid4().hex
            path = os.path.join(self._dir(), f"{upload_id}.tif")
            width, height = int(header["width"]), int(header["height"])
            block = 256 if min(width, height) >= 256 else 16 * max(1, min(width, height) // 16)
            opts: Dict[str, Any] = dict(
                driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                crs=crs, transform=Affine(*[float(v) for v in header["transform"]]),
                nodata=header.get("nodata"), SPARSE_OK=True, BIGTIFF="IF_SAFER")
            if min(width, height) >= 16:
                opts.update(tiled=True, blockxsize=block, blockysize=block)
            if count == 3 and dtype == "uint8":
                opts["photometric"] = "RGB"
            writer = rasterio.open(path, "w", **opts)
            up = Upload(upload_id, path, width, height, count, dtype, side, nbytes,
                        set(upload_windows(width, height, side)), writer=writer)
            self._uploads[upload_id] = up
            log.info("upload %s opened: %d x %d x %d %s, %d windows of %d px", upload_id,
                     width, height, count, dtype, len(up.windows), side)
            return up.public(self.idle_s)

    def _get(self, upload_id: str, field_name: str = "upload_id") -> Upload:
        up = self._uploads.get(upload_id)
        if up is None:
            raise JobError(f"no pixel upload {upload_id[:64]} (it was used, cancelled, or "
                           f"expired after {self.idle_s:g} s without a window)",
                           P.E_NOT_FOUND, field=field_name)
        return up

    def write(self, header: Dict[str, Any], arrays: List[np.ndarray]) -> Dict[str, Any]:
        """Write the window of a validated ``window`` request.

        Args:
            header: ``{upload_id, row, col}``.
            arrays: its array frames: exactly one, (count, rows, cols) of the upload's
                dtype, the window of ``protocol.window.upload_windows`` at (row, col).

        Returns:
            The ``upload`` reply's fields (``received``, ``complete``...).

        Raises:
            JobError: ``not_found`` for an unknown upload; ``bad_request`` (a
                ``ProtocolError``) for a window off the grid, a missing or extra array,
                or one of another shape or dtype, or a window for a claimed upload.
        """
        from rasterio.windows import Window as RasterioWindow

        row, col = int(header["row"]), int(header["col"])
        with self._lock:
            up = self._get(header["upload_id"])
            up.seen = time.monotonic()
            if up.job_id is not None or up.writer is None:
                raise ProtocolError(f"upload {up.upload_id} is complete; it takes no more "
                                    f"windows")
            window = upload_window_at(up.width, up.height, up.window_px, row, col)
            if window is None:
                raise ProtocolError(f"window: no window of the upload's {up.window_px}-pixel "
                                    f"grid starts at row {row}, col {col}")
            want = (up.count,) + window.shape
            if len(arrays) != 1:
                raise ProtocolError(f"window: needs exactly one array frame, got "
                                    f"{len(arrays)}")
            arr = arrays[0]
            if tuple(arr.shape) != want or str(arr.dtype) != up.dtype:
                raise ProtocolError(f"window: the window at row {row}, col {col} must be "
                                    f"{up.dtype} {want}, got {arr.dtype} "
                                    f"{tuple(arr.shape)}")
            up.writer.write(arr, window=RasterioWindow.from_slices(*window.slices()))
            up.received.add(window)
            if up.complete:
                up.writer.close()
                up.writer = None
                log.info("upload %s complete", up.upload_id)
            return up.public(self.idle_s)

    def claim(self, upload_id: str, job_id: str) -> str:
        """Hand a complete upload to the detection ``job_id``; returns its file's path.
        The file is deleted when that job ends (:meth:`release_job`, :meth:`prune`).

        Raises:
            JobError: ``not_found`` for an unknown upload; ``invalid_input`` for one
                still missing windows or already claimed by another detection.
        """
        with self._lock:
            up = self._get(upload_id, "source")
            up.seen = time.monotonic()
            if up.job_id is not None:
                raise JobError(f"pixel upload {upload_id} is already used by job "
                               f"{up.job_id}; upload the pixels again",
                               P.E_INVALID_INPUT, field="source")
            if not up.complete:
                raise JobError(f"pixel upload {upload_id} has {len(up.received)} of its "
                               f"{len(up.windows)} windows; send the rest first",
                               P.E_INVALID_INPUT, field="source")
            up.job_id = job_id
            return up.path

    def unclaim(self, upload_id: str) -> None:
        """Undo :meth:`claim` (the job could not be queued)."""
        with self._lock:
            up = self._uploads.get(upload_id)
            if up is not None:
                up.job_id = None

    def drop(self, upload_id: str) -> bool:
        """Delete an upload that no detection claimed; returns True when one was."""
        with self._lock:
            up = self._uploads.get(upload_id)
            if up is None or up.job_id is not None:
                return False
            self._delete_locked(up)
            return True

    def release_job(self, job_id: str) -> None:
        """Delete the upload the (ended) detection ``job_id`` used, if any."""
        with self._lock:
            for up in [u for u in self._uploads.values() if u.job_id == job_id]:
                self._delete_locked(up)

    def prune(self, job_active: Callable[[str], bool]) -> int:
        """Delete uploads idle for ``idle_s`` that no active job uses, and those whose
        job ended.

        Args:
            job_active: tells whether a job id is queued or running.

        Returns:
            How many were deleted.
        """
        cutoff = time.monotonic() - self.idle_s
        with self._lock:
            gone = [u for u in self._uploads.values()
                    if (u.job_id is None and u.seen < cutoff)
                    or (u.job_id is not None and not job_active(u.job_id))]
            for up in gone:
                self._delete_locked(up)
        return len(gone)

    def _delete_locked(self, up: Upload) -> None:
        self._uploads.pop(up.upload_id, None)
        if up.writer is not None:
            try:
                up.writer.close()
            except Exception as exc:  # noqa: BLE001 - the file goes anyway
                log.warning("upload %s: closing its file: %s", up.upload_id, exc)
            up.writer = None
        try:
            os.remove(up.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("upload %s: cannot delete %s: %s", up.upload_id, up.path, exc)
        log.info("upload %s deleted", up.upload_id)

    def close(self) -> None:
        """Delete every upload, and the folder when the store made it."""
        with self._lock:
            for up in list(self._uploads.values()):
                self._delete_locked(up)
            if self._own_folder and self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None


__all__ = ["Upload", "UploadStore", "window_side", "DEFAULT_MAX_BYTES",
           "DEFAULT_MAX_UPLOADS", "DEFAULT_IDLE_S"]
