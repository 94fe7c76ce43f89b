"""*Detect objects* (``ortholens:detect``): a streaming batch job of the daemon over a
raster of any size, its polygons copied to the algorithm's output."""

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
    QgsProcessingUtils,
    QgsVectorLayer,
    QgsWkbTypes,
)

from protocol.errors import JobCancelled
from protocol.params import BatchParams, DetectParams, FileSource

from ..detect.crs import crs_wkt, extent_tuple
from .common import (
    daemon_session,
    model_help,
    model_parameter,
    progress_to,
    raster_file,
    resolve_model,
    with_help,
)

#: ``BatchParams.executor`` of each EXECUTOR choice.
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
        return ("Detects objects (rooftop solar panels with the shipped model) in a raster "
                "file of any size, a VRT mosaic included, and writes typed polygons "
                "(class, score, agreement, area_m2, model, model_version). The engine "
                "processes the raster chunk by chunk with bounded memory and records "
                "progress, so an interrupted job can be resumed with 'List / resume batch "
                "jobs'. Objects crossing chunk borders are kept exactly once; the polygons "
                "equal those of 'Detect in extent' on the same area.\n\n"
                "Orthophoto: an 8-bit RGB raster file (GeoTIFF, VRT, COG).\n"
                "Extent: the area to search (default: the whole raster).\n"
                "Coverage polygons: only detections that meet them are kept, and the "
                "search is limited to their bounding box.\n"
                "Probability threshold, Smallest object (m²): empty means the model "
                "card's values, as in the Ortholens dock.\n"
                "Chunk size (advanced): pixels at the model's resolution (default: the "
                "engine's). Run chunks on: this computer or a Ray cluster (RAY_ADDRESS).\n\n"
                + model_help())

    def createInstance(self):  # noqa: N802
        return DetectObjectsAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(with_help(QgsProcessingParameterRasterLayer(
            self.INPUT, "Orthophoto"), "An 8-bit RGB raster file: GeoTIFF, VRT, COG."))
        self.addParameter(with_help(QgsProcessingParameterExtent(
            self.EXTENT, "Extent", optional=True), "Default: the whole raster."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.COVERAGE, "Coverage polygons", [QgsProcessing.TypeVectorPolygon],
            optional=True), "Keep only detections that meet these polygons."))
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.THRESHOLD, "Probability threshold", QgsProcessingParameterNumber.Double,
            optional=True, minValue=0.01, maxValue=1.0), "Default: the model card's."))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.MIN_AREA, "Smallest object (m²)", QgsProcessingParameterNumber.Double,
            optional=True, minValue=0.0, maxValue=1e6), "Default: the model card's."))
        chunk = with_help(QgsProcessingParameterNumber(
            self.CHUNK_PX, "Chunk size (pixels)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=32, maxValue=16384),
            "Pixels at the model's resolution. Default: the engine's.")
        executor = with_help(QgsProcessingParameterEnum(
            self.EXECUTOR, "Run chunks on", options=["this computer (engine)",
                                                     "a Ray cluster (RAY_ADDRESS)"],
            defaultValue=0), "A Ray cluster is reached at the RAY_ADDRESS of the engine.")
        for p in (chunk, executor):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Objects detected"))
        self.addOutput(QgsProcessingOutputString("JOB_ID", "Batch job id"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Run the batch job and copy its polygons to OUTPUT (COUNT, JOB_ID).

        Raises:
            QgsProcessingException: an unreadable raster, empty coverage, no daemon, or
                a daemon error (the message says which). A cancel is reported, not
                raised: the job stays resumable.
        """
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
        extent = extent_crs = None
        if area is not None:
            extent, extent_crs = extent_tuple(area), crs_wkt(crs)
        optional = {key: self.parameterAsDouble(parameters, pname, context)
                    for key, pname in (("threshold", self.THRESHOLD),
                                       ("min_area_m2", self.MIN_AREA))
                    if parameters.get(pname) not in (None, "")}
        chunk_px = (self.parameterAsInt(parameters, self.CHUNK_PX, context)
                    if parameters.get(self.CHUNK_PX) not in (None, "") else None)
        executor = EXECUTORS[self.parameterAsEnum(parameters, self.EXECUTOR, context)]
        out = os.path.join(QgsProcessingUtils.tempFolder(),
                           f"ortholens_batch_{uuid.uuid4().hex[:12]}.gpkg")
        try:
            with daemon_session(feedback) as client:
                model = resolve_model(client, self.parameterAsString(parameters, self.MODEL,
                                                                     context))
                params = BatchParams(DetectParams(FileSource(path), model, extent=extent,
                                                  extent_crs=extent_crs, **optional),
                                     out_path=out, chunk_px=chunk_px, executor=executor)
                chunks = f"{chunk_px} px" if chunk_px else "the daemon's default size"
                feedback.pushInfo(f"Batch job: {path} with {model}, chunks of {chunks}, "
                                  f"on {executor}")
                result = client.batch(params, progress_to(feedback), feedback.isCanceled)
        except JobCancelled:
            feedback.reportError("Cancelled; the job can be resumed with 'List / resume "
                                 "batch jobs'.")
            return {}
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
