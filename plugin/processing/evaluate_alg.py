"""*Evaluate against reference polygons or masks* (``ortholens:evaluate``): pixel IoU and
object precision/recall/F1 of detections, scored as ``protocol.metrics`` scores them
(the benchmark's definition) on one grid per reference mask, per coverage polygon or
over one area (:mod:`.scoring`), written as JSON and HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsRectangle,
    QgsUnitTypes,
)

from .common import with_help
from .rasterize import on_lattice, transformed
from .scoring import Scored, html_report, score_masks, score_polygons


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    """Compare detections with reference masks or polygons, grid by grid."""

    DETECTIONS, REFERENCE, MASKS, MASK_VALUE = "DETECTIONS", "REFERENCE", "MASKS", "MASK_VALUE"
    COVERAGE, AREA = "COVERAGE", "AREA"
    PIXEL_SIZE, IOU, MIN_PIXELS = "PIXEL_SIZE", "IOU", "MIN_PIXELS"
    OUTPUT_JSON, OUTPUT_HTML = "OUTPUT_JSON", "OUTPUT_HTML"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate against reference polygons or masks"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Scores detections against the ground truth: pixel IoU, precision, recall "
                "and F1, and object precision, recall and F1 (objects are 8-connected "
                "components of at least 'smallest object' pixels, matched one-to-one when "
                "their IoU reaches the threshold: the project's benchmark convention).\n\n"
                "Detections: one layer, or one per tile (e.g. Detect objects run on each "
                "tile): a reference mask is then scored against the detection layers "
                "named after its tile only, so each tile is scored with its own "
                "detection (pv01's tiles overlap one another).\n"
                "Reference masks: rasters whose non-zero pixels (or the given class value) "
                "are the objects, such as pv01's *_mask.tif; each is scored on its own "
                "grid, so scattered tiles never make one huge grid, and the counts of all "
                "are added up.\n"
                "Reference polygons: rasterised with the detections on a grid of the "
                "given pixel size in the reference layer's CRS (a metre CRS), over each "
                "coverage polygon (pixels outside it do not count) or over the area "
                "(default: both layers' extents).\n\n"
                "A reference covering most of a grid is warned about: it is usually the "
                "background (DN = 0) polygon of a polygonized mask. Writes a JSON report "
                "and, optionally, an HTML one (only when the evaluation succeeded).")

    def createInstance(self):  # noqa: N802
        return EvaluateAlgorithm()

    def createCustomParametersWidget(self, parent=None):  # noqa: N802 - QGIS API
        """QGIS's dialog, saying a cancel and a failure right (:mod:`.dialog`)."""
        from .dialog import algorithm_dialog
        return algorithm_dialog(self, parent)

    def initAlgorithm(self, config=None):  # noqa: N802
        poly = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(with_help(QgsProcessingParameterMultipleLayers(
            self.DETECTIONS, "Detections", QgsProcessing.TypeVectorPolygon),
            "One layer, or one per tile: a mask is scored against the layers named after "
            "its tile (as Detect objects names its results), else against all."))
        self.addParameter(with_help(QgsProcessingParameterMultipleLayers(
            self.MASKS, "Reference masks", QgsProcessing.TypeRaster, optional=True),
            "Rasters of the ground truth (non-zero = object), each scored on its own grid."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.REFERENCE, "Reference polygons", poly, optional=True),
            "The ground truth as polygons (instead of masks)."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.COVERAGE, "Scored areas", poly, optional=True),
            "Polygons scored one by one (reference polygons): e.g. the surveyed tiles."))
        self.addParameter(with_help(QgsProcessingParameterExtent(
            self.AREA, "Area", optional=True), "Default: both layers' extents."))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.PIXEL_SIZE, "Pixel size (m)", QgsProcessingParameterNumber.Double,
            defaultValue=0.1, minValue=0.01, maxValue=100.0),
            "The grid reference polygons are rasterised on, in their layer's CRS; masks "
            "keep their own grid."))
        value = with_help(QgsProcessingParameterNumber(
            self.MASK_VALUE, "Class value in masks", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=0, maxValue=65535),
            "The masks' value of the class scored. Default: any non-zero value.")
        value.setFlags(value.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(value)
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
        """Score the detections grid by grid and write the metrics (JSON, HTML).

        Raises:
            QgsProcessingException: no detections, no reference or both kinds, a
                reference not in a metre CRS, empty layers, a grid too large, nothing
                scored, or scipy missing.
        """
        det = [d for d in self.parameterAsLayerList(parameters, self.DETECTIONS, context)
               if d.type() == QgsMapLayer.VectorLayer]
        ref = self.parameterAsSource(parameters, self.REFERENCE, context)
        masks = [m for m in self.parameterAsLayerList(parameters, self.MASKS, context)
                 if m.type() == QgsMapLayer.RasterLayer]
        if not det:
            raise QgsProcessingException("The detections are needed.")
        if (ref is None) == (not masks):
            raise QgsProcessingException("Give the ground truth either as reference masks "
                                         "or as reference polygons (one of the two).")
        min_px = self.parameterAsInt(parameters, self.MIN_PIXELS, context)
        iou = self.parameterAsDouble(parameters, self.IOU, context)
        try:
            if masks:
                value = (self.parameterAsInt(parameters, self.MASK_VALUE, context)
                         if parameters.get(self.MASK_VALUE) not in (None, "") else None)
                feedback.pushInfo(f"Scoring on the grids of {len(masks)} reference mask(s)")
                scored = score_masks(det, masks, context, feedback, min_px, iou, value)
                report: Dict[str, Any] = {"reference": ", ".join(m.name() for m in masks),
                                          "scored_on": "reference masks"}
            else:
                scored, report = self._polygons(parameters, context, feedback, det, ref,
                                                min_px, iou)
        except ImportError:
            raise QgsProcessingException("scipy is needed for object metrics (python3-scipy "
                                         "or pip install scipy in QGIS's Python)") from None
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        if feedback.isCanceled():
            return {}
        if scored.counts is None:
            raise QgsProcessingException("Nothing was scored: no grid was left to compare.")
        return self._write(parameters, context, feedback, scored, report, det, iou, min_px)

    def _polygons(self, parameters, context, feedback, det, ref, min_px: int, iou: float):
        """``(scored, report)`` against reference polygons: per coverage polygon, else
        over one area."""
        crs = ref.sourceCrs()
        if not crs.isValid() or crs.isGeographic() or \
                crs.mapUnits() != QgsUnitTypes.DistanceMeters:
            raise QgsProcessingException("The reference layer must be in a projected metre "
                                         "CRS (reproject it first).")
        px = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
        ref_geoms = transformed(ref, crs, context, feedback)
        cover = self.parameterAsSource(parameters, self.COVERAGE, context)
        areas: List[Any]
        if cover is not None:
            areas = transformed(cover, crs, context, feedback)
            if not areas:
                raise QgsProcessingException("The scored areas layer has no polygons.")
        elif parameters.get(self.AREA) not in (None, ""):
            areas = [self.parameterAsExtent(parameters, self.AREA, context, crs)]
        else:
            area, anchor = QgsRectangle(), QgsRectangle()
            area.setMinimal()
            anchor.setMinimal()
            for g in ref_geoms:
                anchor.combineExtentWith(g.boundingBox())
            for g in ref_geoms + [g for d in det for g in transformed(d, crs, context,
                                                                      feedback)]:
                area.combineExtentWith(g.boundingBox())
            if area.isEmpty():
                raise QgsProcessingException("Both layers are empty: nothing to evaluate.")
            areas = [on_lattice(area, anchor, px) if not anchor.isEmpty() else area]
        feedback.pushInfo(f"Rasterising on {len(areas)} grid(s) of {px} m pixels")
        try:
            scored = score_polygons(det, ref_geoms, crs, areas, px, context, feedback,
                                    min_px, iou)
        except ValueError as exc:
            raise QgsProcessingException(f"{exc}, or give scored areas (one grid each) or "
                                         f"the reference masks") from None
        report = {"reference": ref.sourceName(), "reference_count": len(ref_geoms),
                  "pixel_size_m": px, "crs": crs.authid() or crs.toWkt(),
                  "scored_on": "scored areas" if cover is not None else "one area"}
        if len(scored.grids) == 1:
            report.update(width_px=scored.grids[0]["width_px"],
                          height_px=scored.grids[0]["height_px"])
        if cover is None:
            a = areas[0]
            report["area"] = [a.xMinimum(), a.yMinimum(), a.xMaximum(), a.yMaximum()]
        return scored, report

    def _write(self, parameters, context, feedback, scored: Scored, report: Dict[str, Any],
               det, iou: float, min_px: int) -> Dict[str, Any]:
        """Write the JSON (and HTML) report, say the figures and warnings; the results."""
        m = scored.summary()
        report = dict(m, **report, detections=", ".join(d.name() for d in det), iou_match=iou,
                      min_pixels=min_px, grids=scored.grids, warnings=scored.warnings)
        for w in scored.warnings:
            feedback.pushWarning(w)
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
        feedback.pushInfo(f"{len(scored.grids)} grid(s): pixel IoU {fmt(m['pixel_iou'])}, "
                          f"object P {fmt(m['object_precision'])} R "
                          f"{fmt(m['object_recall'])} F1 {fmt(m['object_f1'])} "
                          f"({m['objects_true']} reference objects, {m['false_objects']} "
                          f"false, {m['missed_objects']} missed)")
        return results


__all__ = ["EvaluateAlgorithm"]
