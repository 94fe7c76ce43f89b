"""The ``import_model`` request: bring a model of another tool into the engine.

A segmentation model saved as ONNX in the format of Deepness (the QGIS plugin that
runs ONNX models on orthophotos; PUTvision/qgis-plugin-deepness, Apache-2.0) keeps its
description in the file's metadata: ``model_type``, ``class_names``, ``resolution``
(cm/px), ``tiles_size`` (px), ``tiles_overlap`` (%), ``standardization_mean`` /
``standardization_std``, ``seg_thresh``, ``seg_small_segment`` (px). The engine reads
them and writes an Ortholens model card (``backend.models.deepness``); what the file
lacks is given as :class:`ImportValues`. ``docs/byom.md`` says what the engine does with
each key.

When the file lacks a key the engine needs and the request gives no value for it, the
engine answers an ``invalid_input`` error whose ``field`` is ``"values"`` and whose
message is :func:`missing_message`; :func:`missing_keys` reads the keys back, so the
plugin can ask for them (prefilled with :data:`DEEPNESS_DEFAULTS`).

Needs only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .checks import check_model, int_range, is_number, num_range, one_of
from .rules import RequestParams, request_rules, rule

#: Deepness's model types; only ``Segmentor`` models can be imported.
MODEL_TYPES = ("Segmentor", "Detector", "Regressor", "Recognition", "Superresolution")

#: The values the plugin's dialog shows for missing metadata, for the user to check:
#: 3 cm/px is the resolution Deepness's own tests process its test orthophoto at,
#: ``seg_small_segment`` 7 px the example of Deepness's metadata documentation ("Adding
#: metadata to ONNX model"); 512 px tiles, 15 % overlap and threshold 0.5 are the usual
#: values of tiled segmentation.
DEEPNESS_DEFAULTS: Dict[str, Any] = {
    "model_type": "Segmentor", "resolution": 3.0, "tiles_size": 512, "tiles_overlap": 15,
    "seg_thresh": 0.5, "seg_small_segment": 7}

#: The start of the error message for missing metadata (see :func:`missing_message`).
MISSING_PREFIX = "the model file lacks the metadata"


def check_triple(x: Any) -> Optional[str]:
    """Three finite numbers (one per band: R, G, B)."""
    if not isinstance(x, list) or len(x) != 3 or not all(is_number(v) for v in x):
        return "must be three numbers (R, G, B)"
    return None


def check_positive_triple(x: Any) -> Optional[str]:
    """Three positive finite numbers."""
    return check_triple(x) or (None if all(v > 0 for v in x) else
                               "must be three positive numbers (R, G, B)")


@dataclass(frozen=True)
class ImportValues:
    """Values for Deepness metadata a model file lacks (or replaces: a value given here
    wins over the file's, but for the file's own ``model_type``).

    Attributes:
        model_type: one of :data:`MODEL_TYPES` (only ``Segmentor`` is imported).
        resolution: the ground resolution the model was trained at, cm per pixel.
        tiles_size: tile side, pixels.
        tiles_overlap: overlap of neighbouring tiles, percent of the tile side.
        seg_thresh: class probability threshold, (0, 1].
        seg_small_segment: side of the smallest object kept, pixels (0: keep all).
        standardization_mean, standardization_std: per band, applied after scaling
            pixels to 0-1.
    """

    model_type: Optional[str] = rule(one_of(*MODEL_TYPES), default=None)
    resolution: Optional[float] = rule(num_range(0.01, 100000.0), default=None)
    tiles_size: Optional[int] = rule(int_range(32, 8192), default=None)
    tiles_overlap: Optional[float] = rule(num_range(0.0, 90.0), default=None)
    seg_thresh: Optional[float] = rule(num_range(0.0, 1.0, lo_open=True), default=None)
    seg_small_segment: Optional[int] = rule(int_range(0, 10000), default=None)
    standardization_mean: Optional[Tuple[float, float, float]] = rule(check_triple,
                                                                      default=None)
    standardization_std: Optional[Tuple[float, float, float]] = rule(
        check_positive_triple, default=None)

    def __post_init__(self) -> None:
        for name in ("standardization_mean", "standardization_std"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in v))

    def to_wire(self) -> Dict[str, Any]:
        """The ``values`` object: the fields that are not None, as JSON."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in fields(self) for v in [getattr(self, f.name)] if v is not None}

    @classmethod
    def from_wire(cls, d: Union["ImportValues", Mapping[str, Any], None]
                  ) -> Optional["ImportValues"]:
        """From a checked ``values`` object (typed values and None pass through)."""
        if d is None or isinstance(d, ImportValues):
            return d
        return cls(**dict(d))


