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
``tile_size, overlap``           inference tile side and overlap, pixels at ``gsd_m``
``threshold``                    probability threshold (chosen on a validation split of
                                 the *train* data, never on held-out)
``min_area_m2, max_hole_m2``     smallest object kept, largest hole filled (m²)
``simplify_m, orthogonalize``    polygon simplification (m) and rectangle snapping
``min_solidity, min_score``      objects less solid (area / convex hull area) or less
                                 confident (mean probability) are dropped; 0 keeps all
``weights, onnx``                file names inside the model folder
``members, tta, shifts``         ensembles: ``[{"id", "weight"}]`` (:class:`Member`),
                                 test-time augmentations (:data:`TTA_TRANSFORMS`), and a
                                 second tiling offset by half a tile; an ensemble has no
                                 weights of its own
``training``                     how the model was trained (:class:`TrainingInfo`; its
                                 ``val_names`` are the guard of a retrain)

Fields written by the tools and the retrain job (documentation and lineage):
``parameters``, ``heldout_metrics``, ``vienna_false_positives``, ``metrics``,
``base_model``, ``base_version``, ``lineage`` (:class:`Lineage`), ``retrain``
(:class:`RetrainInfo`), ``acceptance_rule``. Any other key of a card file is kept
as it is and written back by :meth:`ModelCard.to_dict`.

This module depends on nothing else of the backend but the protocol's errors.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from protocol.errors import ModelCorrupt, ModelNotFound

#: Test-time augmentations an ensemble may list (the dihedral group D4 of the square).
TTA_TRANSFORMS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270",
                  "transpose", "antitranspose")


# ----------------------------------------------------------------------------- parsing

_REQUIRED = object()


class _BadField(ValueError):
    """A card field of the wrong type (turned into ModelCorrupt by the caller)."""


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, got {type(x).__name__}")
    return x


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or int(x) != x:
        raise TypeError(f"expected an integer, got {x!r}")
    return int(x)


def _float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)


def _bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected true or false, got {x!r}")
    return x


def _dict(x: Any) -> Dict[str, Any]:
    if not isinstance(x, dict):
        raise TypeError(f"expected an object, got {type(x).__name__}")
    return dict(x)


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], List[Any]]:
    def check(x: Any) -> List[Any]:
        if not isinstance(x, list):
            raise TypeError(f"expected a list, got {type(x).__name__}")
        return [item(v) for v in x]
    return check


def _record(cls) -> Callable[[Any], Any]:
    return lambda x: cls.from_dict(_dict(x))


