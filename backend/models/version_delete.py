"""Deleting a user version (the ``delete`` request).

What may be deleted, and how:

* a shipped model (``models/<id>/``, number 0): never (``invalid_input``);
* a version in use (the active version of its lineage, or a version in use in its
  area): only when the user confirmed (``roll_back``); it is then rolled back first
  (``backend.models.versions.rollback``: the active version's parent becomes active,
  an area version is taken out of use there), and deleted after;
* any other version: deleted. A version that is the parent of others may go: their
  lineage still names it, and rolling one of them back to it falls back to the shipped
  model.

The version's folder ``<base>/<n>/`` is renamed to ``<base>/.deleted-<n>/`` (atomic, on
the same file system), then its weights and ONNX graph are removed: what stays is its
card and lineage, a record of what existed, and its number, which the next version
never takes (``versions.used_numbers``), so that result polygons naming
``<base>@<n>`` never mean two models.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from backend.models.versions import (DELETED_PREFIX, active_id, area_ids, describe,
                                     lineage_dir, now_iso, rollback, split_id,
                                     version_numbers, write_json_atomic)
from protocol.errors import E_INVALID_INPUT, VersionError
from protocol.version_params import DeleteParams

#: What a deleted version's folder keeps (the rest, weights and ONNX, is removed).
KEPT_FILES = ("card.json", "lineage.json")


def in_use_reason(model_id: str, root: Optional[Path] = None) -> Optional[str]:
    """Why ``model_id`` is in use (``"... is the active version ..."``), or None when it
    is not."""
    base, _ = split_id(model_id)
    if active_id(base, root) == model_id:
        return f"{model_id} is the active version of {base}"
    if model_id in area_ids(base, root):
        return f"{model_id} is in use in its area"
    return None


def delete_version(params: DeleteParams, root: Optional[Path] = None) -> Dict[str, Any]:
    """Delete the user version ``params.model`` (see the module docstring).

    Returns:
        ``describe`` of the lineage afterwards, plus ``deleted`` (the id) and
        ``rolled_back`` (True when it was in use and was rolled back first).

    Raises:
        VersionError: ``invalid_input`` for a shipped model or, without ``roll_back``, a
            version in use (the message says which and how to go on); ``not_found`` for
            an unknown version.
    """
    base, n = split_id(params.model)
    if n == 0:
        raise VersionError(f"{base} is a shipped model: it cannot be deleted (only "
                           f"retrained versions, {base}@<n>, can)", E_INVALID_INPUT)
    if n not in version_numbers(base, root):
        raise VersionError(f"no model version {params.model!r}")
    why = in_use_reason(params.model, root)
    if why and not params.roll_back:
        raise VersionError(f"{why}: roll it back first, or confirm deleting it (it is "
                           f"then rolled back, then deleted)", E_INVALID_INPUT)
    if why:
        rollback(params.model, root)
    d = lineage_dir(base, root)
    gone = d / f"{DELETED_PREFIX}{n}"
    if gone.exists():  # a deletion that stopped half-way before: the number is taken
        shutil.rmtree(gone, ignore_errors=True)
    os.rename(d / str(n), gone)
    for p in gone.iterdir():
        if p.name not in KEPT_FILES:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    write_json_atomic(gone / "deleted.json", {"id": params.model, "deleted": now_iso(),
                                              "rolled_back": bool(why)})
    out = describe(base, root)
    out.update(deleted=params.model, rolled_back=bool(why))
    return out


__all__ = ["KEPT_FILES", "in_use_reason", "delete_version"]
