"""The output grid of a detection: north-up, at the model's GSD in ground metres.

:func:`plan_grid` covers the requested extent clipped to the raster. The grid's CRS is
the raster's own when that CRS is projected and its units are ground metres within 1 %
where the extent lies (UTM, national grids); otherwise (degrees, Web Mercator away from
the equator, feet) it is the WGS 84 / UTM zone of the extent's centre
(:func:`grid_crs`), so a pixel always covers the model's GSD on the ground. Which bands
feed the model and how non-8-bit values are stretched is ``backend.inference.bands``;
reading the grid's windows is ``backend.inference.raster``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from affine import Affine

import protocol as P
from backend.inference.bands import choose_bands, plan_stretch
from protocol.errors import InputError


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
    from rasterio.warp import transform_bounds

    if ds.crs is None:
        raise InputError("the raster has no CRS; assign one (Layer Properties > Source) "
                         "before detecting")
    bands, warnings = choose_bands(ds, bands_req, n_bands)
    max_pixels = MAX_GRID_PIXELS if max_pixels is None else max_pixels
    xmin, ymin, xmax, ymax = _clipped_extent(ds, extent, extent_crs)
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
    gsd = gsd_m / gcrs.linear_units_factor[1]
    width, height = _grid_size((xmin, ymin, xmax, ymax), gsd, gsd_m, max_pixels)
    ratio = src_gsd / gsd_m
    if ratio > 2.0 or ratio < 0.5:
        warnings.append(f"the raster's GSD ({src_gsd:.3f} m) is far from the model's "
                        f"({gsd_m} m); it is resampled, expect lower accuracy")
    return Grid(Affine(gsd, 0.0, xmin, 0.0, -gsd, ymax), width, height,
                gcrs.to_wkt(), bands, src_gsd, warnings,
                source_crs_wkt=ds.crs.to_wkt() if note else None,
                stretch=ranges, stretch_info=stretch_info)


def layer_gsd(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str]) -> float:
    """The raster's ground pixel size over ``extent`` (in ``extent_crs``; None: the
    whole raster), metres: what chooses the model for a layer (``protocol.choice``).

    Raises:
        InputError: raster without CRS, or an extent that misses the raster.
    """
    if ds.crs is None:
        raise InputError("the raster has no CRS; assign one (Layer Properties > Source) "
                         "before detecting")
    bounds = _clipped_extent(ds, extent, extent_crs)
    _, note = grid_crs(ds.crs, bounds)
    return _source_gsd(ds, bounds, geodesic=note is not None)


def _clipped_extent(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str]
                    ) -> Tuple[float, float, float, float]:
    """``extent`` (in ``extent_crs``, None: the raster's CRS; None: the whole raster)
    in the raster's CRS, clipped to its bounds.

    Raises:
        InputError: an invalid extent CRS, or an extent that misses the raster.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    rb = ds.bounds
    if extent is None:
        return rb.left, rb.bottom, rb.right, rb.top
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
    return xmin, ymin, xmax, ymax


def _grid_size(bounds: Sequence[float], gsd: float, gsd_m: float, max_pixels: int
               ) -> Tuple[int, int]:
    """``(width, height)``, pixels, of a grid of ``gsd`` CRS units (``gsd_m`` metres)
    over ``bounds`` (grid CRS).

    Raises:
        InputError: an extent smaller than one pixel, or more than ``max_pixels``.
    """
    xmin, ymin, xmax, ymax = bounds
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
            f"zoom in, or run it as a batch job (Processing › Ortholens › Detect "
            f"objects)", P.E_INVALID_INPUT)
    return width, height


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
