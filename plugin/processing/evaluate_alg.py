"""*Evaluate against reference polygons* (``ortholens:evaluate``): pixel IoU and object
precision/recall/F1 of detections, scored as ``protocol.metrics`` scores them (the
benchmark's definition), written as JSON and HTML."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsRectangle,
    QgsUnitTypes,
)

from .common import with_help
from .rasterize import burn, grid_for, transformed


def compare_masks(pred, ref, min_pixels: int = 20, iou_match: float = 0.5) -> Dict[str, Any]:
    """Pixel IoU/precision/recall/F1 and object precision/recall/F1 of two masks.

    Args:
        pred, ref: bool (H, W) masks of the detections and the reference.
        min_pixels: smaller 8-connected objects are ignored on both sides.
        iou_match: IoU for a detected object to match a reference object.

    Returns:
        ``protocol.metrics.Counts.summary()`` plus ``matched_objects`` and the pixel
        counts ``tp_px``, ``fp_px``, ``fn_px``; a ratio without a denominator is None.

    Raises:
        ImportError: scipy is missing (``protocol.metrics`` labels objects with it).
    """
    from protocol.metrics import compare

    counts = compare(pred, ref, min_pixels=min_pixels, iou_match=iou_match)
    report = {k: None if isinstance(v, float) and math.isnan(v) else v
              for k, v in counts.summary().items()}
    report.update(matched_objects=counts.tp_obj, tp_px=counts.tp_px, fp_px=counts.fp_px,
                  fn_px=counts.fn_px)
    return report


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    """Compare detections with reference polygons on a common pixel grid."""

    DETECTIONS, REFERENCE, AREA = "DETECTIONS", "REFERENCE", "AREA"
    PIXEL_SIZE, IOU, MIN_PIXELS = "PIXEL_SIZE", "IOU", "MIN_PIXELS"
    OUTPUT_JSON, OUTPUT_HTML = "OUTPUT_JSON", "OUTPUT_HTML"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate against reference polygons"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Rasterises the detections and the reference polygons on one grid (the "
                "reference layer's CRS, a metre CRS, at the given pixel size) over the area "
                "(default: both layers' extents) and reports pixel IoU, precision, recall "
                "and F1, and object precision, recall and F1: objects are 8-connected "
                "components of at least 'smallest object' pixels, matched one-to-one when "
                "their IoU reaches the threshold (the project's benchmark convention). "
                "Writes a JSON report and, optionally, an HTML one.")

    def createInstance(self):  # noqa: N802
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        poly = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.DETECTIONS, "Detections", poly))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.REFERENCE, "Reference polygons", poly), "The ground truth."))
        self.addParameter(with_help(QgsProcessingParameterExtent(
            self.AREA, "Area", optional=True), "Default: both layers' extents."))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.PIXEL_SIZE, "Pixel size (m)", QgsProcessingParameterNumber.Double,
            defaultValue=0.1, minValue=0.01, maxValue=100.0),
            "The grid both layers are rasterised on, in the reference layer's CRS."))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.IOU, "IoU for an object match", QgsProcessingParameterNumber.Double,
            defaultValue=0.5, minValue=0.01, maxValue=1.0),
            "A detected object matches a reference object from this IoU on."))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.MIN_PIXELS, "Smallest object (pixels)", QgsProcessingParameterNumber.Integer,
            defaultValue=20, minValue=1), "Smaller objects are ignored on both sides."))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, "Metrics (JSON)", "JSON files (*.json)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Report (HTML)", "HTML files (*.html)", optional=True,
            createByDefault=False))
        for key, label in (("PIXEL_IOU", "Pixel IoU"), ("OBJECT_F1", "Object F1"),
                           ("OBJECT_PRECISION", "Object precision"),
                           ("OBJECT_RECALL", "Object recall")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Rasterise both layers on one grid and write the metrics (JSON, HTML).

        Raises:
            QgsProcessingException: a missing layer, a reference not in a metre CRS,
                empty layers, a grid too large, or scipy missing.
        """
        det = self.parameterAsSource(parameters, self.DETECTIONS, context)
        ref = self.parameterAsSource(parameters, self.REFERENCE, context)
        if det is None or ref is None:
            raise QgsProcessingException("Both the detections and the reference are needed.")
        crs = ref.sourceCrs()
        if not crs.isValid() or crs.isGeographic() or crs.mapUnits() != QgsUnitTypes.DistanceMeters:
            raise QgsProcessingException("The reference layer must be in a projected metre "
                                         "CRS (reproject it first).")
        px = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
        ref_geoms = transformed(ref, crs, context, feedback)
        det_geoms = transformed(det, crs, context, feedback)
        if parameters.get(self.AREA) not in (None, ""):
            area = self.parameterAsExtent(parameters, self.AREA, context, crs)
        else:
            area = QgsRectangle()
            area.setMinimal()
            for g in ref_geoms + det_geoms:
                area.combineExtentWith(g.boundingBox())
            if area.isEmpty():
                raise QgsProcessingException("Both layers are empty: nothing to evaluate.")
        try:
            w, h, gt = grid_for(area, px)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(f"Rasterising on {w} x {h} pixels of {px} m")
        wkt = crs.toWkt()
        pred = burn(det_geoms, w, h, gt, wkt) > 0
        truth = burn(ref_geoms, w, h, gt, wkt) > 0
        feedback.setProgress(50)
        try:
            m = compare_masks(pred, truth, self.parameterAsInt(parameters, self.MIN_PIXELS,
                                                               context),
                              self.parameterAsDouble(parameters, self.IOU, context))
        except ImportError:
            raise QgsProcessingException("scipy is needed for object metrics (python3-scipy "
                                         "or pip install scipy in QGIS's Python)") from None
        report = dict(m, pixel_size_m=px, width_px=w, height_px=h,
                      area=[area.xMinimum(), area.yMinimum(), area.xMaximum(), area.yMaximum()],
                      crs=crs.authid() or wkt, detections=det.sourceName(),
                      reference=ref.sourceName(),
                      iou_match=self.parameterAsDouble(parameters, self.IOU, context),
                      min_pixels=self.parameterAsInt(parameters, self.MIN_PIXELS, context),
                      detections_count=len(det_geoms), reference_count=len(ref_geoms))
        out_json = self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context)
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        results = {self.OUTPUT_JSON: out_json, "PIXEL_IOU": m["pixel_iou"],
                   "OBJECT_F1": m["object_f1"], "OBJECT_PRECISION": m["object_precision"],
                   "OBJECT_RECALL": m["object_recall"]}
        out_html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        if out_html:
            Path(out_html).write_text(html_report(report), encoding="utf-8")
            results[self.OUTPUT_HTML] = out_html
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        feedback.pushInfo(f"pixel IoU {fmt(m['pixel_iou'])}, object P {fmt(m['object_precision'])}"
                          f" R {fmt(m['object_recall'])} F1 {fmt(m['object_f1'])}")
        return results


def html_report(r: Dict[str, Any]) -> str:
    """A small self-contained HTML page of a metrics report."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in r.items())
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ortholens evaluation"
            "</title><style>body{font-family:sans-serif}th{text-align:left;padding-right:"
            "1em}</style></head><body><h1>Ortholens evaluation</h1>"
            f"<p>{html.escape(str(r.get('detections')))} against "
            f"{html.escape(str(r.get('reference')))}</p><table>{rows}</table></body></html>")
