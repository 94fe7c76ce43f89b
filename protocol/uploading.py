"""Streaming an image to the daemon window by window: :class:`PixelUploads`, the
upload requests of :class:`protocol.client.OrtholensClient`.

Needs pyzmq (through :class:`~protocol.connection.DaemonConnection`) and numpy when
windows are sent.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import protocol as P
from .connection import DaemonConnection, raise_if_error
from .errors import DaemonError, DaemonUnavailable, JobCancelled
from .params import PixelUpload, UploadSource
from .window import Window, upload_windows


class PixelUploads(DaemonConnection):
    """The ``upload`` and ``window`` requests over a daemon connection: an image sent
    in windows, at most a few of them in flight (:meth:`upload`)."""

    def upload(self, spec: PixelUpload, read_window: Callable[[Window], Any],
               on_progress: Optional[Callable[[float, str], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None,
               in_flight: int = 2, ack_timeout_s: float = 60.0) -> UploadSource:
        """Stream an image to the daemon window by window; returns the source a
        :meth:`detect` then names.

        Only one window is read at a time and at most ``in_flight`` sent windows wait
        for the daemon's acknowledgement, so neither side holds the whole image: a
        large extent costs the client about ``in_flight + 1`` windows of memory. The
        windows are those of ``protocol.window.upload_windows`` on the daemon's
        ``window_px`` grid, row by row.

        Args:
            spec: the image (size, bands, dtype, CRS and transform).
            read_window: ``read_window(window)`` returns that
                :class:`~protocol.window.Window` of the image (pixels of the image's
                grid), ``(spec.count, window.height, window.width)`` of ``spec.dtype``.
            on_progress: called as ``on_progress(fraction 0..1, message)`` after each
                acknowledged window.
            is_cancelled: polled before each window; once true the upload is dropped
                on the daemon and :class:`~protocol.errors.JobCancelled` raised.
            in_flight: most windows sent but not yet acknowledged (>= 1).
            ack_timeout_s: longest wait for one acknowledgement, seconds (a window of a
                few MiB may take seconds on a slow network).

        Returns:
            :class:`~protocol.params.UploadSource` of the completed upload.

        Raises:
            DaemonError: the daemon refused the upload or a window (``bad_request``,
                ``busy`` when its upload space is full, ``not_found`` when the upload
                expired).
            DaemonUnavailable: no answer in time.
            JobCancelled: ``is_cancelled()`` turned true.
            protocol.ProtocolError: an invalid ``spec``, or ``read_window`` returned an
                array of another shape or dtype (nothing more is sent; the upload is
                dropped).
        """
        opened = self._call("upload", **{k: v for k, v in spec.to_header().items()
                                         if k not in ("v", "type", "id")})
        upload_id = str(opened["upload_id"])
        windows = upload_windows(spec.width, spec.height, int(opened["window_px"]))
        finished = False
        try:
            last = self._send_windows(spec, upload_id, windows, read_window, on_progress,
                                      is_cancelled, in_flight, ack_timeout_s)
            if not last.get("complete"):
                raise DaemonError(f"upload {upload_id} is incomplete after all "
                                  f"{len(windows)} windows were sent", P.E_INTERNAL)
            finished = True
            return UploadSource(upload_id)
        finally:
            if not finished:
                self._cancel_quietly(upload_id)

    def _send_windows(self, spec: PixelUpload, upload_id: str, windows: List[Window],
                      read_window: Callable[[Window], Any],
                      on_progress: Optional[Callable[[float, str], None]],
                      is_cancelled: Optional[Callable[[], bool]], in_flight: int,
                      ack_timeout_s: float) -> Dict[str, Any]:
        """Read and send ``windows`` of the upload ``upload_id`` in order, keeping at
        most ``in_flight`` unacknowledged (see :meth:`upload`); returns the last
        acknowledgement (an ``upload`` reply).

        Raises:
            As :meth:`upload`.
        """
        import numpy as np
        pending: List[str] = []
        done = 0
        last: Dict[str, Any] = {}

        def acknowledge_oldest() -> None:
            nonlocal done, last
            last = self._acknowledge(pending.pop(0), upload_id, ack_timeout_s)
            done += 1
            if on_progress is not None:
                on_progress(done / len(windows), f"sent {done}/{len(windows)} windows")

        for window in windows:
            if is_cancelled is not None and is_cancelled():
                raise JobCancelled(f"upload {upload_id} was cancelled")
            arr = np.ascontiguousarray(read_window(window))
            want = (spec.count,) + window.shape
            if arr.shape != want or str(arr.dtype) != spec.dtype:
                raise P.ProtocolError(
                    f"the window at row {window.row}, col {window.col} is {arr.dtype} "
                    f"{tuple(arr.shape)}; the upload needs {spec.dtype} {want}")
            header = P.request("window", upload_id=upload_id, row=window.row,
                               col=window.col, token=self.token)
            self._send(header, [arr])
            del arr  # zmq keeps the buffer until it is sent
            pending.append(header["id"])
            while len(pending) >= max(1, in_flight):
                acknowledge_oldest()
        while pending:
            acknowledge_oldest()
        return last

    def _acknowledge(self, request_id: str, upload_id: str, ack_timeout_s: float
                     ) -> Dict[str, Any]:
        """The daemon's answer to the ``window`` request ``request_id``.

        Raises:
            DaemonUnavailable: none within ``ack_timeout_s`` (or the client's
                ``timeout_s``, the longer); the socket is reset.
            DaemonError: an ``error`` answer.
        """
        ack = self._receive(request_id, max(ack_timeout_s, self.timeout_s))
        if ack is None:
            self._reset()
            raise DaemonUnavailable(f"the daemon at {self.endpoint} did not "
                                    f"acknowledge a window of upload {upload_id} "
                                    f"within {ack_timeout_s:g} s")
        raise_if_error(ack)
        return ack


__all__ = ["PixelUploads"]
