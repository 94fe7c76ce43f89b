"""*Detect objects*: a streaming batch job of the daemon over a raster of any size."""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .common import DEFAULT_MODEL, connect, describe, model_ids, raster_file

EXECUTORS = ["local", "ray"]


class DetectObjectsAlgorithm(QgsProcessingAlgorithm):
    """Detect objects in a raster (or a part of it) with an Ortholens model.

    The daemon runs it as a *batch job*: chunk by chunk, polygons streamed to a
    GeoPackage, bounded memory, resumable (``ortholens:batchjobs``). The result equals
    the dock's *Detect in extent* on the same area. The features are then copied to
    the chosen output (GeoPackage, memory layer, ...), keeping only those that meet the
    coverage polygons when a coverage layer is given.
    """

    INPUT, EXTENT, COVERAGE, MODEL = "INPUT", "EXTENT", "COVERAGE", "MODEL"
    THRESHOLD, MIN_AREA, CHUNK_PX, EXECUTOR = "THRESHOLD", "MIN_AREA", "CHUNK_PX", "EXECUTOR"
    OUTPUT = "OUTPUT"

    def name(self) -> str:
        return "detect"

    def displayName(self) -> str:  # noqa: N802
        return "Detect objects"

    def shortHelpString(self) -> str:  # noqa: N802
        ids = model_ids()
        models = ", ".join(ids) if ids else f"daemon not reachable now; default {DEFAULT_MODEL}"
        return ("Detects objects (rooftop solar panels with the shipped model) in a raster "
                "file of any size, a VRT mosaic included, and writes typed polygons "
                "(class, score, area_m2, model, model_version). The daemon processes the "
                "raster chunk by chunk with bounded memory and records progress, so an "
                "interrupted job can be resumed with 'List / resume batch jobs'. Objects "
                "crossing chunk borders are kept exactly once; the polygons equal those "
                "of 'Detect in extent' on the same area.\n\n"
                "Extent: the area to search (default: the whole raster). Coverage: only "
                "detections that meet these polygons are kept, and the search is limited "
                "to their bounding box.\n\n"
                f"Models: {models}.")

    def createInstance(self):  # noqa: N802
        return DetectObjectsAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, "Orthophoto (8-bit RGB raster file: GeoTIFF, VRT, COG)"))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, "Extent (default: the whole raster)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.COVERAGE, "Coverage polygons (keep detections meeting them)",
            [QgsProcessing.TypeVectorPolygon], optional=True))
        ids = model_ids()
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, "Model id" + (f" ({', '.join(ids)})" if ids else ""),
            defaultValue=DEFAULT_MODEL if not ids or DEFAULT_MODEL in ids else ids[0]))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, "Probability threshold (default: the model's)",
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.01, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Smallest object, m² (default: the model's)",
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.0, maxValue=1e6))
        chunk = QgsProcessingParameterNumber(
            self.CHUNK_PX, "Chunk size, pixels at the model's resolution",
            QgsProcessingParameterNumber.Integer, defaultValue=2048, minValue=32,
            maxValue=16384)
        executor = QgsProcessingParameterEnum(
            self.EXECUTOR, "Run chunks on", options=["this computer (daemon)",
                                                     "a Ray cluster (RAY_ADDRESS)"],
            defaultValue=0)
        for p in (chunk, executor):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Objects detected"))
        self.addOutput(QgsProcessingOutputString("JOB_ID", "Batch job id"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        path = raster_file(layer)
        crs = layer.crs()
        if not crs.isValid():
            raise QgsProcessingException(f"'{layer.name()}' has no valid CRS.")
        area = None
        if parameters.get(self.EXTENT) not in (None, ""):
            area = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        coverage = None
        cov_source = self.parameterAsSource(parameters, self.COVERAGE, context)
        if cov_source is not None:
            ct = QgsCoordinateTransform(cov_source.sourceCrs(), crs, context.transformContext())
            geoms = []
            for f in cov_source.getFeatures(QgsFeatureRequest().setNoAttributes()):
                g = QgsGeometry(f.geometry())
                if g.isEmpty():
                    continue
                g.transform(ct)
                geoms.append(g)
            if not geoms:
                raise QgsProcessingException("The coverage layer has no polygons.")
            coverage = QgsGeometry.unaryUnion(geoms)
            box = coverage.boundingBox()
            area = box if area is None else area.intersect(box)
            if area.isEmpty():
                raise QgsProcessingException("The extent and the coverage do not overlap.")
        model = self.parameterAsString(parameters, self.MODEL, context).strip() or DEFAULT_MODEL
        options: Dict[str, Any] = {
            "chunk_px": self.parameterAsInt(parameters, self.CHUNK_PX, context),
            "executor": EXECUTORS[self.parameterAsEnum(parameters, self.EXECUTOR, context)]}
        for key, pname in (("threshold", self.THRESHOLD), ("min_area_m2", self.MIN_AREA)):
            if parameters.get(pname) not in (None, ""):
                options[key] = self.parameterAsDouble(parameters, pname, context)
        extent = extent_crs = None
        if area is not None:
            extent = [area.xMinimum(), area.yMinimum(), area.xMaximum(), area.yMaximum()]
            from ..tasks import crs_wkt
            extent_crs = crs_wkt(crs)
        out = os.path.join(QgsProcessingUtils.tempFolder(),
                           f"ortholens_batch_{uuid.uuid4().hex[:12]}.gpkg")

        from ..batch_client import run_batch
        from ..client import JobCancelled

        def on_progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            if message:
                feedback.setProgressText(message)

        client = connect(feedback)
        feedback.pushInfo(f"Batch job: {path} with {model}, chunks of "
                          f"{options['chunk_px']} px, on {options['executor']}")
        try:
            result = run_batch(client, {"kind": "file", "path": path}, model, out,
                               extent=extent, extent_crs=extent_crs,
                               on_progress=on_progress, is_cancelled=feedback.isCanceled,
                               **options)
        except JobCancelled:
            feedback.reportError("Cancelled; the job can be resumed with 'List / resume "
                                 "batch jobs'.")
            return {}
        except Exception as exc:  # noqa: BLE001 - reported to the user
            raise QgsProcessingException(describe(exc)) from None
        finally:
            client.close()
        stats = result.get("stats") or {}
        for w in stats.get("warnings") or []:
            feedback.pushWarning(w)
        feedback.pushInfo(f"{stats.get('count')} polygons in {stats.get('chunks')} chunks, "
                          f"{stats.get('seconds')} s; job {result.get('job_id')}")
        return self._copy(out, stats.get("layer") or "detections", coverage, parameters,
                          context, feedback, result.get("job_id", ""))

    def _copy(self, path, table, coverage, parameters, context, feedback, job_id):
        src = QgsVectorLayer(f"{path}|layername={table}", "batch", "ogr")
        if not src.isValid():
            raise QgsProcessingException(f"cannot open the daemon's output {path}")
        fields = QgsFields()
        keep = [i for i, f in enumerate(src.fields()) if f.name() not in ("fid", "chunk")]
        for i in keep:
            fields.append(src.fields().at(i))
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                          QgsWkbTypes.MultiPolygon, src.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        engine = None
        if coverage is not None:
            engine = QgsGeometry.createGeometryEngine(coverage.constGet())
            engine.prepareGeometry()
        total = max(1, src.featureCount())
        n = 0
        for i, f in enumerate(src.getFeatures()):
            if feedback.isCanceled():
                break
            g = f.geometry()
            if engine is not None and not engine.intersects(g.constGet()):
                continue
            out = QgsFeature(fields)
            out.setGeometry(g)
            out.setAttributes([f.attributes()[j] for j in keep])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
            n += 1
            if i % 1000 == 0:
                feedback.setProgress(99.0 + i / total)
        del src
        return {self.OUTPUT: dest, "COUNT": n, "JOB_ID": job_id}
