"""Model cards and model construction by name.

A model lives in ``<models_dir>/<model_id>/`` as

``card.json``            the model card (schema below), the single description of a model
``weights.safetensors``  fp16 weights (safetensors: no pickle, ever)
``model.onnx``           fp32 ONNX export, built from the weights by
                         ``python -m backend.export`` (``build.py setup`` runs it)

Card fields used by the code (others are documentation):

``id, version``                  str; the polygons carry both
``architecture, encoder``        smp class name (``Unet``, ``FPN``, ...) and encoder name
``arch_kwargs``                  extra keyword arguments for the smp class
``classes``                      ``[{"id": 1, "name": "photovoltaic", "color": "#rrggbb"}]``;
                                 id 0 is background, logits have ``len(classes) + 1``
                                 channels
``bands``                        number of input bands (3 = RGB), dtype ``uint8``
``normalize``                    ``{"scale": 255.0, "mean": [..], "std": [..]}``; the input
                                 is ``(x / scale - mean) / std`` per band
``gsd_m``                        ground sampling distance the model was trained at (m/px)
``tile_size, overlap``           inference tile side and overlap, pixels at ``gsd_m``
``threshold``                    probability threshold (chosen on a validation split of
                                 the *train* data, never on held-out)
``min_area_m2, simplify_m``      post-processing defaults (m², m)

An *ensemble* card has ``"kind": "ensemble"``, ``members`` (``[{"id": model id,
"weight": float}]``), ``tta`` (test-time augmentations, names in
:data:`TTA_TRANSFORMS`) and ``shifts`` (bool: add a second tiling offset by half a tile);
it has no weights of its own and carries the fused post-processing defaults.

Construction follows segmentation-models-pytorch: one registry of architectures, a
model built by name from its card (:func:`build_torch_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import models_dir


#: Test-time augmentations an ensemble may list (the dihedral group D4 of the square).
TTA_TRANSFORMS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270",
                  "transpose", "antitranspose")


class ModelNotFound(LookupError):
    """No model card with that id, or its weights are missing."""


class ModelCorrupt(ValueError):
    """A model card or weight file exists but cannot be read."""


@dataclass
class ModelCard:
    """A parsed ``card.json``; see the module docstring for the fields."""

    id: str
    version: str
    architecture: str
    encoder: str
    classes: List[Dict[str, Any]]
    bands: int
    normalize: Dict[str, Any]
    gsd_m: float
    tile_size: int
    overlap: int
    threshold: float
    min_area_m2: float
    simplify_m: float
    arch_kwargs: Dict[str, Any] = field(default_factory=dict)
    kind: str = "model"
    members: List[Dict[str, Any]] = field(default_factory=list)
    tta: List[str] = field(default_factory=lambda: ["identity"])
    shifts: bool = False
    path: Optional[Path] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        return self.kind == "ensemble"

    @property
    def num_outputs(self) -> int:
        """Logit channels: background + classes."""
        return len(self.classes) + 1

    @property
    def weights_path(self) -> Path:
        assert self.path is not None
        return self.path / self.raw.get("weights", "weights.safetensors")

    @property
    def onnx_path(self) -> Path:
        assert self.path is not None
        return self.path / self.raw.get("onnx", "model.onnx")

    def class_name(self, class_id: int) -> str:
        for c in self.classes:
            if c["id"] == class_id:
                return str(c["name"])
        raise KeyError(class_id)

    def public(self) -> Dict[str, Any]:
        """The card as sent over the wire (``models`` / ``pong``): JSON-safe."""
        out = {k: v for k, v in self.raw.items() if k not in ("weights", "onnx")}
        out["id"] = self.id
        out["version"] = self.version
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any], path: Optional[Path] = None) -> "ModelCard":
        """Parse a card dict.

        Raises:
            ModelCorrupt: a required field is missing or of the wrong type.
        """
        try:
            kind = str(d.get("kind", "model"))
            if kind not in ("model", "ensemble"):
                raise ValueError(f"kind must be 'model' or 'ensemble', not {kind!r}")
            ens = kind == "ensemble"
            members = [dict(m) for m in d.get("members", [])]
            if ens and (not members or not all(isinstance(m.get("id"), str) for m in members)):
                raise ValueError("an ensemble needs members [{'id': ..., 'weight': ...}]")
            tta = [str(t) for t in d.get("tta", ["identity"])]
            bad = [t for t in tta if t not in TTA_TRANSFORMS]
            if bad:
                raise ValueError(f"unknown TTA transform(s) {bad}; known: {TTA_TRANSFORMS}")
            return cls(
                id=str(d["id"]), version=str(d["version"]),
                architecture=str(d.get("architecture", "ensemble") if ens else d["architecture"]),
                encoder=str(d.get("encoder", "") if ens else d["encoder"]),
                classes=[dict(c) for c in d["classes"]], bands=int(d["bands"]),
                normalize=dict(d.get("normalize", {}) if ens else d["normalize"]),
                gsd_m=float(d["gsd_m"]),
                tile_size=int(d["tile_size"]), overlap=int(d["overlap"]),
                threshold=float(d["threshold"]), min_area_m2=float(d["min_area_m2"]),
                simplify_m=float(d["simplify_m"]),
                arch_kwargs=dict(d.get("arch_kwargs", {})), kind=kind, members=members,
                tta=tta, shifts=bool(d.get("shifts", False)), path=path, raw=dict(d))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCorrupt(f"model card {path or ''} is invalid: {exc!r}") from None


def load_card(model_id: str, root: Optional[Path] = None) -> ModelCard:
    """Load the card of ``model_id`` from ``root`` (default :func:`models_dir`).

    Raises:
        ModelNotFound: no such model folder/card (the id is also checked to be a
            plain folder name, so ``../x`` cannot escape the model folder).
        ModelCorrupt: the card is not valid JSON or misses fields.
    """
    if root is None and isinstance(model_id, str) and "@" in model_id:
        # a user version "<base>@<n>" (backend.versions): never under models/
        from .versions import load_version_card
        return load_version_card(model_id)
    root = Path(root) if root else models_dir()
    if not model_id or "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise ModelNotFound(f"invalid model id {model_id!r}")
    card_path = root / model_id / "card.json"
    if not card_path.is_file():
        raise ModelNotFound(f"no model {model_id!r} in {root} "
                            f"(available: {', '.join(c.id for c in list_cards(root)) or 'none'})")
    return read_card(card_path)


def val_names(card: "ModelCard") -> List[str]:
    """Names of the pv01 train-split tiles ``card``'s model was validated on, not fitted
    on (``training.val_names``, written by ``backend.train``); empty when unknown."""
    return list((card.raw.get("training") or {}).get("val_names") or [])


def read_card(card_path: Path) -> ModelCard:
    """Parse the ``card.json`` at ``card_path`` (its folder holds the weights).

    Raises:
        ModelCorrupt: the file cannot be read, is not JSON or misses fields.
    """
    try:
        d = json.loads(Path(card_path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorrupt(f"model card {card_path} cannot be read: {exc}") from None
    return ModelCard.from_dict(d, Path(card_path).parent)


def list_cards(root: Optional[Path] = None) -> List[ModelCard]:
    """All readable model cards under ``root``, sorted by id; broken ones are skipped.

    With the default ``root``, the user versions of ``backend.versions`` follow
    (``<base>@<n>``, each with ``raw["lineage"]``), and a shipped card whose lineage has
    user versions gets ``raw["lineage"] = {"number": 0, "active": bool}``.
    """
    default = root is None
    root = Path(root) if root else models_dir()
    cards = []
    for p in sorted(root.glob("*/card.json")):
        try:
            cards.append(read_card(p))
        except ModelCorrupt:
            continue
    if default:
        cards += _user_versions(cards)
    return cards


def _user_versions(shipped: List[ModelCard]) -> List[ModelCard]:
    """User version cards, and lineage flags on the shipped cards they derive from."""
    try:
        from .versions import active_id, list_version_cards
        extra = list_version_cards()
        bases = {str(c.raw.get("base_model")) for c in extra}
        for c in shipped:
            if c.id in bases:
                c.raw["lineage"] = {"base": c.id, "number": 0, "parent": None,
                                    "active": active_id(c.id) == c.id}
        return extra
    except Exception:  # an unreadable user folder must not hide the shipped models
        return []


def default_model_id(cards: List[ModelCard], cuda: bool,
                     root: Optional[Path] = None) -> Optional[str]:
    """The model a new user gets: ``ORTHOLENS_DEFAULT_MODEL``, else the ``cuda`` or
    ``cpu`` entry of ``<models>/defaults.json`` (the accurate ensemble where a GPU makes
    it fast, the fast single model on a CPU), else the first card; None if no cards."""
    import os
    ids = [c.id for c in cards]
    wanted = os.environ.get("ORTHOLENS_DEFAULT_MODEL")
    if not wanted:
        try:
            d = json.loads(((Path(root) if root else models_dir()) / "defaults.json")
                           .read_text("utf-8"))
            wanted = d.get("cuda" if cuda else "cpu")
        except (OSError, ValueError, AttributeError):
            wanted = None
    if wanted in ids:
        return wanted
    return ids[0] if ids else None


def build_torch_model(card: ModelCard):
    """Construct the (untrained) torch module a card describes.

    Uses ``segmentation_models_pytorch.<architecture>(encoder_name=<encoder>,
    encoder_weights=None, in_channels=<bands>, classes=<num_outputs>, **arch_kwargs)``.
    Output: logits, float32 tensor ``(N, num_outputs, H, W)`` for input
    ``(N, bands, H, W)`` with H, W multiples of 32.

    Raises:
        ModelCorrupt: unknown architecture name.
    """
    import segmentation_models_pytorch as smp

    arch = getattr(smp, card.architecture, None)
    if arch is None or not isinstance(arch, type):
        raise ModelCorrupt(f"unknown architecture {card.architecture!r}")
    return arch(encoder_name=card.encoder, encoder_weights=None, in_channels=card.bands,
                classes=card.num_outputs, **card.arch_kwargs)


def load_torch_model(card: ModelCard, device: str = "cpu"):
    """Build the model and load its safetensors weights (fp16 on disk -> fp32).

    Raises:
        ModelNotFound: the weight file is missing.
        ModelCorrupt: the weights cannot be read or do not match the architecture.
    """
    from safetensors.torch import load_file

    if not card.weights_path.is_file():
        raise ModelNotFound(f"model {card.id!r} has no weights at {card.weights_path}")
    model = build_torch_model(card)
    try:
        state = load_file(str(card.weights_path), device="cpu")
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # safetensors raises several types on bad files
        raise ModelCorrupt(f"weights of model {card.id!r} cannot be loaded: {exc}") from None
    return model.to(device).eval()
