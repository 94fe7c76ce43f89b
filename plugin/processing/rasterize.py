"""Polygons to masks on a north-up pixel grid, with GDAL from QGIS's Python (no
rasterio): what the evaluation and chip export algorithms compare and write."""

from __future__ import annotations

import math
from typing import Iterable, List, Optional

from qgis.core import QgsCoordinateTransform, QgsFeatureRequest, QgsGeometry, QgsRectangle


def burn(geoms: Iterable[QgsGeometry], width: int, height: int, geotransform,
         wkt_crs: str, values: Optional[Iterable[int]] = None):
    """A uint8 (height, width) array with the polygons burnt in (``values`` or 1).

    Uses ``gdal.RasterizeLayer`` on an in-memory OGR layer (pixel centres, like
    ``gdal_rasterize`` without ``-at``).
    """
    from osgeo import gdal, ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt_crs)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("burn")
    lyr = mem.CreateLayer("polys", srs, ogr.wkbMultiPolygon)
    lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    vals = list(values) if values is not None else None
    for i, g in enumerate(geoms):
        if g is None or g.isEmpty():
            continue
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkb(bytes(g.asWkb())))
        f.SetField("v", int(vals[i]) if vals is not None else 1)
        lyr.CreateFeature(f)
    ds = gdal.GetDriverByName("MEM").Create("", int(width), int(height), 1, gdal.GDT_Byte)
    ds.SetGeoTransform(list(geotransform))
    ds.SetProjection(wkt_crs)
    gdal.RasterizeLayer(ds, [1], lyr, options=["ATTRIBUTE=v"])
    arr = ds.GetRasterBand(1).ReadAsArray()
    ds = mem = None
    return arr


def transformed(source, dest_crs, context, feedback=None,
                rect: Optional[QgsRectangle] = None) -> List[QgsGeometry]:
    """Geometries of a feature source in ``dest_crs`` (empty ones left out; stops early
    when ``feedback`` is cancelled); with ``rect`` (in ``dest_crs``) only those of the
    features whose bounding box meets it."""
    ct = QgsCoordinateTransform(source.sourceCrs(), dest_crs, context.transformContext())
    request = QgsFeatureRequest()
    if rect is not None:
        back = QgsCoordinateTransform(dest_crs, source.sourceCrs(), context.transformContext())
        request.setFilterRect(back.transformBoundingBox(rect))
    out = []
    for f in source.getFeatures(request.setNoAttributes()):
        if feedback is not None and feedback.isCanceled():
            break
        g = QgsGeometry(f.geometry())
        if g.isNull() or g.isEmpty():
            continue
        g.transform(ct)
        out.append(g)
    return out


def grid_for(extent, pixel_size: float, max_pixels: int = 200_000_000):
    """``(width, height, geotransform)`` of a north-up grid over ``extent``.

    Raises:
        ValueError: the grid would exceed ``max_pixels``.
    """
    w = max(1, int(math.ceil(extent.width() / pixel_size - 1e-9)))
    h = max(1, int(math.ceil(extent.height() / pixel_size - 1e-9)))
    if w * h > max_pixels:
        raise ValueError(f"{w} x {h} pixels at {pixel_size} m is too large; use a larger "
                         f"pixel size or a smaller area")
    return w, h, (extent.xMinimum(), pixel_size, 0.0, extent.yMaximum(), 0.0, -pixel_size)


def on_lattice(extent, anchor, pixel_size: float):
    """``extent`` grown outward to the pixel lattice of ``anchor``'s top-left corner
    (pixels of ``pixel_size`` map units): the grid :func:`grid_for` makes over it then
    has pixel edges where a grid starting at ``anchor`` has them. Reference polygons
    traced from a mask have their vertices on the mask's pixel edges, so rasterised on
    this grid they give the mask's pixels back, wherever the detections reach.

    Returns:
        a ``QgsRectangle`` holding ``extent``.
    """
    ax, ay = anchor.xMinimum(), anchor.yMaximum()
    x0 = ax - math.ceil((ax - extent.xMinimum()) / pixel_size - 1e-9) * pixel_size
    y1 = ay + math.ceil((extent.yMaximum() - ay) / pixel_size - 1e-9) * pixel_size
    return QgsRectangle(x0, extent.yMinimum(), extent.xMaximum(), y1)
