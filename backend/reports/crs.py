"""The CRS an inventory is computed in, and what moving geometries between CRSs needs.

Figures in metres need a projected CRS whose axes are in metres and whose areas are
true to within :data:`MAX_AREA_SCALE_ERROR` at the layer's centre (PROJ's areal scale
factor: 1.0004 at most in UTM, 1.42 in Web Mercator at 32.5° N). A result layer in
such a CRS is used as it is; any other (degrees, feet, Web Mercator) is reprojected to
the UTM zone of the layer's centre (:func:`pyproj.database.query_utm_crs_info`), and
the report says so.

Azimuths: a bearing measured on the map is relative to grid north; true north differs
from it by the meridian convergence, which :func:`convergence_deg` reads from PROJ's
projection factors (``pyproj.Proj.get_factors``) at a point. Adding it to a grid
bearing gives the bearing from true north (exact for conformal projections: UTM,
Transverse Mercator, Lambert conformal, the Swiss oblique Mercator).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import shapely
from pyproj import CRS, Proj, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

#: Unit names PROJ gives metre axes.
_METRES = ("metre", "meter", "m")
#: Largest relative error of areas a CRS may have at the layer's centre to be used as
#: it is (1 %; UTM's is 0.2 % at most, at the edge of a zone).
MAX_AREA_SCALE_ERROR = 0.01


def horizontal(crs: CRS) -> CRS:
    """The horizontal part of a compound CRS (``crs`` itself otherwise)."""
    return crs.sub_crs_list[0] if crs.is_compound and crs.sub_crs_list else crs


def in_metres(crs: CRS) -> bool:
    """True for a projected CRS whose two axes are in metres."""
    h = horizontal(crs)
    return bool(h.is_projected and h.axis_info
                and all(a.unit_name.lower() in _METRES for a in h.axis_info[:2]))


def local_utm(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone of a point (degrees east, north), e.g. EPSG:32651 for
    120.4° E, 32.5° N.

    Raises:
        ValueError: the point is outside every UTM zone (beyond 84° N or 80° S).
    """
    found = query_utm_crs_info(datum_name="WGS 84",
                               area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not found:
        raise ValueError(f"no UTM zone covers {lon:.4f}, {lat:.4f}")
    return CRS.from_authority(found[0].auth_name, found[0].code)


def lonlat_centre(geoms: Sequence, crs: CRS) -> Tuple[float, float]:
    """Longitude and latitude (degrees) of the centre of the geometries' bounds."""
    x0, y0, x1, y1 = shapely.total_bounds(np.asarray(geoms, dtype=object))
    to_ll = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_ll.transform((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return float(lon), float(lat)


def working_crs(crs: CRS, geoms: Sequence) -> Tuple[CRS, str]:
    """The CRS the figures of ``geoms`` (in ``crs``) are computed in, and a note.

    Returns:
        ``(crs, "")`` when ``crs`` is projected in metres with areas true to
        :data:`MAX_AREA_SCALE_ERROR` at the geometries' centre, else the UTM zone of that
        centre and a sentence saying that they were reprojected and why, to print in
        the report and the reply.

    Raises:
        ValueError: no UTM zone covers the centre.
    """
    lon, lat = lonlat_centre(geoms, crs)
    if in_metres(crs):
        scale = float(Proj(horizontal(crs)).get_factors(lon, lat).areal_scale)
        if abs(scale - 1.0) <= MAX_AREA_SCALE_ERROR:
            return crs, ""
        why = f"distorts areas by {100.0 * (scale - 1.0):+.0f} % here"
    elif horizontal(crs).is_geographic:
        why = "is geographic (degrees)"
    else:
        why = "is not in metres"
    utm = local_utm(lon, lat)
    return utm, (f"The detections' CRS, {crs.name}, {why}: every figure is computed "
                 f"in {utm.name} ({utm.to_string()}), the UTM zone of the layer's centre, "
                 f"and the output layers are in that CRS.")


def reproject(geoms: Sequence, src: CRS, dst: CRS) -> List:
    """``geoms`` (shapely) moved from ``src`` to ``dst`` (the same list when equal)."""
    if src == dst:
        return list(geoms)
    t = Transformer.from_crs(src, dst, always_xy=True)

    def move(xy: np.ndarray) -> np.ndarray:
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return list(shapely.transform(np.asarray(geoms, dtype=object), move))


def to_lonlat(crs: CRS, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (degrees, WGS 84) of points ``x, y`` of ``crs``."""
    lon, lat = Transformer.from_crs(crs, CRS.from_epsg(4326),
                                    always_xy=True).transform(x, y)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def convergence_deg(crs: CRS, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Meridian convergence of projected ``crs`` at points (degrees east, north):
    the bearing of grid north from true north, degrees clockwise (about -1.39° in UTM
    zone 51N at 120.42° E, 32.52° N, west of its central meridian 123° E). Add it to
    a grid bearing to get a true one.
    """
    factors = Proj(horizontal(crs)).get_factors(np.asarray(lon, dtype=float),
                                                np.asarray(lat, dtype=float))
    return np.asarray(factors.meridian_convergence, dtype=float)


__all__ = ["MAX_AREA_SCALE_ERROR", "horizontal", "in_metres", "local_utm", "lonlat_centre", "working_crs",
           "reproject", "to_lonlat", "convergence_deg"]
