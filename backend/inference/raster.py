"""Raster input: open a source, check it against a model card, plan the output grid,
and read resampled windows.

The output grid is north-up, in the raster's own CRS, at the model's GSD, covering the
requested extent clipped to the raster. Windows are read through a GDAL warped VRT
(``rasterio.vrt.WarpedVRT``, bilinear resampling, an alpha band marking valid data),
so memory stays at one batch of tiles whatever the raster size.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from affine import Affine

import protocol as P
from protocol.errors import InputError
from protocol.params import Source, source_from_wire

#: Largest grid (pixels at the model GSD) one in-extent detection accepts: the
#: stitched probabilities use ~12 bytes a pixel. Larger areas belong to batch jobs.
MAX_GRID_PIXELS = 64_000_000


@dataclass
class Grid:
    """The output pixel grid.

    Attributes:
        transform: affine pixel -> CRS transform (north-up, pixel size = GSD, metres).
        width, height: pixels.
        crs_wkt: the raster's CRS as WKT.
        bands: 1-based source bands read as the model's input bands.
        warnings: human-readable notes (resampling, ignored bands).
    """

    transform: Affine
    width: int
    height: int
    crs_wkt: str
    bands: List[int]
    src_gsd: float
    warnings: List[str] = field(default_factory=list)


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
        InputError: missing file (``not_found``), not a raster GDAL can read, no pixel
            array for kind ``pixels``, or an invalid CRS.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import CRSError, RasterioIOError
    from rasterio.io import MemoryFile

    source = source_from_wire(source)
    if source.kind == "file":
        path = source.path
        if not os.path.exists(path):
            raise InputError(f"raster file not found: {path}", P.E_NOT_FOUND)
        try:
            ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise InputError(f"{path} is not a raster GDAL can read: {exc}") from None
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


def choose_bands(ds, bands_req: Optional[Sequence[int]], n_bands: int
                 ) -> Tuple[List[int], List[str]]:
    """Source bands that feed the model, and warnings.

    Raises:
        InputError: band numbers out of range, wrong band count, or a data type the
            model cannot take (the card expects uint8).
    """
    warnings: List[str] = []
    if bands_req:
        bad = [b for b in bands_req if b > ds.count]
        if bad:
            raise InputError(f"band(s) {bad} requested but the raster has {ds.count}")
        if len(bands_req) != n_bands:
            raise InputError(f"the model takes {n_bands} bands; {len(bands_req)} given")
        bands = list(bands_req)
    elif ds.count >= n_bands:
        bands = list(range(1, n_bands + 1))
        if ds.count > n_bands:
            alpha = _alpha_band(ds)
            rest = "band %d is the alpha (valid-data) mask" % alpha if alpha else "the rest ignored"
            warnings.append(f"the raster has {ds.count} bands; bands "
                            f"{bands} are used as RGB, {rest}")
    else:
        raise InputError(
            f"the model needs {n_bands} bands (RGB) but the raster has {ds.count} "
            f"({ds.dtypes[0]}); choose a {n_bands}-band RGB orthophoto or give an "
            f"explicit band mapping")
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if dtypes != {"uint8"}:
        raise InputError(
            f"the model expects 8-bit RGB; bands {bands} are {sorted(dtypes)}. Convert "
            f"the raster to 8 bits (e.g. gdal_translate -ot Byte -scale) first")
    return bands, warnings


def plan_grid(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str],
              gsd_m: float, n_bands: int, bands_req: Optional[Sequence[int]] = None,
              max_pixels: Optional[int] = None) -> Grid:
    """Plan the model-GSD grid over ``extent`` (in ``extent_crs``) clipped to ``ds``.

    Args:
        ds: open rasterio dataset.
        extent: [xmin, ymin, xmax, ymax] or None for the whole raster.
        extent_crs: CRS of ``extent`` (WKT / "EPSG:n"); None = the raster's CRS.
        gsd_m: model GSD, metres per pixel.
        n_bands: bands the model takes.
        bands_req: explicit 1-based band mapping, or None.
        max_pixels: refuse grids larger than this (default ``MAX_GRID_PIXELS``).

    Raises:
        InputError: raster without CRS or in a geographic CRS, extent that misses the
            raster or is smaller than a pixel, or a grid above ``max_pixels``.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    if ds.crs is None:
        raise InputError("the raster has no CRS; assign one (Layer Properties > Source) "
                         "before detecting")
    if not ds.crs.is_projected:
        raise InputError(f"the raster's CRS ({ds.crs.to_string()}) is geographic; the "
                         f"model works in metres: reproject the raster to a projected CRS")
    bands, warnings = choose_bands(ds, bands_req, n_bands)
    max_pixels = MAX_GRID_PIXELS if max_pixels is None else max_pixels
    rb = ds.bounds
    if extent is None:
        xmin, ymin, xmax, ymax = rb.left, rb.bottom, rb.right, rb.top
    else:
        xmin, ymin, xmax, ymax = extent
        if extent_crs:
            try:
                ecrs = CRS.from_user_input(extent_crs)
            except CRSError as exc:
                raise InputError(f"invalid extent CRS: {exc}") from None
            if ecrs != ds.crs:
                xmin, ymin, xmax, ymax = transform_bounds(ecrs, ds.crs, xmin, ymin, xmax,
                                                          ymax, densify_pts=21)
        xmin, ymin = max(xmin, rb.left), max(ymin, rb.bottom)
        xmax, ymax = min(xmax, rb.right), min(ymax, rb.top)
        if not (xmin < xmax and ymin < ymax):
            raise InputError("the extent does not intersect the raster")
    unit = ds.crs.linear_units_factor[1] if hasattr(ds.crs, "linear_units_factor") else 1.0
    gsd = gsd_m / unit
    width = int(math.ceil((xmax - xmin) / gsd - 1e-6))
    height = int(math.ceil((ymax - ymin) / gsd - 1e-6))
    if width < 1 or height < 1 or (xmax - xmin) < gsd or (ymax - ymin) < gsd:
        raise InputError(f"the extent ({xmax - xmin:.2f} x {ymax - ymin:.2f} m) is smaller "
                         f"than one pixel at the model's {gsd_m} m GSD")
    if width * height > max_pixels:
        raise InputError(
            f"the extent is too large for one in-extent detection: {width} x {height} px "
            f"at {gsd_m} m ({width * height / 1e6:.0f} Mpx > {max_pixels / 1e6:.0f} Mpx); "
            f"zoom in or use the batch algorithm", P.E_INVALID_INPUT)
    src_gsd = float(abs(ds.transform.a) * unit) if ds.transform.b == 0 else float(
        math.hypot(ds.transform.a, ds.transform.d) * unit)
    ratio = src_gsd / gsd_m
    if ratio > 2.0 or ratio < 0.5:
        warnings.append(f"the raster's GSD ({src_gsd:.3f} m) is far from the model's "
                        f"({gsd_m} m); it is resampled, expect lower accuracy")
    return Grid(Affine(gsd, 0.0, xmin, 0.0, -gsd, ymax), width, height,
                ds.crs.to_wkt(), bands, src_gsd, warnings)


