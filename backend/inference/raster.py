"""Open a request's raster source and read windows of a grid from it.

Windows are read through a GDAL warped VRT (``rasterio.vrt.WarpedVRT``, bilinear
resampling, an alpha band marking valid data) onto the grid of
``backend.inference.grid.plan_grid``, so memory stays at one batch of tiles whatever
the raster size; :func:`read_ahead` reads the next batch in a background thread while
the model runs.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from affine import Affine

import protocol as P
from backend.inference.bands import alpha_band, is_paletted, to_uint8
from backend.inference.grid import Grid
from protocol.errors import InputError
from protocol.params import Source, source_from_wire
from protocol.window import Window


@contextmanager
def open_source(source: Union[Source, Mapping[str, Any]],
                pixels: Optional[np.ndarray] = None) -> Iterator[object]:
    """Open a request's ``source`` as a rasterio dataset.

    Args:
        source: a ``protocol.params`` :class:`~protocol.params.FileSource` or
            :class:`~protocol.params.PixelSource`, or its wire dict.
        pixels: for kind ``pixels``, the image, (bands, H, W) or (H, W), any allowed
            dtype.

    Yields:
        an open ``rasterio.DatasetReader``.

    Raises:
        InputError: missing file (``not_found``, ``field`` ``"source"``), not a raster
            GDAL can read, no pixel array for kind ``pixels``, or an invalid CRS.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError, RasterioIOError
    from rasterio.io import MemoryFile

    source = source_from_wire(source)
    if source.kind == "file":
        path = source.path
        gdal_path = vsi_path(path)
        remote = gdal_path.startswith("/vsi")
        if not remote and not os.path.exists(path):
            raise InputError(f"raster file not found on the engine's computer: {path}",
                             P.E_NOT_FOUND, field="source")
        # a URL is opened without listing its "folder" (one request less, and no
        # 404 noise); reads are HTTP range requests
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
                          GDAL_HTTP_MAX_RETRY="2", GDAL_HTTP_TIMEOUT="30"):
            try:
                ds = rasterio.open(gdal_path)
                if ds.count == 1 and is_paletted(ds):  # expand the colour table
                    ds.close()
                    ds = rasterio.open(f"vrt://{gdal_path}?expand=rgba")
            except RasterioIOError as exc:
                what = "URL" if remote else "file"
                raise InputError(f"{path} is not a raster GDAL can read ({what}): {exc}",
                                 P.E_INVALID_INPUT, field="source") from None
            try:
                yield ds
            finally:
                ds.close()
        return
    if pixels is None:
        raise InputError("source kind 'pixels' needs one array frame (bands, H, W)",
                         P.E_BAD_REQUEST)
    arr = pixels if pixels.ndim == 3 else pixels.reshape((1,) + pixels.shape[-2:])
    if arr.ndim != 3:
        raise InputError(f"pixel array must be (bands, H, W), got {pixels.shape}",
                         P.E_BAD_REQUEST)
    try:
        crs = CRS.from_user_input(source.crs)
    except CRSError as exc:
        raise InputError(f"invalid CRS for the pixels: {exc}") from None
    a, b, c, d, e, f = source.transform
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                      count=arr.shape[0], dtype=arr.dtype, crs=crs,
                      transform=Affine(a, b, c, d, e, f),
                      photometric="RGB" if arr.shape[0] == 3 else "MINISBLACK",
                      nodata=source.nodata) as w:
            w.write(arr)
        with mem.open() as ds:
            yield ds


def vsi_path(path: str) -> str:
    """The path GDAL opens for a request's ``path``: ``http(s)://`` URLs are read
    through ``/vsicurl/`` (HTTP range requests: a cloud-optimised GeoTIFF is fetched
    only where the extent needs it); anything else is returned as it is."""
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path
    return path


def read_failure(path: str, exc: BaseException) -> InputError:
    """An ``invalid_input`` error for pixels GDAL could not read (a truncated or
    corrupt file, or a damaged tile of a VRT mosaic).

    The message names ``path``, the damaged file GDAL names in the exception chain
    (``"<file>, band <n>: ..."``, e.g. one tile of a mosaic) and GDAL's innermost
    reason (e.g. ``TIFFFillStrip: Read error at scanline 304``).

    Args:
        path: the raster the request named.
        exc: the ``rasterio`` exception (its ``__cause__``/``__context__`` chain holds
            GDAL's messages).

    Returns:
        The :class:`~protocol.errors.InputError` (``P.E_INVALID_INPUT``); its
        ``damaged`` attribute is the damaged file's name (or ``path``).
    """
    chain, c = [], exc
    while c is not None and len(chain) < 20:
        chain.append(str(c))
        c = c.__cause__ or c.__context__
    damaged = next((m.group(1) for text in chain
                    for m in [re.search(r"([^\s:,]+), band \d+:", text)] if m), None)
    reason = chain[-1] if chain else "read failed"
    where = f" (damaged part: {damaged})" if damaged and damaged not in path else ""
    err = InputError(f"cannot read the pixels of {path}{where}: the file is damaged or "
                     f"truncated ({reason}). Check or re-create the file (e.g. "
                     f"gdalinfo -checksum)", P.E_INVALID_INPUT)
    err.damaged = damaged or os.path.basename(path)
    return err


#: Smallest block, pixels, a damaged window is split into before it is given up as
#: unreadable (``WindowReader`` with ``damaged="mask"``).
SALVAGE_PX = 16


