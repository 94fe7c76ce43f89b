"""What *Evaluate* scores: detections against reference masks (rasters) or polygons, on
one pixel grid per reference tile, per coverage polygon, or over one area, counted as
``protocol.metrics`` counts them and pooled over the grids (as the project's held-out
evaluation pools the pv01 tiles).

Each grid is scored on its own: the detections are burnt on it (pixel centres, GDAL's
``RasterizeLayer``), objects are 8-connected components of at least ``min_pixels``
matched one-to-one from ``iou`` on, and the counts of every grid are added up; so
scattered tiles never make one huge grid. A reference that covers most of a grid is
said in a warning: a polygonized mask whose background (DN = 0) polygon was left in
scores next to nothing.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from qgis.core import QgsGeometry, QgsRectangle

from .rasterize import burn, grid_for, transformed

#: Share of a grid a reference may cover before a warning says it looks like a
#: background polygon (or an inverted mask).
MOSTLY = 0.5


@dataclass
class Scored:
    """The pooled counts of the grids scored, and what each grid gave.

    Attributes:
        counts: ``protocol.metrics.Counts`` summed over the grids.
        grids: per grid ``{"name", "width_px", "height_px", **summary}``.
        warnings: sentences for the user.
    """

    counts: Any = None
    grids: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def add(self, name: str, pred, truth, min_pixels: int, iou: float) -> None:
        """Score one grid (bool (H, W) masks of detections and reference) and add it.

        Raises:
            ImportError: scipy is missing (``protocol.metrics`` labels with it).
        """
        from protocol.metrics import Counts, compare
        c = compare(pred, truth, min_pixels=min_pixels, iou_match=iou)
        if self.counts is None:
            self.counts = Counts()
        self.counts.add(c)
        self.grids.append(dict(name=name, width_px=int(truth.shape[1]),
                               height_px=int(truth.shape[0]), **clean(c.summary())))
        share = float(truth.mean()) if truth.size else 0.0
        if share > MOSTLY:
            self.warnings.append(
                f"The reference covers {share:.0%} of {name}: is it the background (DN = "
                f"0) of a polygonized mask, or an inverted mask? Leave that polygon out, "
                f"or give the mask raster itself as a reference mask.")

    def summary(self) -> Dict[str, Any]:
        """:meth:`protocol.metrics.Counts.summary` of the pooled counts (None for a ratio
        without a denominator) plus ``matched_objects`` and the pixel counts."""
        if self.counts is None:
            return {}
        c = self.counts
        return dict(clean(c.summary()), matched_objects=c.tp_obj, tp_px=c.tp_px,
                    fp_px=c.fp_px, fn_px=c.fn_px)


def clean(summary: Dict[str, Any]) -> Dict[str, Any]:
    """A metrics summary with NaN (no denominator) as None."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in summary.items()}


def detections_in(sources: Sequence[Any], crs, rect: QgsRectangle,
                  context) -> List[QgsGeometry]:
    """The geometries of the feature sources (layers) ``sources`` meeting ``rect`` (in
    ``crs``), in ``crs``."""
    return [g for source in sources for g in transformed(source, crs, context, rect=rect)]


def tile_of(mask_name: str) -> str:
    """The tile a reference mask belongs to: its name without ``_mask`` (pv01's
    ``PV01_325228_1203845_mask`` -> ``PV01_325228_1203845``)."""
    name = Path(str(mask_name)).stem
    return name[:-len("_mask")] if name.lower().endswith("_mask") else name


def detections_of(tile: str, layers: Sequence[Any]) -> List[Any]:
    """The detection layers of one tile: those whose name or file names it (as
    *Detect objects* names its results), else all of them."""
    own = [layer for layer in layers if tile in layer.name() or tile in layer.source()]
    return own or list(layers)