def _alpha_band(ds) -> Optional[int]:
    """1-based index of the raster's alpha band, or None."""
    from rasterio.enums import ColorInterp
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return None


class WindowReader:
    """Reads tiles of a :class:`Grid` from a dataset through a warped VRT.

    Thread-safety: one reader per thread (GDAL datasets are not thread-safe).
    """

    def __init__(self, ds, grid: Grid):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.grid = grid
        alpha = _alpha_band(ds)
        self.vrt = WarpedVRT(ds, crs=ds.crs, transform=grid.transform, width=grid.width,
                             height=grid.height, resampling=Resampling.bilinear,
                             add_alpha=alpha is None)
        # the raster's own alpha band, or the added one (last)
        self.alpha = alpha or self.vrt.count

    def read(self, row: int, col: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """Tile with top-left pixel (row, col), ``size`` x ``size``.

        ``row``/``col`` may be negative or the tile may run past the grid (shifted
        tilings, grids smaller than a tile): the missing part is padded by reflection.

        Returns:
            ``(image, valid)``: image of the source dtype (bands, size, size); valid
            bool (size, size), False on nodata, outside the raster and padding.

        Raises:
            ValueError: the tile does not overlap the grid.
        """
        from rasterio.windows import Window

        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, self.grid.height), min(col + size, self.grid.width)
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"tile at ({row}, {col}) size {size} misses the grid")
        data = self.vrt.read(self.grid.bands + [self.alpha],
                             window=Window(c0, r0, c1 - c0, r1 - r0))
        img, valid = data[:-1], data[-1] > 0
        pads = ((r0 - row, row + size - r1), (c0 - col, col + size - c1))
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(r1 - r0, c1 - c0) > 1 else "edge"
            img = np.pad(img, ((0, 0),) + pads, mode=mode)
            valid = np.pad(valid, pads, constant_values=False)
        return img, valid

    def close(self) -> None:
        """Close the warped VRT (not the dataset it reads)."""
        self.vrt.close()


def read_ahead(reader: WindowReader, groups: Sequence[Sequence[Tuple[int, int]]],
               size: int) -> Iterator[Tuple[Sequence[Tuple[int, int]], np.ndarray,
                                            List[np.ndarray]]]:
    """Read groups of tiles in a background thread, one group ahead of the caller, so
    that reading overlaps the model's work on the previous group.

    Use it with ``contextlib.closing``: closing the generator stops the thread (which
    may otherwise wait on the full queue) before the reader is closed.

    Args:
        reader: the grid's reader (used by the background thread only).
        groups: tile offsets ``(row, col)`` per model batch.
        size: tile side, pixels.

    Yields:
        ``(group, images, masks)``: the group, its tiles stacked to
        ``(len(group), bands, size, size)`` of the source dtype, and one bool
        ``(size, size)`` valid-data mask per tile (see :meth:`WindowReader.read`).

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
                tiles = [reader.read(r, c, size) for r, c in group]
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