class WindowReader:
    """Reads tiles of a :class:`Grid` from a dataset through a warped VRT.

    Args:
        ds: the open rasterio dataset.
        grid: the grid to read.
        damaged: what a window GDAL cannot read does: ``"raise"`` an ``invalid_input``
            :func:`read_failure` (one detection: the user's file is damaged), or
            ``"mask"``: the window is read again in quadrants down to
            :data:`SALVAGE_PX` pixels and the blocks that still fail are no-data
            (batch jobs over mosaics: one damaged tile must not stop the rest);
            ``unreadable`` then counts the pixels lost per damaged file.

    Thread-safety: one reader per thread (GDAL datasets are not thread-safe).
    """

    def __init__(self, ds, grid: Grid, damaged: str = "raise"):
        if damaged not in ("raise", "mask"):
            raise ValueError(f"damaged must be 'raise' or 'mask', not {damaged!r}")
        self.damaged = damaged
        #: damaged file name -> grid pixels that could not be read (``"mask"`` mode)
        self.unreadable: Dict[str, int] = {}
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.grid = grid
        #: the raster's path (or in-memory name), for error messages
        self.path = str(getattr(ds, "name", "") or "the raster")
        alpha = alpha_band(ds)
        self.vrt = WarpedVRT(ds, crs=grid.crs_wkt, transform=grid.transform, width=grid.width,
                             height=grid.height, resampling=Resampling.bilinear,
                             add_alpha=alpha is None)
        # the raster's own alpha band, or the added one (last)
        self.alpha = alpha or self.vrt.count

    def read(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """The pixels of ``window`` (pixels of the grid).

        The window may start at negative offsets or run past the grid (shifted
        tilings, grids smaller than a tile): the missing part is padded by reflection.

        Returns:
            ``(image, valid)``: image uint8 (bands, height, width), stretched when the
            grid says so (:func:`~backend.inference.bands.to_uint8`); valid bool
            (height, width), False on nodata, outside the raster and padding.

        Raises:
            ValueError: the window does not overlap the grid.
            InputError: GDAL cannot read the pixels (:func:`read_failure`).
        """
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window as RioWindow

        inside = window.intersection(Window(0, 0, self.grid.height, self.grid.width))
        if inside is None:
            raise ValueError(f"window {window} misses the grid")
        r0, c0, r1, c1 = inside.row, inside.col, inside.row_stop, inside.col_stop
        try:
            data = self.vrt.read(self.grid.bands + [self.alpha],
                                 window=RioWindow(c0, r0, c1 - c0, r1 - r0))
        except RasterioIOError as exc:
            if self.damaged == "raise":
                raise read_failure(self.path, exc) from None
            data = self._salvage(r0, c0, r1, c1)
        img, valid = to_uint8(data[:-1], self.grid.stretch), data[-1] > 0
        pads = ((r0 - window.row, window.row_stop - r1), (c0 - window.col, window.col_stop - c1))
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(r1 - r0, c1 - c0) > 1 else "edge"
            img = np.pad(img, ((0, 0),) + pads, mode=mode)
            valid = np.pad(valid, pads, constant_values=False)
        return img, valid

    def _salvage(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """Bands + alpha of the window ``[r0, r1) x [c0, c1)`` read in quadrants; the
        blocks of :data:`SALVAGE_PX` or less that GDAL still cannot read are zeros
        with alpha 0, counted in ``unreadable``."""
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window as RioWindow

        bands = self.grid.bands + [self.alpha]
        out = np.zeros((len(bands), r1 - r0, c1 - c0), dtype=self.vrt.dtypes[0])
        todo = [(r0, c0, r1, c1)]
        while todo:
            a0, b0, a1, b1 = todo.pop()
            try:
                out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self.vrt.read(
                    bands, window=RioWindow(b0, a0, b1 - b0, a1 - a0))
                continue
            except RasterioIOError as exc:
                if max(a1 - a0, b1 - b0) > SALVAGE_PX:
                    am, bm = (a0 + a1) // 2, (b0 + b1) // 2
                    todo += [q for q in ((a0, b0, am, bm), (a0, bm, am, b1),
                                         (am, b0, a1, bm), (am, bm, a1, b1))
                             if q[0] < q[2] and q[1] < q[3]]
                    continue
                name = read_failure(self.path, exc).damaged
                self.unreadable[name] = self.unreadable.get(name, 0) + (a1 - a0) * (b1 - b0)
        return out

    def close(self) -> None:
        """Close the warped VRT (not the dataset it reads)."""
        self.vrt.close()


def read_ahead(reader: WindowReader, groups: Sequence[Sequence[Tuple[int, int]]],
               size: Tuple[int, int]) -> Iterator[Tuple[Sequence[Tuple[int, int]], np.ndarray,
                                            List[np.ndarray]]]:
    """Read groups of tiles in a background thread, one group ahead of the caller, so
    that reading overlaps the model's work on the previous group.

    Use it with ``contextlib.closing``: closing the generator stops the thread (which
    may otherwise wait on the full queue) before the reader is closed.

    Args:
        reader: the grid's reader (used by the background thread only).
        groups: tile offsets ``(row, col)`` per model batch.
        size: ``(height, width)`` of a tile, pixels.

    Yields:
        ``(group, images, masks)``: the group, its tiles stacked to
        ``(len(group), bands, height, width)`` of the source dtype, and one bool
        ``(height, width)`` valid-data mask per tile (see :meth:`WindowReader.read`).

    Raises:
        Whatever :meth:`WindowReader.read` raised, in the caller's thread.
    """
    q: "queue.Queue" = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for group in groups:
                if stop.is_set():
                    return
                tiles = [reader.read(Window(r, c, *size)) for r, c in group]
                q.put((group, np.stack([t[0] for t in tiles]), [t[1] for t in tiles]))
            q.put(None)
        except BaseException as exc:  # raised again in the consumer
            q.put(exc)

    th = threading.Thread(target=produce, name="ortholens-reader", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=0.05)
