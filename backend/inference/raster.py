"""Raster input: open a source, check it against a model card, plan the output grid,
and read resampled windows.

The output grid is north-up, at the model's GSD in ground metres, covering the requested
extent clipped to the raster. Its CRS is the raster's own when that CRS is projected and
its units are ground metres within 1 % where the extent lies (UTM, national grids);
otherwise (degrees, Web Mercator away from the equator, feet) it is the WGS 84 / UTM zone
of the extent's centre (:func:`grid_crs`), so a pixel always covers the model's GSD on
the ground. Windows are read through a GDAL warped VRT (``rasterio.vrt.WarpedVRT``,
bilinear resampling, an alpha band marking valid data), so memory stays at one batch of
tiles whatever the raster size.
"""

from __future__ import annotations

import math
import os
import queue
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

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
        crs_wkt: the grid's CRS as WKT (the raster's, or a UTM zone; see
            :func:`grid_crs`).
        bands: 1-based source bands read as the model's input bands.
        src_gsd: the raster's ground pixel size, metres.
        warnings: human-readable notes (resampling, ignored bands, reprojection).
        source_crs_wkt: the raster's own CRS as WKT when it differs from ``crs_wkt``
            (the grid was reprojected), else None.
        stretch: per mapped band, the raster values ``(low, high)`` mapped to 0 and
            255 (:func:`plan_stretch`), or None: the values are 8-bit already.
        stretch_info: what was done, for the result's stats and the layer metadata:
            ``{"mode", "low"?, "high"?, "ranges": [[low, high], ...], "dtype"}``.
    """

    transform: Affine
    width: int
    height: int
    crs_wkt: str
    bands: List[int]
    src_gsd: float
    warnings: List[str] = field(default_factory=list)
    source_crs_wkt: Optional[str] = None
    stretch: Optional[List[Tuple[float, float]]] = None
    stretch_info: Optional[Dict[str, Any]] = None


#: Largest departure of a CRS's unit from a ground metre (after its own linear unit
#: factor) for the raster's CRS to be used as the grid CRS (UTM's scale factor is
#: within 0.1 %; Web Mercator at 48° N is 49 % off).
MAX_SCALE_ERROR = 0.01


def ground_scale(crs, x: float, y: float, step: float) -> Tuple[float, float]:
    """Ground metres per CRS unit east and north at ``(x, y)``.

    Measured as the geodesic (WGS 84 ellipsoid, ``pyproj.Geod``) length of two segments
    of ``2 * step`` CRS units centred on the point.

    Args:
        crs: a projected ``rasterio.crs.CRS``.
        x, y: the point, CRS units.
        step: half the segment length, CRS units (e.g. 1 % of the extent).

    Returns:
        ``(east, north)`` metres per unit (1.0 for a true-scale metre CRS).
    """
    from pyproj import Geod
    from rasterio.warp import transform

    xs = [x - step, x + step, x, x]
    ys = [y, y, y - step, y + step]
    lon, lat = transform(crs, "EPSG:4326", xs, ys)
    geod = Geod(ellps="WGS84")
    _, _, east = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, north = geod.inv(lon[2], lat[2], lon[3], lat[3])
    return east / (2 * step), north / (2 * step)


def grid_crs(crs, bounds: Sequence[float]) -> Tuple[Any, Optional[str]]:
    """The CRS to plan a grid in over ``bounds`` of a raster in ``crs``.

    The raster's CRS when it is projected and one of its units is one ground metre
    within :data:`MAX_SCALE_ERROR` (after ``linear_units_factor``) both east and north
    at the centre of ``bounds``; otherwise the WGS 84 / UTM zone of that centre
    (``pyproj.database.query_utm_crs_info``), where it is.

    Args:
        crs: the raster's ``rasterio.crs.CRS``.
        bounds: ``(xmin, ymin, xmax, ymax)`` in ``crs``.

    Returns:
        ``(crs, note)``: the grid CRS and, when it is not the raster's, a sentence for
        the result's warnings.

    Raises:
        InputError: the centre of ``bounds`` has no longitude/latitude (outside the
            CRS's area).
    """
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info
    from rasterio.crs import CRS
    from rasterio.warp import transform

    xmin, ymin, xmax, ymax = bounds
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    if crs.is_projected:
        unit = crs.linear_units_factor[1]
        step = max(xmax - xmin, ymax - ymin, 1e-6) / 100
        try:
            east, north = ground_scale(crs, cx, cy, step)
        except Exception:  # noqa: BLE001 - judged below as "not a metre CRS"
            east = north = float("nan")
        if all(abs(s / unit - 1.0) <= MAX_SCALE_ERROR for s in (east, north)):
            return crs, None
        why = (f"its units are {east:.3f} ground metres here" if math.isfinite(east)
               else "its ground scale is unknown here")
    else:
        why = "it is in degrees"
    try:
        (lon,), (lat,) = transform(crs, "EPSG:4326", [cx], [cy])
    except Exception:  # noqa: BLE001 - PROJ: "Point outside of projection domain"
        lon = lat = float("nan")
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InputError(f"the extent's centre ({cx:g}, {cy:g}) has no longitude/"
                         f"latitude in the raster's CRS ({crs.to_string()})")
    info = query_utm_crs_info(datum_name="WGS 84",
                              area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not info:
        raise InputError(f"no UTM zone covers longitude {lon:.4f}, latitude {lat:.4f}")
    utm = CRS.from_epsg(int(info[0].code))
    return utm, (f"the raster's CRS ({crs.to_string()}) is not a ground-metre CRS here "
                 f"({why}); it is read through a view in {info[0].name} at the model's "
                 f"ground GSD, and the polygons are returned in the raster's CRS")


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
                if ds.count == 1 and _is_paletted(ds):  # expand the colour table
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


def _is_paletted(ds) -> bool:
    from rasterio.enums import ColorInterp
    return ds.colorinterp[0] == ColorInterp.palette


#: Data types the model's input can be stretched from.
STRETCHABLE = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def choose_bands(ds, bands_req: Optional[Sequence[int]], n_bands: int
                 ) -> Tuple[List[int], List[str]]:
    """Source bands that feed the model, and warnings.

    Without a requested mapping: the bands whose colour interpretation is red, green
    and blue (in that order) when the raster names them, else the first ``n_bands``;
    a single band (grey, or grey + alpha) is repeated as R, G and B. The alpha band,
    if any, is never a model band: it is the valid-data mask.

    Args:
        ds: the open dataset.
        bands_req: explicit 1-based mapping (bands may repeat), or None.
        n_bands: bands the model takes (3: R, G, B).

    Raises:
        InputError: band numbers out of range, wrong band count, or a data type that
            cannot be stretched (complex).
    """
    from rasterio.enums import ColorInterp

    warnings: List[str] = []
    alpha = _alpha_band(ds)
    colour = [b for b in range(1, ds.count + 1) if b != alpha]
    if bands_req:
        bad = [b for b in bands_req if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"band(s) {bad} requested but the raster has {ds.count}")
        if len(bands_req) != n_bands:
            raise InputError(f"the model takes {n_bands} bands; {len(bands_req)} given")
        bands = list(bands_req)
    else:
        ci = {c: i for i, c in enumerate(ds.colorinterp, start=1)}
        rgb = [ci.get(c) for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
        if n_bands == 3 and all(rgb):
            bands = [int(b) for b in rgb]
        elif len(colour) >= n_bands:
            bands = colour[:n_bands]
        elif len(colour) == 1:
            bands = colour * n_bands
            warnings.append("the raster has one band; it is used as grey for R, G and "
                            "B (the model learnt colour imagery: expect lower accuracy)")
        else:
            raise InputError(
                f"the model needs {n_bands} bands (RGB) but the raster has {ds.count} "
                f"({ds.dtypes[0]}); choose a {n_bands}-band RGB orthophoto or give an "
                f"explicit band mapping")
        unused = [b for b in colour if b not in bands]
        if unused:
            rest = f"; band {alpha} is the alpha (valid-data) mask" if alpha else ""
            warnings.append(f"the raster has {ds.count} bands; bands {bands} are used as "
                            f"RGB, band(s) {unused} ignored{rest}")
    bad_types = sorted({ds.dtypes[b - 1] for b in bands} - set(STRETCHABLE))
    if bad_types:
        raise InputError(f"bands {bands} are of type {bad_types}, which cannot be "
                         f"stretched to the model's 8-bit input")
    return bands, warnings


def plan_stretch(ds, bands: Sequence[int], bounds: Sequence[float],
                 stretch: Optional[Any] = None, sample_px: int = 1024
                 ) -> Tuple[Optional[List[Tuple[float, float]]], Optional[Dict[str, Any]]]:
    """The value range of each mapped band that becomes the model's 0-255.

    8-bit bands without a requested stretch are left as they are. Otherwise, by
    ``stretch.mode``: ``"percentile"`` (the default for 16-bit and float rasters) takes
    the ``low`` and ``high`` percentiles (2 and 98: QGIS's "cumulative count cut") of
    the valid pixels of each band over ``bounds``, read decimated to at most
    ``sample_px`` pixels a side (nearest); ``"minmax"`` takes the given values;
    ``"none"`` clips the values to 0-255.

    Args:
        ds: the open dataset.
        bands: 1-based mapped bands.
        bounds: ``(xmin, ymin, xmax, ymax)`` in the raster's CRS.
        stretch: a ``protocol.params.Stretch`` or None.
        sample_px: longest side of the sample, pixels.

    Returns:
        ``(ranges, info)``: ``[(low, high), ...]`` per mapped band and the stats entry,
        or ``(None, None)`` when nothing is stretched.

    Raises:
        InputError: a ``minmax`` with another number of bands than mapped, or no valid
            pixel in the extent to take percentiles from.
    """
    from rasterio.windows import from_bounds

    dtypes = sorted({ds.dtypes[b - 1] for b in bands})
    mode = stretch.mode if stretch is not None else (
        None if dtypes == ["uint8"] else "percentile")
    if mode is None:
        return None, None
    info: Dict[str, Any] = {"mode": mode, "dtype": ",".join(dtypes)}
    if mode == "none":
        ranges = [(0.0, 255.0)] * len(bands)
    elif mode == "minmax":
        lo, hi = list(stretch.min or ()), list(stretch.max or ())
        if len(lo) != len(bands):
            raise InputError(f"the stretch gives {len(lo)} min/max pair(s) for "
                             f"{len(bands)} mapped bands", field="stretch")
        ranges = [(float(a), float(b)) for a, b in zip(lo, hi)]
    else:
        low = stretch.low if stretch is not None else 2.0
        high = stretch.high if stretch is not None else 98.0
        info.update(low=low, high=high)
        win = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        win = win.intersection(rasterio_window_full(ds))
        scale = max(win.width, win.height) / float(sample_px)
        shape = (max(1, int(win.height / max(scale, 1.0))),
                 max(1, int(win.width / max(scale, 1.0))))
        uniq = sorted(set(bands))
        data = ds.read(uniq, window=win, out_shape=(len(uniq),) + shape, masked=True)
        ranges = []
        for b in bands:
            band = data[uniq.index(b)]
            vals = band.compressed() if np.ma.isMaskedArray(band) else band.ravel()
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                raise InputError("no valid pixel in the extent to stretch the values "
                                 "from: give min/max values or another extent",
                                 field="stretch")
            a, c = np.percentile(vals, [low, high])
            ranges.append((float(a), float(c) if c > a else float(a) + 1.0))
    info["ranges"] = [[round(a, 6), round(b, 6)] for a, b in ranges]
    return ranges, info


def rasterio_window_full(ds):
    """The window of the whole dataset."""
    from rasterio.windows import Window
    return Window(0, 0, ds.width, ds.height)


def to_uint8(img: np.ndarray, ranges: Optional[Sequence[Tuple[float, float]]]
             ) -> np.ndarray:
    """Bands ``(B, H, W)`` of any numeric dtype as uint8 for the model: each band
    linearly from its ``(low, high)`` to 0-255, clipped; ``ranges`` None: the values
    must already be 8-bit and are returned unchanged."""
    if ranges is None:
        return img
    out = np.empty(img.shape, np.uint8)
    for i, (lo, hi) in enumerate(ranges):
        v = (img[i].astype(np.float32) - lo) * (255.0 / (hi - lo))
        out[i] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out


def plan_grid(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str],
              gsd_m: float, n_bands: int, bands_req: Optional[Sequence[int]] = None,
              max_pixels: Optional[int] = None, stretch: Optional[Any] = None) -> Grid:
    """Plan the model-GSD grid over ``extent`` (in ``extent_crs``) clipped to ``ds``.

    Args:
        ds: open rasterio dataset.
        extent: [xmin, ymin, xmax, ymax] or None for the whole raster.
        extent_crs: CRS of ``extent`` (WKT / "EPSG:n"); None = the raster's CRS.
        gsd_m: model GSD, metres per pixel.
        n_bands: bands the model takes.
        bands_req: explicit 1-based band mapping, or None (:func:`choose_bands`).
        max_pixels: refuse grids larger than this (default ``MAX_GRID_PIXELS``).
        stretch: a ``protocol.params.Stretch``, or None (:func:`plan_stretch`).

    Raises:
        InputError: raster without CRS, extent that misses the raster or is smaller
            than a pixel, or a grid above ``max_pixels``.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    if ds.crs is None:
        raise InputError("the raster has no CRS; assign one (Layer Properties > Source) "
                         "before detecting")
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
    ranges, stretch_info = plan_stretch(ds, bands, (xmin, ymin, xmax, ymax), stretch)
    if stretch_info is not None and stretch_info["mode"] != "none":
        shown = ", ".join(f"{a:g}-{b:g}" for a, b in ranges)
        how = (f"{stretch_info['low']:g}-{stretch_info['high']:g} % percentiles"
               if stretch_info["mode"] == "percentile" else "the given min/max")
        warnings.append(f"the {stretch_info['dtype']} bands {bands} were stretched to "
                        f"8 bits by {how} ({shown})")
    gcrs, note = grid_crs(ds.crs, (xmin, ymin, xmax, ymax))
    src_gsd = _source_gsd(ds, (xmin, ymin, xmax, ymax), geodesic=note is not None)
    if note:
        warnings.append(note)
        xmin, ymin, xmax, ymax = transform_bounds(ds.crs, gcrs, xmin, ymin, xmax, ymax,
                                                  densify_pts=21)
    unit = gcrs.linear_units_factor[1]
    gsd = gsd_m / unit
    width = int(math.ceil((xmax - xmin) / gsd - 1e-6))
    height = int(math.ceil((ymax - ymin) / gsd - 1e-6))
    # a millionth of a pixel of slack: coordinates one pixel apart differ by a float's
    # rounding (-1690.2 - -1690.3 = 0.09999999999990905)
    short = gsd * (1.0 - 1e-6)
    if width < 1 or height < 1 or (xmax - xmin) < short or (ymax - ymin) < short:
        raise InputError(f"the extent ({xmax - xmin:.2f} x {ymax - ymin:.2f} m) is smaller "
                         f"than one pixel at the model's {gsd_m} m GSD")
    if width * height > max_pixels:
        raise InputError(
            f"the extent is too large for one in-extent detection: {width} x {height} px "
            f"at {gsd_m} m ({width * height / 1e6:.0f} Mpx > {max_pixels / 1e6:.0f} Mpx); "
            f"zoom in or use the batch algorithm", P.E_INVALID_INPUT)
    ratio = src_gsd / gsd_m
    if ratio > 2.0 or ratio < 0.5:
        warnings.append(f"the raster's GSD ({src_gsd:.3f} m) is far from the model's "
                        f"({gsd_m} m); it is resampled, expect lower accuracy")
    return Grid(Affine(gsd, 0.0, xmin, 0.0, -gsd, ymax), width, height,
                gcrs.to_wkt(), bands, src_gsd, warnings,
                source_crs_wkt=ds.crs.to_wkt() if note else None,
                stretch=ranges, stretch_info=stretch_info)


def _source_gsd(ds, bounds: Sequence[float], geodesic: bool) -> float:
    """The raster's ground pixel size, metres.

    Its pixel size in CRS units times the CRS's linear unit (metre CRSs, ``geodesic``
    False), or times the ground metres per unit at the centre of ``bounds``
    (:func:`ground_scale`: degrees, Web Mercator)."""
    a, b, d, e = ds.transform.a, ds.transform.b, ds.transform.d, ds.transform.e
    px = math.hypot(a, d) if b or d else abs(a)
    py = math.hypot(b, e) if b or d else abs(e)
    if not geodesic:
        return float(math.sqrt(px * py) * ds.crs.linear_units_factor[1])
    xmin, ymin, xmax, ymax = bounds
    try:
        east, north = ground_scale(ds.crs, (xmin + xmax) / 2, (ymin + ymax) / 2,
                                   max(px, py))
    except Exception:  # noqa: BLE001 - fall back to the CRS's nominal unit
        east = north = ds.crs.linear_units_factor[1] if ds.crs.is_projected else 1.0
    if not (math.isfinite(east) and math.isfinite(north)):
        east = north = ds.crs.linear_units_factor[1] if ds.crs.is_projected else 1.0
    return float(math.sqrt(px * east * py * north))


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


def _alpha_band(ds) -> Optional[int]:
    """1-based index of the raster's alpha band, or None."""
    from rasterio.enums import ColorInterp
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return None


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
        alpha = _alpha_band(ds)
        self.vrt = WarpedVRT(ds, crs=grid.crs_wkt, transform=grid.transform, width=grid.width,
                             height=grid.height, resampling=Resampling.bilinear,
                             add_alpha=alpha is None)
        # the raster's own alpha band, or the added one (last)
        self.alpha = alpha or self.vrt.count

    def read(self, row: int, col: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """Tile with top-left pixel (row, col), ``size`` x ``size``.

        ``row``/``col`` may be negative or the tile may run past the grid (shifted
        tilings, grids smaller than a tile): the missing part is padded by reflection.

        Returns:
            ``(image, valid)``: image uint8 (bands, size, size), stretched when the
            grid says so (:func:`to_uint8`); valid bool (size, size), False on
            nodata, outside the raster and padding.

        Raises:
            ValueError: the tile does not overlap the grid.
            InputError: GDAL cannot read the pixels (:func:`read_failure`).
        """
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, self.grid.height), min(col + size, self.grid.width)
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"tile at ({row}, {col}) size {size} misses the grid")
        try:
            data = self.vrt.read(self.grid.bands + [self.alpha],
                                 window=Window(c0, r0, c1 - c0, r1 - r0))
        except RasterioIOError as exc:
            if self.damaged == "raise":
                raise read_failure(self.path, exc) from None
            data = self._salvage(r0, c0, r1, c1)
        img, valid = to_uint8(data[:-1], self.grid.stretch), data[-1] > 0
        pads = ((r0 - row, row + size - r1), (c0 - col, col + size - c1))
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
        from rasterio.windows import Window

        bands = self.grid.bands + [self.alpha]
        out = np.zeros((len(bands), r1 - r0, c1 - c0), dtype=self.vrt.dtypes[0])
        todo = [(r0, c0, r1, c1)]
        while todo:
            a0, b0, a1, b1 = todo.pop()
            try:
                out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = self.vrt.read(
                    bands, window=Window(b0, a0, b1 - b0, a1 - a0))
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
