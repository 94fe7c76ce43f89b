"""Pending candidates: a retrained candidate the acceptance rule did not accept, kept a
while so that the user, who has seen the numbers, may still keep it.

A pending candidate is ``<root>/<base>/.pending-<token>/`` (:func:`save_pending`):
its ``weights.safetensors`` (and ``model.onnx``) and ``pending.json`` (the parent id,
the card updates and the lineage
:func:`backend.models.version_writer.write_version` will be given). :func:`keep_pending`
makes it a version; its lineage then records the rule's verdict and the user's choice.
Pending folders older than :data:`~backend.models.version_writer.PENDING_DAYS` days are
removed by later writes.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from backend.models.card import ModelCard
from backend.models.version_writer import (PENDING_DAYS, lineage_folder,
                                           move_candidate_files, write_version)
from backend.models.versions import (activate, check_base, lineage_dir, load_version_card,
                                     now_iso, shipped_card, split_id, write_json_atomic)
from protocol.errors import E_INVALID_INPUT, VersionError

_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def save_pending(parent_card: ModelCard, prepared: Path, card_updates: Dict[str, Any],
                 lineage: Dict[str, Any], root: Optional[Path] = None) -> str:
    """Keep a candidate the rule did not accept, so that the user may still keep it.

    Args:
        parent_card: the model that was fine-tuned.
        prepared: a folder holding the candidate's ``weights.safetensors`` (and
            ``model.onnx``), see :func:`backend.models.version_writer.candidate_dir`;
            they are moved out of it.
        card_updates, lineage: what
            :func:`backend.models.version_writer.write_version` will be given if it is
            kept.
        root: user model folder.

    Returns:
        The token naming it (32 hex digits) for :func:`keep_pending`.
    """
    token = uuid.uuid4().hex
    p = lineage_folder(split_id(parent_card.id)[0], root) / f".pending-{token}"
    p.mkdir()
    move_candidate_files(Path(prepared), p)
    write_json_atomic(p / "pending.json", {"parent": parent_card.id,
                                           "card_updates": card_updates,
                                           "lineage": lineage, "created": now_iso()})
    return token


def keep_pending(model_id: str, token: str, note: Optional[str] = None,
                 root: Optional[Path] = None) -> Dict[str, Any]:
    """Make a pending candidate (:func:`save_pending`) a version after all: the user
    saw the numbers and chose to keep it against the rule's verdict.

    Its lineage keeps the rule's ``verdict`` and ``reason`` and records ``decision``
    ``"kept by the user"`` (with ``note``, the user's words, when given). A version
    with an area is put in use in its area, a general one is made active.

    Args:
        model_id: any id of the candidate's lineage.
        token: the retrain report's ``pending``.
        note: why the user keeps it (optional, at most 500 characters are kept).
        root: user model folder.

    Returns:
        :func:`backend.models.versions.describe` of the lineage, plus ``kept``: the new
        version's id.

    Raises:
        VersionError: no such pending candidate (never made, already kept, or removed
            after :data:`~backend.models.version_writer.PENDING_DAYS` days).
    """
    base, _ = split_id(model_id)
    check_base(base)
    if not _TOKEN.match(str(token)):
        raise VersionError(f"invalid pending candidate {token!r}", E_INVALID_INPUT)
    p = lineage_dir(base, root) / f".pending-{token}"
    try:
        meta = json.loads((p / "pending.json").read_text("utf-8"))
    except (OSError, ValueError):
        raise VersionError(f"no pending candidate {token} of {base}: it was kept already, "
                           f"or removed after {PENDING_DAYS} days; retrain again") from None
    parent_id = str(meta["parent"])
    parent = (shipped_card(base) if split_id(parent_id)[1] == 0
              else load_version_card(parent_id, root))
    lineage = dict(meta.get("lineage") or {})
    lineage["decision"] = "kept by the user"
    lineage["kept"] = {"at": now_iso(), "note": (note or "")[:500]}
    new = write_version(parent, None, dict(meta.get("card_updates") or {}), lineage, root,
                        prepared=p)
    shutil.rmtree(p, ignore_errors=True)
    out = activate(new.id, root)
    out["kept"] = new.id
    return out