def score_masks(detections: Sequence[Any], masks: Sequence[Any], context, feedback,
                min_pixels: int, iou: float, value: Optional[int] = None) -> Scored:
    """Score detections on the grid of each reference mask raster.

    Args:
        detections: the detection layers: one for all, or one per tile (a mask is
            scored against the layers naming its tile, :func:`detections_of`; pv01's
            tiles overlap one another by up to 7 m, so a tile scored with its
            neighbour's detections is not scored as the held-out evaluation scores it).
        masks: raster layers of reference masks (GDAL files): the reference is band 1
            ``== value``, or non-zero (and not nodata) when ``value`` is None.
        context, feedback: the algorithm's.
        min_pixels, iou: object size and match threshold.
        value: the class's value in the masks, or None.

    Raises:
        ValueError: a mask GDAL cannot open.
    """
    from osgeo import gdal
    out = Scored()
    for i, layer in enumerate(masks):
        if feedback.isCanceled():
            break
        ds = gdal.Open(layer.source())
        if ds is None:
            raise ValueError(f"cannot read the mask {layer.source()}")
        band = ds.GetRasterBand(1).ReadAsArray()
        truth = band == value if value is not None else band != 0
        nodata = ds.GetRasterBand(1).GetNoDataValue()
        if nodata is not None and value is None:
            truth &= band != nodata
        own = detections_of(tile_of(layer.source()), detections)
        geoms = detections_in(own, layer.crs(), layer.extent(), context)
        pred = burn(geoms, ds.RasterXSize, ds.RasterYSize, ds.GetGeoTransform(),
                    ds.GetProjection()) > 0
        out.add(layer.name(), pred, truth, min_pixels, iou)
        out.grids[-1]["detections"] = [d.name() for d in own]
        feedback.setProgress(100.0 * (i + 1) / max(1, len(masks)))
        ds = None
    return out


def score_polygons(detections: Sequence[Any], ref_geoms: List[QgsGeometry], crs, areas: List[Any],
                   pixel_size: float, context, feedback, min_pixels: int,
                   iou: float) -> Scored:
    """Score the detection layers against reference polygons (in ``crs``) on one grid
    per area: a coverage polygon (pixels outside it are left out on both sides) or an
    extent (:class:`QgsRectangle`).

    Raises:
        ValueError: a grid larger than ``rasterize.grid_for`` allows.
    """
    out = Scored()
    wkt = crs.toWkt()
    for i, area in enumerate(areas):
        if feedback.isCanceled():
            break
        polygon = area if isinstance(area, QgsGeometry) else None
        rect = area.boundingBox() if polygon is not None else area
        w, h, gt = grid_for(rect, pixel_size)
        refs = [g for g in ref_geoms if g.boundingBox().intersects(rect)]
        pred = burn(detections_in(detections, crs, rect, context), w, h, gt, wkt) > 0
        truth = burn(refs, w, h, gt, wkt) > 0
        name = f"area {i + 1} ({w} x {h} px)" if len(areas) > 1 else f"{w} x {h} px"
        if polygon is not None:
            inside = burn([polygon], w, h, gt, wkt) > 0
            pred, truth = pred & inside, truth & inside
            name = f"coverage polygon {i + 1} ({w} x {h} px)"
        out.add(name, pred, truth, min_pixels, iou)
        feedback.setProgress(100.0 * (i + 1) / max(1, len(areas)))
    return out


def html_report(r: Dict[str, Any]) -> str:
    """A small self-contained HTML page of a metrics report: its warnings, the pooled
    figures, one row per grid."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    warn = "".join(f"<p style='color:#9a6700'>{html.escape(w)}</p>"
                   for w in r.get("warnings") or [])
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>"
                   for k, v in r.items() if k not in ("grids", "warnings"))
    keys = ("name", "pixel_iou", "object_f1", "objects_true", "false_objects",
            "missed_objects")
    grids = "".join("<tr>" + "".join(f"<td>{cell(g.get(k))}</td>" for k in keys) + "</tr>"
                    for g in r.get("grids") or [])
    head = "".join(f"<th>{k}</th>" for k in keys)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ortholens evaluation"
            "</title><style>body{font-family:sans-serif}th{text-align:left;padding-right:"
            "1em}td{padding-right:1em}</style></head><body><h1>Ortholens evaluation</h1>"
            f"<p>{html.escape(str(r.get('detections')))} against "
            f"{html.escape(str(r.get('reference')))}</p>{warn}<table>{rows}</table>"
            f"<h2>Per grid</h2><table><tr>{head}</tr>{grids}</table></body></html>")


__all__ = ["MOSTLY", "Scored", "clean", "detections_in", "tile_of", "detections_of",
           "score_masks", "score_polygons", "html_report"]
