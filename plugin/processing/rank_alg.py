"""*Rank for review* (``ortholens:rank``): give a layer of result polygons the review
fields (``protocol.results.REVIEW_FIELDS``) and its review queue's ranks, as the dock's
Review section does for a layer it is shown: a batch job's GeoPackage, an older result.

The uncertainty of each polygon is ``protocol.review.uncertainty`` of its ``score`` and
``agreement`` at the given threshold; the rank is its place in the queue, most
uncertain first. The layer is changed in place (its file), so its features keep their
ids; the output is the layer.
"""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..layers.review import add_review_fields
from .common import with_help


class RankForReviewAlgorithm(QgsProcessingAlgorithm):
    """Add the review fields and ranks to a result layer."""

    INPUT, THRESHOLD, MEMBERS = "INPUT", "THRESHOLD", "MEMBERS"

    def name(self) -> str:
        return "rank"

    def displayName(self) -> str:  # noqa: N802
        return "Rank for review"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Adds the review fields to a layer of Ortholens result polygons "
                "(uncertainty, rank, review, origin) and ranks its polygons for review, "
                "most uncertain first: a score close to the threshold, or an ensemble "
                "whose members disagree. The layer's file is changed in place. Review "
                "the layer in the Ortholens dock's Review section, or sort its attribute "
                "table by rank; then retrain from it with 'Teach from: only the reviewed "
                "polygons'.\n\nThreshold: the detection's (the model card's).\n"
                "Ensemble members: 1 for a single model; the agreement of an ensemble's "
                "polygons counts from 2.")

    def createInstance(self):  # noqa: N802
        return RankForReviewAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.INPUT, "Result layer", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.THRESHOLD, "Threshold", QgsProcessingParameterNumber.Double,
            defaultValue=0.5, minValue=0.01, maxValue=1.0),
            "The probability threshold the polygons were detected at."))
        self.addParameter(QgsProcessingParameterNumber(
            self.MEMBERS, "Ensemble members", QgsProcessingParameterNumber.Integer,
            defaultValue=1, minValue=1, maxValue=16))
        self.addOutput(QgsProcessingOutputVectorLayer("OUTPUT", "Ranked layer"))
        self.addOutput(QgsProcessingOutputNumber("RANKED", "Polygons ranked"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Rank the layer in place; returns OUTPUT (the layer) and RANKED.

        Raises:
            QgsProcessingException: the layer cannot be changed (read-only, edited).
        """
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        if layer is None or layer.isEditable():
            raise QgsProcessingException("Select a result layer that is not being edited.")
        if "score" not in layer.fields().names():
            raise QgsProcessingException(f"'{layer.name()}' has no 'score' field: it is not "
                                         f"a layer of Ortholens result polygons.")
        n = add_review_fields(layer, self.parameterAsDouble(parameters, self.THRESHOLD,
                                                            context),
                              self.parameterAsInt(parameters, self.MEMBERS, context))
        feedback.pushInfo(f"{n} polygons ranked for review in {layer.name()}")
        return {"OUTPUT": layer.id(), "RANKED": n}
