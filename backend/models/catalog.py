"""The models a daemon offers: shipped cards, user versions, imported models, and the
default per device.

Shipped models live in the model folder (:func:`backend.config.models_dir`), one
sub-folder per card (:mod:`backend.models.card` describes the layout and the fields);
user versions ``<base>@<n>`` live in the user model folder
(:mod:`backend.models.versions`), and so do the models imported from ONNX files
(:mod:`backend.models.imported`). :func:`load_card` and :func:`list_cards` resolve every
kind of id. The model a new user gets on a CPU or a GPU is written only in
``<models>/defaults.json`` (:func:`default_model_id`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

from backend.config import models_dir
from backend.models.card import TTA_TRANSFORMS, Lineage, ModelCard, card_path, read_card
from backend.models.imported import list_imported_cards, load_imported_card
from backend.models.versions import SEP, active_id, list_version_cards, load_version_card
from protocol.choice import (GsdChoice, ModelRange, candidates_from_cards,
                             choose_for_gsd)
from protocol.errors import ModelCorrupt, ModelNotFound

# ModelCard and the torch constructors are importable from here for callers that only
# need the catalog; their home is backend.models.card / backend.models.torch_models.
__all__ = ["ModelCard", "TTA_TRANSFORMS", "default_model_id",
           "list_cards", "load_card", "read_card"]

#: The file in the model folder that names the default model per device.
DEFAULTS_FILE = "defaults.json"


def load_card(model_id: str, root: Optional[Path] = None) -> ModelCard:
    """Load the card of ``model_id`` from ``root`` (default :func:`models_dir`); with the
    default root a user version id ``<base>@<n>`` is loaded from the user model folder,
    and an id no shipped model has is looked for among the imported models.

    Raises:
        ModelNotFound: no such model folder/card (the id is also checked to be a
            plain folder name, so ``../x`` cannot escape the model folder).
        ModelCorrupt: the card is not valid JSON or misses fields.
    """
    if root is None and isinstance(model_id, str) and SEP in model_id:
        return load_version_card(model_id)  # never under models/
    default = root is None
    root = Path(root) if root else models_dir()
    path = card_path(root, model_id)
    imported = load_imported_card(model_id) if default and not path.is_file() else None
    if imported is not None:
        return imported
    if not path.is_file():
        raise ModelNotFound(f"no model {model_id!r} in {root} "
                            f"(available: {', '.join(c.id for c in list_cards(root)) or 'none'})")
    return read_card(path)


def list_cards(root: Optional[Path] = None) -> List[ModelCard]:
    """All readable model cards under ``root``, sorted by id; broken ones are skipped.

    With the default ``root``, the user versions of :mod:`backend.models.versions`
    follow (``<base>@<n>``, each with its ``lineage``), then the imported models
    (:mod:`backend.models.imported`); a shipped card whose lineage has user versions gets
    ``lineage`` ``{"base": id, "number": 0, "parent": None, "active": bool}``.
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
        cards += _user_versions(cards) + _imported()
    return cards


def _imported() -> List[ModelCard]:
    """The imported models' cards (none when the user folder cannot be read)."""
    try:
        return list_imported_cards()
    except Exception:  # an unreadable user folder must not hide the shipped models
        return []


def _user_versions(shipped: List[ModelCard]) -> List[ModelCard]:
    """User version cards, and lineage flags on the shipped cards they derive from."""
    try:
        extra = list_version_cards()
        bases = {c.base_model for c in extra}
        for c in shipped:
            if c.id in bases:
                c.lineage = Lineage.from_dict({"base": c.id, "number": 0, "parent": None,
                                               "active": active_id(c.id) == c.id})
        return extra
    except Exception:  # an unreadable user folder must not hide the shipped models
        return []


def default_model_id(cards: List[ModelCard], cuda: bool,
                     root: Optional[Path] = None) -> Optional[str]:
    """The model a new user gets.

    Args:
        cards: the cards on offer (:func:`list_cards`).
        cuda: True on a GPU daemon.
        root: the model folder holding ``defaults.json`` (default :func:`models_dir`).

    Returns:
        ``ORTHOLENS_DEFAULT_MODEL``, else the ``cuda`` or ``cpu`` entry of
        ``<models>/defaults.json`` (a slower, more accurate model such as an ensemble can
        be the entry where a GPU makes it fast), the first of these that is among
        ``cards`` (an unknown ``ORTHOLENS_DEFAULT_MODEL`` falls back to the entry), else
        the first card; None if there are no cards.
    """
    ids = [c.id for c in cards]
    wanted = [os.environ.get("ORTHOLENS_DEFAULT_MODEL")] + _device_list(root, cuda)[:1]
    return next((m for m in wanted if m in ids), ids[0] if ids else None)


def gsd_candidates(cards: List[ModelCard], cuda: bool,
                   root: Optional[Path] = None) -> List[ModelRange]:
    """The models a detection that names none chooses from by the layer's GSD, in order
    of preference (``protocol.choice``): the ``cuda`` or ``cpu`` list of
    ``<models>/defaults.json`` among ``cards`` (``ORTHOLENS_DEFAULT_MODEL`` first when
    set), else the default model alone.

    Returns:
        :class:`~protocol.choice.ModelRange` per candidate; empty without cards.
    """
    order = list(_device_list(root, cuda))
    first = default_model_id(cards, cuda, root)
    if first is not None:
        order = [first] + [m for m in order if m != first]
    return candidates_from_cards([c.to_dict() for c in cards], order)


def choose_for_layer(cards: List[ModelCard], cuda: bool, gsd_m: float,
                     root: Optional[Path] = None) -> GsdChoice:
    """The model for a layer of ``gsd_m`` metres per pixel
    (:func:`protocol.choice.choose_for_gsd` over :func:`gsd_candidates`).

    Raises:
        ModelNotFound: there are no model cards.
    """
    candidates = gsd_candidates(cards, cuda, root)
    if not candidates:
        raise ModelNotFound("no model cards to choose from")
    return choose_for_gsd(candidates, gsd_m)


def _device_list(root: Optional[Path], cuda: bool) -> List[str]:
    """The ``cuda`` or ``cpu`` entry of ``defaults.json`` as a list of model ids (one id
    or a list of them)."""
    entry = _defaults(root).get("cuda" if cuda else "cpu")
    if isinstance(entry, str):
        return [entry]
    return [str(m) for m in entry] if isinstance(entry, list) else []


def cpu_default_model_id() -> str:
    """The CPU default model of ``defaults.json`` among the shipped cards (what a daemon
    without a GPU offers first): the model tools measure when none is named.

    Raises:
        ModelNotFound: there are no model cards.
    """
    mid = default_model_id(list_cards(models_dir()), cuda=False)
    if mid is None:
        raise ModelNotFound(f"no model cards in {models_dir()}")
    return mid


def _defaults(root: Optional[Path]) -> dict:
    try:
        d = json.loads(((Path(root) if root else models_dir()) / DEFAULTS_FILE)
                       .read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}
