"""Plugin-side rasterising and mask metrics (GDAL from QGIS's Python, numpy, scipy).

The metrics follow the project's benchmark convention (``backend/metrics.py``): objects
are 8-connected components of a mask with at least ``min_pixels`` pixels, and a
predicted object matches a reference object when their IoU is >= ``iou_match``
(greedy by descending IoU, one-to-one). Nothing here imports rasterio or torch.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import numpy as np

from qgis.core import QgsCoordinateTransform, QgsGeometry


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


def transformed(source, dest_crs, context, feedback=None) -> List[QgsGeometry]:
    """Geometries of a feature source in ``dest_crs``."""
    ct = QgsCoordinateTransform(source.sourceCrs(), dest_crs, context.transformContext())
    out = []
    for f in source.getFeatures():
        if feedback is not None and feedback.isCanceled():
            break
        g = QgsGeometry(f.geometry())
        if g.isNull() or g.isEmpty():
            continue
        g.transform(ct)
        out.append(g)
    return out


def _components(mask: np.ndarray, min_pixels: int):
    from scipy import ndimage
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return labels, 0
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    remap = np.zeros(n + 1, np.int64)
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    return remap[labels], int(keep.sum())


def compare_masks(pred: np.ndarray, ref: np.ndarray, min_pixels: int = 20,
                  iou_match: float = 0.5) -> Dict[str, float]:
    """Pixel IoU/precision/recall/F1 and object precision/recall/F1 of two masks."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp, fp, fn = int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum())
    lp, npred = _components(pred, min_pixels)
    lr, nref = _components(ref, min_pixels)
    ious: List[float] = []
    if npred and nref:
        both = (lp > 0) & (lr > 0)
        inter = np.zeros((npred + 1, nref + 1), np.int64)
        np.add.at(inter, (lp[both], lr[both]), 1)
        ap = np.bincount(lp.ravel(), minlength=npred + 1)
        ar = np.bincount(lr.ravel(), minlength=nref + 1)
        union = ap[:, None] + ar[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        iou[0, :] = 0
        iou[:, 0] = 0
        pairs = np.argwhere(iou >= iou_match)
        order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]]) if len(pairs) else []
        used_p, used_r = set(), set()
        for k in order:
            i, j = pairs[k]
            if i in used_p or j in used_r:
                continue
            used_p.add(i)
            used_r.add(j)
            ious.append(float(iou[i, j]))
    m = len(ious)

    def ratio(a, b):
        return float(a / b) if b else None

    return {"pixel_iou": ratio(tp, tp + fp + fn), "pixel_precision": ratio(tp, tp + fp),
            "pixel_recall": ratio(tp, tp + fn), "pixel_f1": ratio(2 * tp, 2 * tp + fp + fn),
            "object_precision": ratio(m, npred), "object_recall": ratio(m, nref),
            "object_f1": ratio(2 * m, npred + nref),
            "objects_true": nref, "objects_pred": npred, "matched_objects": m,
            "false_objects": npred - m, "missed_objects": nref - m,
            "mean_matched_iou": (sum(ious) / m) if m else None,
            "tp_px": tp, "fp_px": fp, "fn_px": fn}


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
