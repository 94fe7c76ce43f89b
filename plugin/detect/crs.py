"""CRS and extent maths for requests: WKT for the wire, ground scale, metre CRSs, UTM
zones, rectangles as ``(xmin, ymin, xmax, ymax)``.

The daemon takes CRS units as ground metres, so a raster in degrees, feet or Web
Mercator away from the equator is rendered in a true-scale CRS first (see
:func:`is_metric`, :func:`utm_crs`).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsUnitTypes,
)

from protocol.errors import InputError

Extent = Tuple[float, float, float, float]


def crs_wkt(crs: QgsCoordinateReferenceSystem) -> str:
    """The CRS as WKT2 (``WKT_PREFERRED``), the form sent to the daemon."""
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def crs_from_text(text: Optional[str]) -> QgsCoordinateReferenceSystem:
    """A CRS from WKT (what the daemon and the plugin send) or an authority id such as
    ``EPSG:32651``; an invalid CRS when ``text`` is neither."""
    crs = QgsCoordinateReferenceSystem.fromWkt(text or "")
    if not crs.isValid():
        crs = QgsCoordinateReferenceSystem(text or "")
    return crs


def extent_tuple(rect: QgsRectangle) -> Extent:
    """``(xmin, ymin, xmax, ymax)`` of ``rect``, the protocol's extent order."""
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())


def ground_scale(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
                 context: Optional[QgsCoordinateTransformContext] = None) -> tuple:
    """Ground metres per CRS unit along x and y at the centre of ``extent``.

    Metre CRSs whose ellipsoidal scale is within 1 % of 1 (UTM, Gauss-Krüger, national
    grids) return exactly ``(1.0, 1.0)``; degrees, feet and Web Mercator away from the
    equator get their measured scale.

    Raises:
        InputError: the scale cannot be measured (unknown ellipsoid in a non-metre CRS).
    """
    da = QgsDistanceArea()
    da.setSourceCrs(crs, context or QgsProject.instance().transformContext())
    da.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    c = extent.center()
    dx = max(extent.width() * 0.01, 1e-9)
    dy = max(extent.height() * 0.01, 1e-9)
    sx = sy = float("nan")
    try:
        gx = da.convertLengthMeasurement(da.measureLine(QgsPointXY(c.x() - dx / 2, c.y()),
                                                        QgsPointXY(c.x() + dx / 2, c.y())),
                                         QgsUnitTypes.DistanceMeters)
        gy = da.convertLengthMeasurement(da.measureLine(QgsPointXY(c.x(), c.y() - dy / 2),
                                                        QgsPointXY(c.x(), c.y() + dy / 2)),
                                         QgsUnitTypes.DistanceMeters)
        sx, sy = gx / dx, gy / dy
    except Exception:  # noqa: BLE001 - QgsCsException and friends: judged below
        pass
    metric = crs.mapUnits() == QgsUnitTypes.DistanceMeters
    if metric and (not (math.isfinite(sx) and math.isfinite(sy))
                   or (abs(sx - 1.0) < 0.01 and abs(sy - 1.0) < 0.01)):
        return 1.0, 1.0
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise InputError(f"The ground size of a pixel cannot be computed in the CRS "
                         f"{crs.authid() or crs.description()}: reproject the layer "
                         "to a metre CRS.")
    return sx, sy


def layer_gsd(layer) -> Optional[float]:
    """The ground size of a raster layer's pixel, metres: the geometric mean of its
    pixel width and height times the ground scale of its CRS at the layer's centre (the
    engine's ``backend.inference.grid.layer_gsd`` over the whole raster). None for a
    layer without a valid CRS or whose scale cannot be measured."""
    try:
        crs, extent = layer.crs(), layer.extent()
        if not crs.isValid() or extent.isEmpty():
            return None
        east, north = ground_scale(crs, extent)
        px, py = abs(layer.rasterUnitsPerPixelX()), abs(layer.rasterUnitsPerPixelY())
    except (InputError, AttributeError):
        return None
    gsd = math.sqrt(px * east * py * north)
    return gsd if math.isfinite(gsd) and gsd > 0 else None


def is_metric(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
              context: Optional[QgsCoordinateTransformContext] = None) -> bool:
    """True when ``crs`` is projected, in metres and true to scale (within 1 %) at
    ``extent``: then CRS units can be taken as ground metres, as the daemon does."""
    if not crs.isValid() or crs.isGeographic() or crs.mapUnits() != QgsUnitTypes.DistanceMeters:
        return False
    try:
        return ground_scale(crs, extent, context) == (1.0, 1.0)
    except InputError:
        return False


def utm_crs(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
            context: Optional[QgsCoordinateTransformContext] = None) -> QgsCoordinateReferenceSystem:
    """The WGS 84 / UTM zone (EPSG:326zz north, 327zz south) of ``extent``'s centre.

    Raises:
        InputError: the centre cannot be transformed to WGS 84.
    """
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    try:
        ct = QgsCoordinateTransform(crs, wgs84, context or QgsProject.instance().transformContext())
        c = ct.transform(extent.center())
    except QgsCsException as exc:
        raise InputError(f"The map view cannot be located on the globe: {exc}") from None
    zone = min(60, max(1, int(math.floor((c.x() + 180.0) / 6.0)) + 1))
    return QgsCoordinateReferenceSystem(f"EPSG:{32600 + zone if c.y() >= 0 else 32700 + zone}")


__all__ = ["Extent", "crs_wkt", "crs_from_text", "extent_tuple", "ground_scale", "layer_gsd",
           "is_metric",
           "utm_crs"]
