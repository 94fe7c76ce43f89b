"""*Retrain from corrected features* (``ortholens:retrain``): the daemon's ``retrain`` job
from the Processing toolbox, batch mode, models and ``qgis_process``.

The corrected polygons (``class`` attribute; empty = the model's first class) are the
truth inside the reviewed extent: what no polygon covers there is background. A layer
reviewed in the review queue (a ``review`` field, ``protocol.results.REVIEW_STATES``)
may instead teach only what was reviewed (MODE): the polygons accepted, edited, added
or deleted and a margin around each (``backend.learning.partial``). A new
model version is registered only when it passes the acceptance rule (see README,
*Retrain*); the outputs say whether it was, and why.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from qgis.core import (
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from protocol.errors import JobCancelled
from protocol.params import CorrectedFeature, FileSource, RetrainParams, ReviewedArea

from ..detect.crs import crs_wkt, extent_tuple
from ..layers.review import review_of
from .common import (
    daemon_session,
    forget_models,
    model_help,
    model_parameter,
    progress_to,
    raster_file,
    resolve_model,
    with_help,
)

#: ``RetrainParams.invalid_geometry`` of each INVALID choice.
INVALID = ["repair", "refuse"]
#: ``RetrainParams.mode`` of each MODE choice, and its text.
MODES = ["extent", "review"]
MODES_TEXT = ["The whole reviewed extent", "Only the reviewed polygons (review field)"]


class RetrainAlgorithm(QgsProcessingAlgorithm):
    """Fine-tune a model on corrected polygons; register the result if it is better."""

    INPUT, RASTER, EXTENT, MODEL = "INPUT", "RASTER", "EXTENT", "MODEL"
    BUDGET, INVALID_GEOM, ACTIVATE = "BUDGET_MIN", "INVALID", "ACTIVATE"
    MODE = "MODE"

    def name(self) -> str:
        return "retrain"

    def displayName(self) -> str:  # noqa: N802
        return "Retrain from corrected features"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Fine-tunes the model on corrected polygons (deleted false detections, "
                "added missed objects, reshaped or re-classed ones) inside the reviewed "
                "extent, where whatever no polygon covers is background. A quarter of the "
                "extent is kept apart to check the result; the new version "
                "(<model>@<n>) is kept only if it does not get worse there nor on the "
                "reference validation tiles it never trained on, and has learned from the "
                "corrections (fewer object errors, or fewer wrong pixels where it trained). "
                "Outputs: whether it was accepted and why, the new model id, the report."
                "\n\nCorrected polygons: a 'class' attribute names each polygon's class "
                "(empty: the model's first class).\n"
                "Raster: the raster file the polygons were drawn on.\n"
                "Reviewed extent: where the polygons are the whole truth (default: the "
                "raster's extent).\n"
                "Time budget (min): the whole retrain (reading the corrections, "
                "training, the gate).\n"
                "Invalid geometries: repair them (with a warning) or refuse the run.\n"
                "Activate if accepted: the new version becomes the active one of its "
                "lineage, which the Ortholens dock selects for the next detection.\n\n"
                + model_help())

    def createInstance(self):  # noqa: N802
        return RetrainAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.INPUT, "Corrected polygons", [QgsProcessing.TypeVectorPolygon]),
            "A 'class' attribute names the class; empty: the model's first class."))
        self.addParameter(with_help(QgsProcessingParameterRasterLayer(self.RASTER, "Raster"),
                                    "The raster file the polygons were drawn on."))
        self.addParameter(with_help(QgsProcessingParameterExtent(
            self.EXTENT, "Reviewed extent", optional=True),
            "Where the polygons are the whole truth. Default: the raster's extent."))
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.BUDGET, "Time budget (min)", QgsProcessingParameterNumber.Double,
            defaultValue=2.0, minValue=0.1, maxValue=600.0),
            "The whole retrain: reading the corrections, training and the gate."))
        self.addParameter(QgsProcessingParameterEnum(
            self.INVALID_GEOM, "Invalid geometries",
            options=["Repair (make valid) with a warning", "Refuse"], defaultValue=0))
        self.addParameter(with_help(QgsProcessingParameterEnum(
            self.MODE, "Teach from", options=MODES_TEXT, defaultValue=0),
            "The whole reviewed extent (every object in it is a polygon), or only the "
            "polygons whose 'review' field says they were reviewed, and 2 m around each."))
        self.addParameter(with_help(QgsProcessingParameterBoolean(
            self.ACTIVATE, "Activate if accepted", defaultValue=True),
            "An accepted version becomes the active one, which the dock selects."))
        self.addOutput(QgsProcessingOutputNumber("ACCEPTED", "Accepted (1) or rejected (0)"))
        self.addOutput(QgsProcessingOutputString("NEW_MODEL", "New model version"))
        self.addOutput(QgsProcessingOutputString("REASON", "Why"))
        self.addOutput(QgsProcessingOutputString("REPORT", "Report (JSON)"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Send the corrected polygons and the reviewed extent to a ``retrain`` job.

        Returns ACCEPTED, NEW_MODEL, REASON and REPORT.

        Raises:
            QgsProcessingException: unreadable inputs, no daemon, a daemon error, or a
                cancel (nothing is changed then).
        """
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException("The corrected polygons cannot be read.")
        raster = self.parameterAsRasterLayer(parameters, self.RASTER, context)
        path = raster_file(raster)
        rcrs = raster.crs()
        if parameters.get(self.EXTENT):
            ext = self.parameterAsExtent(parameters, self.EXTENT, context, rcrs)
        else:
            ext = raster.extent()
        mode = MODES[self.parameterAsEnum(parameters, self.MODE, context)]
        feats = []
        ct = None
        if source.sourceCrs().isValid() and source.sourceCrs() != rcrs:
            ct = QgsCoordinateTransform(source.sourceCrs(), rcrs, context.transformContext())
        names = source.fields().names()
        ri, oi = source.fields().indexOf("review"), source.fields().indexOf("origin")
        for f in source.getFeatures():
            g = f.geometry()
            state, unvouched = review_of(f, ri, oi)
            if g is None or g.isNull() or g.isEmpty() or (unvouched and mode == "extent"):
                continue
            if ct is not None:
                g.transform(ct)
            name = f["class"] if "class" in names else None
            if name in (None, "") or str(name) == "NULL":  # unclassified: the first class
                feats.append(CorrectedFeature(g.asWkt(3), class_id=1, review=state))
            else:
                feats.append(CorrectedFeature(g.asWkt(3), class_name=str(name),
                                              review=state))
        budget_s = 60.0 * self.parameterAsDouble(parameters, self.BUDGET, context)
        feedback.pushInfo(f"{len(feats)} corrected polygons; reviewed extent "
                          f"{ext.width():.0f} x {ext.height():.0f} m; budget {budget_s:.0f} s")
        invalid = INVALID[self.parameterAsEnum(parameters, self.INVALID_GEOM, context)]
        try:
            with daemon_session(feedback, "retrain") as client:
                model = resolve_model(client, self.parameterAsString(parameters, self.MODEL,
                                                                     context))
                params = RetrainParams(
                    FileSource(path), model, tuple(feats), crs=crs_wkt(rcrs),
                    reviewed=(ReviewedArea(extent_tuple(ext)),), budget_s=budget_s,
                    invalid_geometry=invalid, mode=mode,
                    activate=self.parameterAsBool(parameters, self.ACTIVATE, context))
                res = client.retrain(params, on_progress=progress_to(feedback),
                                     is_cancelled=feedback.isCanceled, job_timeout_s=900.0)
        except JobCancelled:
            raise QgsProcessingException("Cancelled; nothing was changed.") from None
        forget_models()  # an accepted version is a new model to list
        rep = res.get("retrain") or {}
        for w in rep.get("warnings") or []:
            feedback.reportError(w, False)
        verdict = (f"Accepted: new version {rep.get('model')}" if rep.get("accepted")
                   else "Rejected: no new version")
        feedback.pushInfo(f"{verdict} — {rep.get('reason')}")
        return {"ACCEPTED": 1 if rep.get("accepted") else 0,
                "NEW_MODEL": str(rep.get("model") or ""), "REASON": str(rep.get("reason", "")),
                "REPORT": json.dumps(rep, default=str)}