def check_values(x: Any) -> Optional[str]:
    """A ``values`` object: known keys, each valid by :class:`ImportValues`' rules."""
    if not isinstance(x, dict):
        return "must be an object"
    rules = request_rules(ImportValues)
    unknown = sorted(set(x) - set(rules))
    if unknown:
        return f"has unknown field(s) {unknown}"
    for name, (_, check) in rules.items():
        if x.get(name) is not None:
            err = check(x[name])
            if err:
                return f"'{name}' {err}"
    return None


def check_onnx_path(x: Any) -> Optional[str]:
    """The path of an ``.onnx`` file on the engine's computer."""
    if (not isinstance(x, str) or not x or len(x) > 4096 or "\x00" in x
            or not x.lower().endswith(".onnx")):
        return "must be the path of an .onnx file (at most 4096 characters)"
    return None


def check_new_model_id(x: Any) -> Optional[str]:
    """The id of a new model: 1-64 letters, digits, ``.``, ``_`` or ``-``, not
    starting with ``.``."""
    err = check_model(x)
    if err or len(x) > 64 or x.startswith(".") or not all(
            c.isascii() and (c.isalnum() or c in "._-") for c in x):
        return "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', not starting with '.'"
    return None


@dataclass(frozen=True)
class ImportParams(RequestParams):
    """An ``import_model`` request: make an ONNX file on the engine's computer one of
    its models (the reply ``imported`` carries the new model's card).

    Attributes:
        path: the ``.onnx`` file, a path on the engine's computer (a daemon bound
            beyond loopback reads only below its ``ORTHOLENS_ROOTS``).
        values: values for metadata the file lacks or that replace the file's.
        model: the new model's id; None: from the file's name.
    """

    TYPE = "import_model"

    path: str = rule(check_onnx_path, required=True)
    values: Optional[ImportValues] = rule(check_values, default=None)
    model: Optional[str] = rule(check_new_model_id, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", ImportValues.from_wire(self.values))


def missing_message(keys: Sequence[str], file_name: str) -> str:
    """The error message for metadata ``keys`` that ``file_name`` lacks (read back by
    :func:`missing_keys`)."""
    return (f"{MISSING_PREFIX} {', '.join(keys)} ({file_name}); give their values "
            f"(Deepness's defaults: "
            f"{', '.join(f'{k} {DEEPNESS_DEFAULTS[k]}' for k in keys if k in DEEPNESS_DEFAULTS)})")


def missing_keys(message: str) -> List[str]:
    """The metadata keys a :func:`missing_message` names, in its order; empty for any
    other message."""
    if not message.startswith(MISSING_PREFIX):
        return []
    names = message[len(MISSING_PREFIX):].split("(", 1)[0]
    known = {f.name for f in fields(ImportValues)}
    return [k for k in (n.strip() for n in names.split(",")) if k in known]


def onnx_only_message(model_id: str) -> str:
    """Why a model imported from an ONNX file cannot be retrained (the engine's error
    and the plugin's message)."""
    return (f"{model_id} was imported from an ONNX file: retraining needs PyTorch "
            f"weights, which an ONNX-only model does not have. Retrain it where it was "
            f"made and import the new file, or retrain one of the shipped models")


__all__ = ["MODEL_TYPES", "DEEPNESS_DEFAULTS", "MISSING_PREFIX", "ImportValues",
           "ImportParams", "check_values", "check_onnx_path", "check_new_model_id",
           "missing_message", "missing_keys", "onnx_only_message"]
