"""*Detect objects* (``ortholens:detect``): a streaming batch job of the daemon over a
raster of any size, its polygons copied to the algorithm's output."""

from __future__ import annotations

from typing import Any, Dict, Optional

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
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsVectorLayer,
    QgsWkbTypes,
)

from protocol.errors import JobCancelled
from protocol.params import BatchParams, DetectParams, FileSource, Stretch

from ..detect.crs import crs_wkt, extent_tuple
from .common import (
    cancelled_text,
    daemon_session,
    given_model,
    model_help,
    model_parameter,
    progress_to,
    raster_file,
    with_help,
)
from .outputs import (ResultStyler, is_temporary, load_when_done, results_file,
                      style_when_done, to_file)

#: ``BatchParams.executor`` of each EXECUTOR choice.
EXECUTORS = ["local", "ray"]


class DetectObjectsAlgorithm(QgsProcessingAlgorithm):
    """Detect objects in a raster (or a part of it) with an Ortholens model.

    The daemon runs it as a *batch job*: region by region, polygons streamed to a
    GeoPackage, bounded memory, resumable (``ortholens:batchjobs``). The result equals
    the dock's *Detect in extent* on the same area. The features are then copied to
    the chosen output (GeoPackage, memory layer, ...), keeping only those that meet the
    coverage polygons when a coverage layer is given.
    """

    INPUT, EXTENT, COVERAGE, MODEL = "INPUT", "EXTENT", "COVERAGE", "MODEL"
    THRESHOLD, MIN_AREA, REGION_PX, EXECUTOR = "THRESHOLD", "MIN_AREA", "REGION_PX", "EXECUTOR"
    BANDS, STRETCH, STRETCH_MIN, STRETCH_MAX = "BANDS", "STRETCH", "STRETCH_MIN", "STRETCH_MAX"
    OUTPUT = "OUTPUT"
    #: STRETCH choices, in order: automatic (percentiles for 16-bit/float), given
    #: min/max, none (values clipped to 0-255)
    STRETCHES = ["automatic: 2-98 % per band for 16-bit and float rasters",
                 "minimum / maximum given below", "none (values taken as 8-bit)"]

    def name(self) -> str:
        return "detect"

    def displayName(self) -> str:  # noqa: N802
        return "Detect objects"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Detects objects (rooftop solar panels with the shipped model) in a raster "
                "file of any size, a VRT mosaic included, and writes typed polygons "
                "(class, score, agreement, area_m2, model, model_version). The engine "
                "processes the raster region by region with bounded memory and records "
                "progress, so an interrupted job can be resumed with 'List / resume batch "
                "jobs'. Objects crossing region borders are kept exactly once; the polygons "
                "equal those of 'Detect in extent' on the same area.\n\n"
                "Orthophoto: a raster file (GeoTIFF, VRT, COG, or an https:// URL read "
                "with range requests); 8-bit RGB, or 16-bit/float stretched to 8 bits.\n"
                "Bands (advanced): the raster bands used as R, G, B (default: those its "
                "colour interpretation names red, green, blue, else the first three; one "
                "band is used as grey). Stretch (advanced): how 16-bit and float values "
                "become 0-255: by default the 2-98 % percentiles of each band over the "
                "extent, or the minimum and maximum you give per band (comma-"
                "separated, one per mapped band); the choice is in the log.\n"
                "Extent: the area to search (default: the whole raster).\n"
                "Coverage polygons: only detections that meet them are kept, and the "
                "search is limited to their bounding box.\n"
                "Probability threshold, Smallest object (m²): empty means the model "
                "card's values, as in the Ortholens dock.\n"
                "Region size (advanced): pixels at the model's resolution (default: the "
                "engine's). Run regions on: this computer or a Ray cluster (RAY_ADDRESS).\n\n"
                + model_help())

    def createInstance(self):  # noqa: N802
        return DetectObjectsAlgorithm()

    def createCustomParametersWidget(self, parent=None):  # noqa: N802 - QGIS API
        """QGIS's dialog, saying a cancel and a failure right (:mod:`.dialog`)."""
        from .dialog import algorithm_dialog
        return algorithm_dialog(self, parent)

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
        region = with_help(QgsProcessingParameterNumber(
            self.REGION_PX, "Region size (pixels)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=32, maxValue=16384),
            "Pixels at the model's resolution. Default: the engine's.")
        executor = with_help(QgsProcessingParameterEnum(
            self.EXECUTOR, "Run regions on", options=["this computer (engine)",
                                                     "a Ray cluster (RAY_ADDRESS)"],
            defaultValue=0), "A Ray cluster is reached at the RAY_ADDRESS of the engine.")
        bands = with_help(QgsProcessingParameterBand(
            self.BANDS, "Bands (R, G, B)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True),
            "Three bands in R, G, B order. Default: from the colour interpretation.")
        stretch = with_help(QgsProcessingParameterEnum(
            self.STRETCH, "Stretch to 8 bits", options=self.STRETCHES, defaultValue=0),
            "For 16-bit and float rasters; 8-bit ones are used as they are.")
        smin = with_help(QgsProcessingParameterString(
            self.STRETCH_MIN, "Stretch minimum", optional=True),
            "Per mapped band, comma-separated, e.g. 120, 140, 90.")
        smax = with_help(QgsProcessingParameterString(
            self.STRETCH_MAX, "Stretch maximum", optional=True),
            "Per mapped band, comma-separated, e.g. 3800, 3600, 3500.")
        for p in (region, executor, bands, stretch, smin, smax):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Objects detected"))
        self.addOutput(QgsProcessingOutputString("JOB_ID", "Batch job id"))

    def _stretch(self, parameters, context, bands) -> Optional[Stretch]:
        """The :class:`~protocol.params.Stretch` of the STRETCH* parameters (None:
        automatic).

        Raises:
            QgsProcessingException: min/max missing, not numbers, of another count
                than the mapped bands, or min >= max.
        """
        choice = self.parameterAsEnum(parameters, self.STRETCH, context)
        if choice == 0:
            return None
        if choice == 2:
            return Stretch("none")
        texts = [self.parameterAsString(parameters, k, context) or ""
                 for k in (self.STRETCH_MIN, self.STRETCH_MAX)]
        try:
            lo, hi = ([float(v) for v in t.replace(";", ",").split(",") if v.strip()]
                      for t in texts)
        except ValueError:
            raise QgsProcessingException("Stretch minimum and maximum must be numbers "
                                         "separated by commas.") from None
        n = len(bands) if bands else 3
        if len(lo) == 1 and len(hi) == 1:
            lo, hi = lo * n, hi * n  # one pair for every band
        if len(lo) != n or len(hi) != n or not all(a < b for a, b in zip(lo, hi)):
            raise QgsProcessingException(f"Stretch: give one minimum and one maximum per "
                                         f"band ({n}), each minimum below its maximum.")
        return Stretch("minmax", min=tuple(lo), max=tuple(hi))

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
        region_px = (self.parameterAsInt(parameters, self.REGION_PX, context)
                    if parameters.get(self.REGION_PX) not in (None, "") else None)
        executor = EXECUTORS[self.parameterAsEnum(parameters, self.EXECUTOR, context)]
        bands = tuple(self.parameterAsInts(parameters, self.BANDS, context) or ()) or None
        if bands is not None and len(bands) != 3:
            raise QgsProcessingException(f"Bands: choose three bands (R, G, B), not "
                                         f"{len(bands)}.")
        stretch = self._stretch(parameters, context, bands)
        try:
            with daemon_session(feedback) as client:
                # empty: the engine chooses the model for the raster's GSD
                model = given_model(client, self.parameterAsString(parameters, self.MODEL,
                                                                   context))
                out = results_file(f"{layer.name()}_{model or 'auto'}", context)
                params = BatchParams(DetectParams(FileSource(path), model, extent=extent,
                                                  extent_crs=extent_crs, bands=bands,
                                                  stretch=stretch, **optional),
                                     out_path=out, region_px=region_px, executor=executor)
                regions = f"{region_px} px" if region_px else "the daemon's default size"
                named = model or "the model for the raster's GSD"
                feedback.pushInfo(f"Batch job: {path} with {named}, regions of {regions}, "
                                  f"on {executor}; its GeoPackage: {out}")
                result = client.batch(params, progress_to(feedback), feedback.isCanceled)
                model = (result.get("stats") or {}).get("model") or model
                card = next((c for c in client.models() if c.get("id") == model),
                            {"id": model})
        except JobCancelled as exc:
            feedback.pushWarning(cancelled_text(exc))
            return {}
        stats = result.get("stats") or {}
        feedback.pushInfo(f"Model: {model}")
        for w in stats.get("warnings") or []:
            feedback.pushWarning(w)
        feedback.pushInfo(f"{stats.get('count')} polygons in {stats.get('regions')} regions "
                          f"({stats.get('regions_empty', 0)} without data, skipped), "
                          f"{stats.get('seconds')} s; job {result.get('job_id')}")
        return self._deliver(parameters, context, feedback, result, out, coverage,
                             ResultStyler(card, optional, layer.name()))

    def _deliver(self, parameters, context, feedback, result: Dict[str, Any], out: str,
                 coverage, styler: ResultStyler) -> Dict[str, Any]:
        """The algorithm's results (OUTPUT, COUNT, JOB_ID) of a finished job whose
        GeoPackage is ``out``: left at its default, OUTPUT is that file; otherwise (a
        file the user chose, or coverage polygons) the polygons are copied to the
        sink. Either is styled and named by ``styler`` when Processing loads it."""
        stats = result.get("stats") or {}
        table, job_id = stats.get("layer") or "detections", result.get("job_id", "")
        wanted = parameters.get(self.OUTPUT)
        if coverage is None and is_temporary(wanted):  # the job's own GeoPackage
            dest = f"{out}|layername={table}"
            if getattr(wanted, "destinationProject", None) is not None:
                load_when_done(context, dest, self.OUTPUT, styler, wanted.destinationProject)
            return {self.OUTPUT: dest, "COUNT": int(stats.get("count") or 0),
                    "JOB_ID": job_id}
        if is_temporary(wanted):  # the part in the coverage, beside the job's file
            parameters = dict(parameters, **{self.OUTPUT: to_file(
                wanted, out.replace(".gpkg", "_coverage.gpkg"))})
        res = self._copy(out, table, coverage, parameters, context, feedback, job_id)
        style_when_done(context, res[self.OUTPUT], styler)
        return res

    def _copy(self, path, table, coverage, parameters, context, feedback, job_id):
        src = QgsVectorLayer(f"{path}|layername={table}", "batch", "ogr")
        if not src.isValid():
            raise QgsProcessingException(f"cannot open the daemon's output {path}")
        fields = QgsFields()
        keep = [i for i, f in enumerate(src.fields()) if f.name() not in ("fid", "region")]
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