def _field(check: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
    """A typed card field: ``check`` parses its JSON value (raising TypeError or
    ValueError), ``default`` (a value, or a callable making one) is used when the key
    is absent or null; without a default the key is required."""
    meta = {"check": check}
    if default is _REQUIRED:
        return field(metadata=meta)
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _REQUIRED


def _json(v: Any) -> Any:
    if isinstance(v, _Record):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


class _Record:
    """A typed part of a card, read from and written back to JSON.

    Each field declared with :func:`_field` is the JSON key of the same name.
    ``_doc`` (private) holds the dict the record was parsed from: keys this module does
    not know (documentation added by hand) and the key order of the file survive a
    read-modify-write. :meth:`to_dict` writes every typed field that was in the file or
    differs from its default, on top of that dict.
    """

    _doc: Dict[str, Any]

    @classmethod
    def _parse(cls, d: Mapping[str, Any], **extra: Any):
        """Parse the typed fields of ``d`` (``extra``: non-JSON constructor arguments).

        Raises:
            _BadField: a required key is missing or a value has the wrong type.
        """
        kwargs = dict(extra)
        for f in fields(cls):
            check = f.metadata.get("check")
            if check is None:
                continue
            value, default = d.get(f.name), _default(f)
            if value is None:
                if default is _REQUIRED:
                    raise _BadField(f"missing field {f.name!r}")
                kwargs[f.name] = default
                continue
            try:
                kwargs[f.name] = check(value)
            except (TypeError, ValueError) as exc:
                raise _BadField(f"field {f.name!r}: {exc}") from None
        return cls(_doc=dict(d), **kwargs)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        """Parse a JSON object.

        Raises:
            _BadField: a required key is missing or a value has the wrong type (a
                :class:`ModelCorrupt` once it reaches :meth:`ModelCard.from_dict`).
        """
        return cls._parse(d)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (a new dict)."""
        out = dict(self._doc)
        for f in fields(self):
            if "check" not in f.metadata:
                continue
            v, default = getattr(self, f.name), _default(f)
            if f.name in self._doc or default is _REQUIRED or v != default:
                out[f.name] = _json(v)
        return out


def _doc_field() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


# ----------------------------------------------------------------------------- parts

@dataclass
class ClassSpec(_Record):
    """One output class.

    Attributes:
        id: class index, 1.. (0 is background).
        name: class name (the ``class`` attribute of result polygons).
        color: ``#rrggbb`` for the plugin's layer style, or None.
    """

    id: int = _field(_int)
    name: str = _field(_str)
    color: Optional[str] = _field(_str, None)
    _doc: Dict[str, Any] = _doc_field()


@dataclass
class Member(_Record):
    """One member of an ensemble.

    Attributes:
        id: the member's model id.
        weight: its weight in the fused probability mean.
    """

    id: str = _field(_str)
    weight: float = _field(_float, 1.0)
    _doc: Dict[str, Any] = _doc_field()


@dataclass
class Normalization(_Record):
    """Input normalisation: ``(x / scale - mean) / std`` per band.

    Attributes:
        mean, std: per band, after scaling.
        scale: divisor of the raw values (255 for uint8).
    """

    mean: List[float] = _field(_list_of(_float))
    std: List[float] = _field(_list_of(_float))
    scale: float = _field(_float, 255.0)
    _doc: Dict[str, Any] = _doc_field()


@dataclass
class TrainingInfo(_Record):
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

    val_names: List[str] = _field(_list_of(_str), list)
    left_out_names: List[str] = _field(_list_of(_str), list)
    fit_tiles: Optional[int] = _field(_int, None)
    val_tiles: Optional[int] = _field(_int, None)
    data: Optional[str] = _field(_str, None)
    seed: Optional[int] = _field(_int, None)
    split_seed: Optional[int] = _field(_int, None)
    steps: Optional[int] = _field(_int, None)
    batch_size: Optional[int] = _field(_int, None)
    chip: Optional[int] = _field(_int, None)
    budget_s: Optional[float] = _field(_float, None)
    train_seconds: Optional[float] = _field(_float, None)
    device: Optional[str] = _field(_str, None)
    threads: Optional[int] = _field(_int, None)
    torch: Optional[str] = _field(_str, None)
    final_loss: Optional[float] = _field(_float, None)
    config: Dict[str, Any] = _field(_dict, dict)
    postprocess_chosen_on_val: Dict[str, Any] = _field(_dict, dict)
    cross_validation: Optional[Dict[str, Any]] = _field(_dict, None)
    fold: Optional[int] = _field(_int, None)
    augmentation: Optional[Dict[str, Any]] = _field(_dict, None)
    _doc: Dict[str, Any] = _doc_field()


@dataclass
class Lineage(_Record):
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

    id: Optional[str] = _field(_str, None)
    base: Optional[str] = _field(_str, None)
    number: Optional[int] = _field(_int, None)
    parent: Optional[str] = _field(_str, None)
    parent_version: Optional[str] = _field(_str, None)
    created: Optional[str] = _field(_str, None)
    active: Optional[bool] = _field(_bool, None)
    corrections: Optional[int] = _field(_int, None)
    decision: Optional[str] = _field(_str, None)
    reason: Optional[str] = _field(_str, None)
    data: Optional[Dict[str, Any]] = _field(_dict, None)
    summary: Optional[Dict[str, Any]] = _field(_dict, None)
    metrics: Optional[Dict[str, Any]] = _field(_dict, None)
    config: Optional[Dict[str, Any]] = _field(_dict, None)
    train: Optional[Dict[str, Any]] = _field(_dict, None)
    mlflow_run_id: Optional[str] = _field(_str, None)
    onnx_export_error: Optional[str] = _field(_str, None)
    scope: Optional[Dict[str, Any]] = _field(_dict, None)
    in_use: Optional[bool] = _field(_bool, None)
    verdict: Optional[str] = _field(_str, None)
    _doc: Dict[str, Any] = _doc_field()

    def with_active(self, active: bool, in_use: Optional[bool] = None) -> "Lineage":
        """A copy with ``active`` (and, for a version with an area, ``in_use``) set."""
        d = dict(self.to_dict(), active=bool(active))
        if in_use is not None:
            d["in_use"] = bool(in_use)
        return Lineage.from_dict(d)


@dataclass
class RetrainInfo(_Record):
    """The retrain that produced a user version.

    Attributes:
        parent: the model it was fine-tuned from.
        reason: why the candidate was accepted.
        budget_s: the time budget, seconds. steps: the steps it ran.
    """

    parent: Optional[str] = _field(_str, None)
    reason: Optional[str] = _field(_str, None)
    budget_s: Optional[float] = _field(_float, None)
    steps: Optional[int] = _field(_int, None)
    _doc: Dict[str, Any] = _doc_field()


# ----------------------------------------------------------------------------- the card

#: Fields a single model needs that an ensemble (no weights of its own) does without.
_MODEL_ONLY = ("architecture", "encoder", "normalize")


@dataclass
class ModelCard(_Record):
    """A parsed ``card.json``; the fields are described in the module docstring.

    ``path`` is the folder the card was read from (it holds the weights), or None for a
    card built in memory.
    """

    id: str = _field(_str)
    version: str = _field(_str)
    classes: List[ClassSpec] = _field(_list_of(_record(ClassSpec)))
    bands: int = _field(_int)
    gsd_m: float = _field(_float)
    tile_size: int = _field(_int)
    overlap: int = _field(_int)
    threshold: float = _field(_float)
    min_area_m2: float = _field(_float)
    simplify_m: float = _field(_float)
    kind: str = _field(_str, "model")
    architecture: str = _field(_str, "")
    encoder: str = _field(_str, "")
    arch_kwargs: Dict[str, Any] = _field(_dict, dict)
    band_names: Optional[List[str]] = _field(_list_of(_str), None)
    dtype: str = _field(_str, "uint8")
    normalize: Optional[Normalization] = _field(_record(Normalization), None)
    max_hole_m2: float = _field(_float, 0.0)
    orthogonalize: bool = _field(_bool, False)
    min_solidity: float = _field(_float, 0.0)
    min_score: float = _field(_float, 0.0)
    weights: str = _field(_str, "weights.safetensors")
    onnx: str = _field(_str, "model.onnx")
    members: List[Member] = _field(_list_of(_record(Member)), list)
    tta: List[str] = _field(_list_of(_str), lambda: ["identity"])
    shifts: bool = _field(_bool, False)
    training: Optional[TrainingInfo] = _field(_record(TrainingInfo), None)
    parameters: Optional[int] = _field(_int, None)
    heldout_metrics: Optional[Dict[str, Any]] = _field(_dict, None)
    vienna_false_positives: Optional[Dict[str, Any]] = _field(_dict, None)
    metrics: Optional[Dict[str, Any]] = _field(_dict, None)
    base_model: Optional[str] = _field(_str, None)
    base_version: Optional[str] = _field(_str, None)
    lineage: Optional[Lineage] = _field(_record(Lineage), None)
    retrain: Optional[RetrainInfo] = _field(_record(RetrainInfo), None)
    acceptance_rule: Optional[str] = _field(_str, None)
    path: Optional[Path] = field(default=None, compare=False)
    _doc: Dict[str, Any] = _doc_field()

    @property
    def is_ensemble(self) -> bool:
        return self.kind == "ensemble"

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
                raise _BadField("a card must be a JSON object")
            card = cls._parse(d, path=Path(path) if path is not None else None)
            if card.kind not in ("model", "ensemble"):
                raise _BadField(f"kind must be 'model' or 'ensemble', not {card.kind!r}")
            if card.is_ensemble and not card.members:
                raise _BadField("an ensemble needs members [{'id': ..., 'weight': ...}]")
            missing = [k for k in _MODEL_ONLY if not card.is_ensemble and d.get(k) is None]
            if missing:
                raise _BadField(f"missing field {missing[0]!r}")
            bad = [t for t in card.tta if t not in TTA_TRANSFORMS]
            if bad:
                raise _BadField(f"unknown TTA transform(s) {bad}; known: {TTA_TRANSFORMS}")
            return card
        except _BadField as exc:
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
