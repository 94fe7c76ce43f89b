"""*Add a model (ONNX)* (``ortholens:importmodel``): a segmentation model saved as ONNX in
Deepness's format becomes one of the engine's models, from the Processing toolbox,
batch mode, models and ``qgis_process``.

The engine reads the file's metadata (``docs/byom.md``); the optional parameters give
what the file lacks, or replace what it says. Without them, a file that lacks needed
metadata is refused with the keys it lacks. The path is one on the engine's computer.
"""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from protocol.importing import MODEL_TYPES, ImportParams

from .common import daemon_session, forget_models, import_onnx, with_help

#: Parameter -> (``ImportValues`` field, label, integer?, minimum, maximum, help).
VALUES = {
    "RESOLUTION": ("resolution", "Resolution (cm/pixel)", False, 0.01, 100000.0,
                   "The ground resolution the model was trained at (metadata "
                   "'resolution')."),
    "TILE_SIZE": ("tiles_size", "Tile size (pixels)", True, 32, 8192,
                  "Metadata 'tiles_size'; a model with a fixed input size gives it."),
    "OVERLAP": ("tiles_overlap", "Tile overlap (%)", False, 0.0, 90.0,
                "Metadata 'tiles_overlap', percent of the tile side."),
    "THRESHOLD": ("seg_thresh", "Probability threshold", False, 0.01, 1.0,
                  "Metadata 'seg_thresh'."),
    "SMALL_SEGMENT": ("seg_small_segment", "Smallest object (pixels)", True, 0, 10000,
                      "Metadata 'seg_small_segment': objects smaller than a square of "
                      "this side are dropped."),
}


class ImportModelAlgorithm(QgsProcessingAlgorithm):
    """Import an ONNX model in Deepness's format into the engine."""

    INPUT, MODEL_ID, MODEL_TYPE = "INPUT", "MODEL_ID", "MODEL_TYPE"

    def name(self) -> str:
        return "importmodel"

    def displayName(self) -> str:  # noqa: N802
        return "Add a model (ONNX)"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Adds a segmentation model saved as ONNX in the format of the Deepness "
                "plugin (its description in the file's metadata: model_type, "
                "class_names, resolution, tiles_size, tiles_overlap, "
                "standardization_mean/std, seg_thresh, seg_small_segment) to the "
                "engine's models. The detection algorithms and the dock then run it "
                "like the shipped models; it cannot be retrained (no PyTorch weights).\n\n"
                "Model file: an .onnx file on the engine's computer.\n"
                "Model id: the new model's id (default: from the file's name).\n"
                "The other parameters give metadata the file lacks (or replace the "
                "file's); a file that lacks needed metadata is refused with the keys it "
                "lacks. Detector, Regressor, Recognition and Superresolution models are "
                "refused.")

    def createInstance(self):  # noqa: N802
        return ImportModelAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(with_help(QgsProcessingParameterFile(
            self.INPUT, "Model file (ONNX)", extension="onnx"),
            "An .onnx file in Deepness's format, on the engine's computer."))
        self.addParameter(with_help(QgsProcessingParameterString(
            self.MODEL_ID, "Model id", optional=True),
            "Letters, digits, '.', '_', '-'. Default: from the file's name."))
        self.addParameter(with_help(QgsProcessingParameterEnum(
            self.MODEL_TYPE, "Model type", options=list(MODEL_TYPES), optional=True),
            "Metadata 'model_type' when the file lacks it; only Segmentor runs."))
        for name, (_, label, integer, lo, hi, help_text) in VALUES.items():
            kind = (QgsProcessingParameterNumber.Integer if integer
                    else QgsProcessingParameterNumber.Double)
            self.addParameter(with_help(QgsProcessingParameterNumber(
                name, label, kind, optional=True, minValue=lo, maxValue=hi), help_text))
        self.addOutput(QgsProcessingOutputString("MODEL", "Model id"))
        self.addOutput(QgsProcessingOutputString("CLASSES", "Classes"))

    def values(self, parameters, context) -> Dict[str, Any]:
        """The ``ImportValues`` fields of the parameters that were given."""
        out: Dict[str, Any] = {}
        if parameters.get(self.MODEL_TYPE) not in (None, ""):
            out["model_type"] = MODEL_TYPES[self.parameterAsEnum(parameters,
                                                                 self.MODEL_TYPE, context)]
        for name, (key, _, integer, *_rest) in VALUES.items():
            if parameters.get(name) in (None, ""):
                continue
            out[key] = (self.parameterAsInt(parameters, name, context) if integer
                        else self.parameterAsDouble(parameters, name, context))
        return out

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Send ``import_model``; MODEL and CLASSES of the new model.

        Raises:
            QgsProcessingException: no engine, or the engine refused the file (the
                message says why: missing metadata keys, an unsupported model type).
        """
        path = self.parameterAsFile(parameters, self.INPUT, context)
        model_id = (self.parameterAsString(parameters, self.MODEL_ID, context) or "").strip()
        values = self.values(parameters, context)
        with daemon_session(feedback, "add the model") as client:
            if model_id:
                card = client.import_model(ImportParams(path, values or None, model_id))
            else:
                card = import_onnx(client, path, values)
        forget_models()
        classes = ", ".join(str(c.get("name")) for c in card.get("classes") or [])
        feedback.pushInfo(f"Added {card.get('id')} v{card.get('version')}: {classes}, "
                          f"{card.get('gsd_m'):g} m/pixel, tiles of {card.get('tile_size')} "
                          f"px")
        return {"MODEL": str(card.get("id")), "CLASSES": classes}
