"""The model card: the single description of a model, as typed attributes.

A model lives in ``<models_dir>/<model_id>/`` (:func:`card_path`) as

``card.json``            the model card, parsed by :meth:`ModelCard.from_dict`
``weights.safetensors``  fp16 weights (safetensors: no pickle, ever)
``model.onnx``           fp32 ONNX export, built from the weights by
                         ``python -m backend.models.export`` (``build.py setup`` runs it)

Fields read by the code:

``id, version``                  str; every result polygon carries both
``kind``                         ``"model"`` (default) or ``"ensemble"``
``architecture, encoder``        segmentation-models-pytorch class name (``Unet``,
                                 ``FPN``, ...) and encoder name (single models)
``arch_kwargs``                  extra keyword arguments for that class
``classes``                      ``[{"id": 1, "name": "photovoltaic", "color": "#rrggbb"}]``
                                 (:class:`ClassSpec`); id 0 is background, so the logits
                                 have ``len(classes) + 1`` channels
``bands, band_names, dtype``     input bands (3 = RGB), their names, their dtype (uint8)
``normalize``                    ``{"scale": 255.0, "mean": [..], "std": [..]}``
                                 (:class:`Normalization`): the input is
                                 ``(x / scale - mean) / std`` per band (single models)
``gsd_m``                        ground sampling distance the model was trained at (m/px)
``gsd_range_m``                  ``[low, high]``: the layer GSDs (m/px) the model serves,
                                 chosen on cross-validation (``protocol.choice``); absent:
                                 ``gsd_m / 1.5`` to ``gsd_m * 1.5``
``tile_size, overlap``           inference tile side and overlap, pixels at ``gsd_m``
``threshold``                    probability threshold (chosen on a validation split of
                                 the *train* data, never on held-out)
``min_area_m2, max_hole_m2``     smallest object kept, largest hole filled (m²)
``simplify_m, orthogonalize``    polygon simplification (m) and rectangle snapping
``min_solidity, min_score``      objects less solid (area / convex hull area) or less
                                 confident (mean probability) are dropped; 0 keeps all
``postprocess_by_gsd``           the post-processing of coarser layers
                                 (:class:`~backend.models.gsd_postprocess.GsdPostprocess`)
``weights, onnx``                file names inside the model folder
``graphs``                       ``{"cpu": "model.int8.onnx"}``: the ONNX file a device
                                 kind runs instead of ``onnx`` (an INT8 graph kept where
                                 it is as accurate, ``backend.learning.quantize``)
``quantization``                 how that graph is made and the layers it serves
                                 (:class:`~backend.models.quantization.Quantization`)
``tiling``                       ``{"cpu": {"tile_size": .., "overlap": ..}}``: the tile
                                 geometry a device kind runs instead of ``tile_size`` and
                                 ``overlap`` (chosen on measurements, ``tools/bench.py``)
``members, tta, shifts``         ensembles: ``[{"id", "weight"}]`` (:class:`Member`),
                                 test-time augmentations (:data:`TTA_TRANSFORMS`), and a
                                 second tiling offset by half a tile; an ensemble has no
                                 weights of its own
``training``                     how the model was trained (:class:`TrainingInfo`; its
                                 ``val_names`` are the guard of a retrain)
``format, outputs, imported``    a model imported from another tool's ONNX file
                                 (``format`` ``"deepness"``, :mod:`backend.models.deepness`):
                                 its outputs, one class family each
                                 (:class:`~backend.models.outputs.OutputSpec`), and where
                                 it came from (:class:`~backend.models.outputs.ImportInfo`).
                                 It has no architecture, encoder or weights: ONNX only

Fields written by the tools and the retrain job (documentation and lineage):
``parameters``, ``heldout_metrics``, ``vienna_false_positives``, ``metrics``,
``base_model``, ``base_version``, ``lineage`` (:class:`Lineage`), ``retrain``
(:class:`RetrainInfo`), ``acceptance_rule``. Any other key of a card file is kept
as it is and written back by :meth:`ModelCard.to_dict`.

Every part of the card is a typed :class:`~backend.models.record.Record`. This module
depends on nothing else of the backend but those records and the protocol's errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from backend.config import precision
from backend.models.gsd_postprocess import GsdPostprocess
from backend.models.outputs import ImportInfo, OutputSpec, imported_error
from backend.models.quantization import Quantization
from backend.models.record import (BadField, Record, as_bool, as_dict, as_float, as_int,
                                   as_str, doc_field, list_of, record_of, typed_field)
from protocol.errors import ModelCorrupt, ModelNotFound

#: Test-time augmentations an ensemble may list (the dihedral group D4 of the square).
TTA_TRANSFORMS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270",
                  "transpose", "antitranspose")


# ----------------------------------------------------------------------------- parts

@dataclass
class ClassSpec(Record):
    """One output class.

    Attributes:
        id: class index, 1.. (0 is background).
        name: class name (the ``class`` attribute of result polygons).
        color: ``#rrggbb`` for the plugin's layer style, or None.
    """

    id: int = typed_field(as_int)
    name: str = typed_field(as_str)
    color: Optional[str] = typed_field(as_str, None)
    _doc: Dict[str, Any] = doc_field()


@dataclass
class Member(Record):
    """One member of an ensemble.

    Attributes:
        id: the member's model id.
        weight: its weight in the fused probability mean.
    """

    id: str = typed_field(as_str)
    weight: float = typed_field(as_float, 1.0)
    _doc: Dict[str, Any] = doc_field()


@dataclass
class Normalization(Record):
    """Input normalisation: ``(x / scale - mean) / std`` per band.

    Attributes:
        mean, std: per band, after scaling.
        scale: divisor of the raw values (255 for uint8).
    """

    mean: List[float] = typed_field(list_of(as_float))
    std: List[float] = typed_field(list_of(as_float))
    scale: float = typed_field(as_float, 255.0)
    _doc: Dict[str, Any] = doc_field()


@dataclass
class TrainingInfo(Record):
    """How a model was trained (``backend.learning.train``), or how an ensemble's
    post-processing was chosen.

    Attributes:
        val_names: pv01 train-split tiles the model was validated on, not fitted on.
        left_out_names: pv01 train-split tiles of a site the model never saw at all
            (``backend.learning.train --without-site``); a retrain neither replays nor
            guards on them.
        fit_tiles, val_tiles: tile counts of the fit / validation split.
        data: the training data and its licence, in words.
        seed, split_seed: random seeds of training and of the fit/val split.
        steps, batch_size, chip: optimiser steps, chips per batch, chip side (px).
        budget_s, train_seconds: wall-clock cap and time used, seconds.
        device, threads, torch: where it ran, and the PyTorch version.
        final_loss: mean loss of the last steps.
        config: the training config file as given.
        postprocess_chosen_on_val: validation metrics at the chosen post-processing.
        cross_validation: leave-cluster-out cross-validation figures (``tools.cv``) per
            GSD, when the post-processing was chosen there.
        fold: the cross-validation fold a fold model was trained for.
        augmentation: the appearance changes and scale range drawn in training.
    """

    val_names: List[str] = typed_field(list_of(as_str), list)
    left_out_names: List[str] = typed_field(list_of(as_str), list)
    fit_tiles: Optional[int] = typed_field(as_int, None)
    val_tiles: Optional[int] = typed_field(as_int, None)
    data: Optional[str] = typed_field(as_str, None)
    seed: Optional[int] = typed_field(as_int, None)
    split_seed: Optional[int] = typed_field(as_int, None)
    steps: Optional[int] = typed_field(as_int, None)
    batch_size: Optional[int] = typed_field(as_int, None)
    chip: Optional[int] = typed_field(as_int, None)
    budget_s: Optional[float] = typed_field(as_float, None)
    train_seconds: Optional[float] = typed_field(as_float, None)
    device: Optional[str] = typed_field(as_str, None)
    threads: Optional[int] = typed_field(as_int, None)
    torch: Optional[str] = typed_field(as_str, None)
    final_loss: Optional[float] = typed_field(as_float, None)
    config: Dict[str, Any] = typed_field(as_dict, dict)
    postprocess_chosen_on_val: Dict[str, Any] = typed_field(as_dict, dict)
    cross_validation: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    fold: Optional[int] = typed_field(as_int, None)
    augmentation: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    _doc: Dict[str, Any] = doc_field()


@dataclass
class Lineage(Record):
    """Where a user version comes from (``backend.models.versions``); on a shipped card
    that has user versions only ``base``, ``number`` 0, ``parent`` None and ``active``.

    Attributes:
        id, base, number: the version's id, its shipped model, its number (0: shipped).
        parent, parent_version: the model it was fine-tuned from.
        created: ISO 8601 time of writing.
        active: whether it is the active version of its lineage (set on reading).
        corrections: number of corrected features it learned from.
        decision, reason: the acceptance decision and why.
        data, summary, metrics, config, train: the retrain job's report parts.
        mlflow_run_id: the MLflow run of the retrain.
        onnx_export_error: why no ``model.onnx`` was written, when it failed.
        scope: the area the version was taught on (``backend.models.area.Area``'s
            JSON: reviewed extents and the area's outline in EPSG:4326), or None for a
            general-purpose version.
        in_use: for a version with an area: whether detection with ``by_area`` uses
            it inside its area (set on reading).
        verdict: what the acceptance rule said (``accepted``, ``rejected`` or
            ``undecided``); ``decision`` says what was done (``accepted``, or
            ``kept by the user`` against the rule's verdict).
    """

    id: Optional[str] = typed_field(as_str, None)
    base: Optional[str] = typed_field(as_str, None)
    number: Optional[int] = typed_field(as_int, None)
    parent: Optional[str] = typed_field(as_str, None)
    parent_version: Optional[str] = typed_field(as_str, None)
    created: Optional[str] = typed_field(as_str, None)
    active: Optional[bool] = typed_field(as_bool, None)
    corrections: Optional[int] = typed_field(as_int, None)
    decision: Optional[str] = typed_field(as_str, None)
    reason: Optional[str] = typed_field(as_str, None)
    data: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    summary: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    metrics: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    config: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    train: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    mlflow_run_id: Optional[str] = typed_field(as_str, None)
    onnx_export_error: Optional[str] = typed_field(as_str, None)
    scope: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    in_use: Optional[bool] = typed_field(as_bool, None)
    verdict: Optional[str] = typed_field(as_str, None)
    _doc: Dict[str, Any] = doc_field()

    def with_active(self, active: bool, in_use: Optional[bool] = None) -> "Lineage":
        """A copy with ``active`` (and, for a version with an area, ``in_use``) set."""
        d = dict(self.to_dict(), active=bool(active))
        if in_use is not None:
            d["in_use"] = bool(in_use)
        return Lineage.from_dict(d)


@dataclass
class RetrainInfo(Record):
    """The retrain that produced a user version.

    Attributes:
        parent: the model it was fine-tuned from.
        reason: why the candidate was accepted.
        budget_s: the time budget, seconds. steps: the steps it ran.
    """

    parent: Optional[str] = typed_field(as_str, None)
    reason: Optional[str] = typed_field(as_str, None)
    budget_s: Optional[float] = typed_field(as_float, None)
    steps: Optional[int] = typed_field(as_int, None)
    _doc: Dict[str, Any] = doc_field()


# ----------------------------------------------------------------------------- the card

#: Fields a single model needs that an ensemble (no weights of its own) does without;
#: an imported model (ONNX only) needs only the normalisation.
_MODEL_ONLY = ("architecture", "encoder", "normalize")
_IMPORTED_ONLY = ("normalize",)


@dataclass
class ModelCard(Record):
    """A parsed ``card.json``; the fields are described in the module docstring.

    ``path`` is the folder the card was read from (it holds the weights), or None for a
    card built in memory.
    """

    id: str = typed_field(as_str)
    version: str = typed_field(as_str)
    classes: List[ClassSpec] = typed_field(list_of(record_of(ClassSpec)))
    bands: int = typed_field(as_int)
    gsd_m: float = typed_field(as_float)
    tile_size: int = typed_field(as_int)
    overlap: int = typed_field(as_int)
    threshold: float = typed_field(as_float)
    min_area_m2: float = typed_field(as_float)
    simplify_m: float = typed_field(as_float)
    kind: str = typed_field(as_str, "model")
    architecture: str = typed_field(as_str, "")
    encoder: str = typed_field(as_str, "")
    arch_kwargs: Dict[str, Any] = typed_field(as_dict, dict)
    gsd_range_m: Optional[List[float]] = typed_field(list_of(as_float), None)
    band_names: Optional[List[str]] = typed_field(list_of(as_str), None)
    dtype: str = typed_field(as_str, "uint8")
    normalize: Optional[Normalization] = typed_field(record_of(Normalization), None)
    max_hole_m2: float = typed_field(as_float, 0.0)
    orthogonalize: bool = typed_field(as_bool, False)
    min_solidity: float = typed_field(as_float, 0.0)
    min_score: float = typed_field(as_float, 0.0)
    postprocess_by_gsd: List[GsdPostprocess] = typed_field(
        list_of(record_of(GsdPostprocess)), list)
    weights: str = typed_field(as_str, "weights.safetensors")
    onnx: str = typed_field(as_str, "model.onnx")
    graphs: Dict[str, str] = typed_field(as_dict, dict)
    quantization: Optional[Quantization] = typed_field(record_of(Quantization), None)
    tiling: Dict[str, Any] = typed_field(as_dict, dict)
    members: List[Member] = typed_field(list_of(record_of(Member)), list)
    tta: List[str] = typed_field(list_of(as_str), lambda: ["identity"])
    shifts: bool = typed_field(as_bool, False)
    training: Optional[TrainingInfo] = typed_field(record_of(TrainingInfo), None)
    parameters: Optional[int] = typed_field(as_int, None)
    heldout_metrics: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    vienna_false_positives: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    metrics: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    base_model: Optional[str] = typed_field(as_str, None)
    base_version: Optional[str] = typed_field(as_str, None)
    lineage: Optional[Lineage] = typed_field(record_of(Lineage), None)
    retrain: Optional[RetrainInfo] = typed_field(record_of(RetrainInfo), None)
    acceptance_rule: Optional[str] = typed_field(as_str, None)
    format: Optional[str] = typed_field(as_str, None)
    outputs: List[OutputSpec] = typed_field(list_of(record_of(OutputSpec)), list)
    imported: Optional[ImportInfo] = typed_field(record_of(ImportInfo), None)
    path: Optional[Path] = field(default=None, compare=False)
    _doc: Dict[str, Any] = doc_field()

    @property
    def is_ensemble(self) -> bool:
        """Whether the card is an ensemble of members (``kind`` ``"ensemble"``)."""
        return self.kind == "ensemble"

    @property
    def onnx_only(self) -> bool:
        """Whether the model was imported from an ONNX file (``format`` set): it runs
        only as that file, and has no PyTorch weights to fine-tune."""
        return self.format is not None

    def families(self) -> List[List[int]]:
        """The class ids of each class family (post-processed on its own): one per
        output of an imported model (``outputs``), else one holding every class."""
        if self.outputs:
            return [list(o.classes) for o in self.outputs]
        return [[c.id for c in self.classes]]

    @property
    def num_outputs(self) -> int:
        """Logit channels: background + classes."""
        return len(self.classes) + 1

    @property
    def weights_path(self) -> Path:
        """``<path>/<weights>``; the card must have been read from a folder."""
        assert self.path is not None
        return self.path / self.weights

    @property
    def onnx_path(self) -> Path:
        """``<path>/<onnx>``; the card must have been read from a folder."""
        assert self.path is not None
        return self.path / self.onnx

    def graph_path(self, device: str, layer_gsd_m: Optional[float] = None) -> Path:
        """The ONNX file the ``device`` kind (``"cpu"``, ``"cuda"``) runs for a layer of
        ``layer_gsd_m`` metres per pixel (None: the model's own): its entry of
        ``graphs`` where ``quantization`` serves that layer and the file is there (an
        engine whose setup made no INT8 graph runs fp32), else ``onnx``; always
        ``onnx`` when the engine's precision setting forces fp32
        (``backend.config.precision``).

        Raises:
            protocol.errors.InputError: the precision setting is invalid.
        """
        assert self.path is not None
        name = self.graphs.get(device) if precision() != "fp32" else None
        if self.quantization is not None and not self.quantization.serves(layer_gsd_m):
            name = None
        return self.path / (name if name and (self.path / name).is_file() else self.onnx)

    def tile_geometry(self, device: str) -> Tuple[int, int]:
        """``(tile_size, overlap)`` in pixels for the ``device`` kind: its entry of
        ``tiling``, else the card's ``tile_size`` and ``overlap``."""
        t = self.tiling.get(device) or {}
        return int(t.get("tile_size", self.tile_size)), int(t.get("overlap", self.overlap))

    @property
    def val_names(self) -> List[str]:
        """Names of the pv01 train-split tiles the model was validated on, not fitted on
        (``training.val_names``, written by ``backend.learning.train``); empty when the
        card names none."""
        return list(self.training.val_names) if self.training else []

    @property
    def left_out_names(self) -> List[str]:
        """Names of the pv01 train-split tiles of a site the model never saw, neither
        fitted nor validated on (``training.left_out_names``); usually empty."""
        return list(self.training.left_out_names) if self.training else []

    def class_name(self, class_id: int) -> str:
        """The name of class ``class_id``.

        Raises:
            KeyError: no such class.
        """
        for c in self.classes:
            if c.id == class_id:
                return c.name
        raise KeyError(class_id)

    def public(self) -> Dict[str, Any]:
        """The card as sent over the wire (``models`` / ``pong``): JSON-safe, without
        the file names of the weights."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("weights", "onnx")}
        out["id"] = self.id
        out["version"] = self.version
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Optional[Path] = None) -> "ModelCard":
        """Parse a card dict (the JSON of ``card.json``).

        Args:
            d: the card's fields.
            path: the folder holding the weights, or None.

        Raises:
            ModelCorrupt: a required field is missing or a field has the wrong type.
        """
        try:
            if not isinstance(d, Mapping):
                raise BadField("a card must be a JSON object")
            card = cls.parse_fields(d, path=Path(path) if path is not None else None)
            if card.kind not in ("model", "ensemble"):
                raise BadField(f"kind must be 'model' or 'ensemble', not {card.kind!r}")
            if card.is_ensemble and not card.members:
                raise BadField("an ensemble needs members [{'id': ..., 'weight': ...}]")
            needed = _IMPORTED_ONLY if card.format else _MODEL_ONLY
            missing = [k for k in needed if not card.is_ensemble and d.get(k) is None]
            if missing:
                raise BadField(f"missing field {missing[0]!r}")
            err = imported_error(card.format, card.outputs, [c.id for c in card.classes])
            if err:
                raise BadField(err)
            bad = [t for t in card.tta if t not in TTA_TRANSFORMS]
            if bad:
                raise BadField(f"unknown TTA transform(s) {bad}; known: {TTA_TRANSFORMS}")
            r = card.gsd_range_m
            if r is not None and not (len(r) == 2 and 0 < r[0] < r[1]):
                raise BadField(f"gsd_range_m must be [low, high] metres with 0 < low < "
                               f"high, not {r}")
            return card
        except BadField as exc:
            raise ModelCorrupt(f"model card {path or ''} is invalid: {exc}") from None

    def updated(self, changes: Mapping[str, Any], path: Optional[Path] = None
                ) -> "ModelCard":
        """A new card: this one's JSON with ``changes`` applied, parsed again (so the
        changed fields are checked like a file's).

        Args:
            changes: card fields to set (JSON values).
            path: the new card's folder (default: this card's).

        Raises:
            ModelCorrupt: a changed field has the wrong type.
        """
        return ModelCard.from_dict(dict(self.to_dict(), **changes),
                                   self.path if path is None else path)


# ----------------------------------------------------------------------------- files

def card_path(root: Path, model_id: str) -> Path:
    """``<root>/<model_id>/card.json``.

    Raises:
        ModelNotFound: ``model_id`` is not a plain folder name (``../x`` cannot escape
            ``root``).
    """
    if (not isinstance(model_id, str) or not model_id or "/" in model_id
            or "\\" in model_id or model_id.startswith(".")):
        raise ModelNotFound(f"invalid model id {model_id!r}")
    return Path(root) / model_id / "card.json"


def read_card(path: Path) -> ModelCard:
    """Parse the ``card.json`` at ``path`` (its folder holds the weights).

    Raises:
        ModelCorrupt: the file cannot be read, is not JSON or misses fields.
    """
    try:
        d = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorrupt(f"model card {path} cannot be read: {exc}") from None
    return ModelCard.from_dict(d, Path(path).parent)


def write_card(card: ModelCard, path: Optional[Path] = None) -> Path:
    """Write ``card.to_dict()`` as JSON to ``path`` (default ``<card.path>/card.json``),
    replacing the file atomically; returns the path."""
    path = Path(path) if path is not None else card.path / "card.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card.to_dict(), indent=2) + "\n", "utf-8")
    tmp.replace(path)
    return path

