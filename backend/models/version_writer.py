"""Writing a new version of the version store (:mod:`backend.models.versions`).

A version is written into ``<root>/<base>/.tmp-<random>/`` and renamed to ``<n>/`` in
one ``os.rename`` only when complete (:func:`write_version`), so a trainer killed
half-way leaves no half-written version (only a ``.tmp-*`` folder that listings ignore
and later writes remove). A retrain first exports its candidate into a
:func:`candidate_dir`; an accepted candidate's files are moved into the new version,
a rejected one's into a pending candidate (:mod:`backend.models.pending`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from backend.models.card import ModelCard
from backend.models.torch_models import save_weights
from backend.models.versions import (lineage_dir, load_version_card, now_iso, split_id,
                                     used_numbers, version_id)

_STALE_TMP_S = 24 * 3600
#: Days a rejected candidate (:mod:`backend.models.pending`) stays available to be kept
#: by the user; later writes remove older ones.
PENDING_DAYS = 7
#: The files of a candidate prepared before it becomes a version or a pending candidate.
CANDIDATE_FILES = ("weights.safetensors", "model.onnx")


def lineage_folder(base: str, root: Optional[Path] = None) -> Path:
    """``<root>/<base>``, created, its stale ``.tmp-*`` and ``.pending-*`` folders
    removed: where a new version or pending candidate is written."""
    d = lineage_dir(base, root)
    d.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(d)
    return d


def _cleanup_stale(d: Path) -> None:
    """Remove, in the lineage folder ``d``, the ``.tmp-*`` folders older than a day and
    the ``.pending-*`` ones older than :data:`PENDING_DAYS` days."""
    now = time.time()
    for pattern, age in ((".tmp-*", _STALE_TMP_S), (".pending-*", PENDING_DAYS * 86400)):
        for p in d.glob(pattern):
            try:
                if now - p.stat().st_mtime > age:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def candidate_dir(base: str, root: Optional[Path] = None) -> Path:
    """A fresh ``<root>/<base>/.tmp-cand-<random>/`` folder for a candidate's files
    (same file system as the versions, so :func:`write_version` can move them in; the
    caller removes it; leftovers are removed by later writes after a day)."""
    d = lineage_dir(base, root)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f".tmp-cand-{uuid.uuid4().hex}"
    p.mkdir()
    return p


def move_candidate_files(src: Path, dst: Path) -> None:
    """Move the :data:`CANDIDATE_FILES` that ``src`` holds into the folder ``dst``."""
    for name in CANDIDATE_FILES:
        if (Path(src) / name).is_file():
            shutil.move(str(Path(src) / name), str(dst / name))


def write_version(parent_card: ModelCard, state_dict: Optional[Dict[str, Any]],
                  card_updates: Dict[str, Any],
                  lineage: Dict[str, Any], root: Optional[Path] = None,
                  export: bool = True,
                  before_rename: Optional[Callable[[Path], None]] = None,
                  prepared: Optional[Path] = None) -> ModelCard:
    """Write a new version of ``parent_card``'s lineage atomically and return its card.

    Args:
        parent_card: the :class:`~backend.models.card.ModelCard` that was fine-tuned
            (shipped or a user version); the new card copies it.
        state_dict: the fine-tuned torch state dict (saved as fp16 safetensors, like
            shipped weights), or None with ``prepared``.
        card_updates: card fields to change, as JSON (``threshold``, ``retrain``, ...).
        lineage: recorded in ``lineage.json`` and in the card's ``lineage`` (``parent``,
            ``created``, ``number`` and ``id`` are filled in here).
        root: user model folder (default
            :func:`backend.models.versions.user_models_dir`).
        export: also write ``model.onnx`` (CPU inference uses it; a failed export only
            leaves the version to PyTorch).
        before_rename: test hook, called with the temporary folder just before the
            rename (a trainer killed there must leave no version behind).
        prepared: a folder that already holds ``weights.safetensors`` (and
            ``model.onnx``) of the candidate (see :func:`candidate_dir`); they are moved
            in instead of saving ``state_dict``.

    Returns:
        The new version's ``ModelCard`` (not active yet: see
        :func:`backend.models.versions.activate`).

    Raises:
        ModelCorrupt: ``card_updates`` holds a field of the wrong type.
    """
    base, _ = split_id(parent_card.id)
    d = lineage_folder(base, root)
    tmp = d / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _put_weights(tmp, state_dict, prepared)
        for attempt in range(1000):
            n = (max(used_numbers(base, root), default=0) + 1) + attempt
            _fill_version(tmp, parent_card, base, n, card_updates, lineage, export)
            if before_rename is not None:
                before_rename(tmp)
            try:
                os.rename(tmp, d / str(n))
            except OSError:
                if (d / str(n)).exists():  # another trainer took this number: next one
                    continue
                raise
            _fsync_dir(d)
            return load_version_card(version_id(base, n), root)
        raise RuntimeError("could not allocate a version number")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _put_weights(tmp: Path, state_dict: Optional[Dict[str, Any]],
                 prepared: Optional[Path]) -> None:
    """The weights of a new version into ``tmp``: moved from ``prepared``, else saved
    from ``state_dict``."""
    if prepared is not None:
        move_candidate_files(Path(prepared), tmp)
    if not (tmp / "weights.safetensors").is_file():
        if state_dict is None:
            raise ValueError("write_version needs a state_dict or prepared weights")
        save_weights(state_dict, tmp / "weights.safetensors")


def _fill_version(tmp: Path, parent_card: ModelCard, base: str, n: int,
                  card_updates: Dict[str, Any], lineage: Dict[str, Any],
                  export: bool) -> None:
    """Write ``lineage.json``, ``model.onnx`` (with ``export``, when not prepared) and
    ``card.json`` of version ``n`` into ``tmp``; a card that would not load fails
    here."""
    new_id = version_id(base, n)
    shipped_version = parent_card.base_version or parent_card.version.split("+", 1)[0]
    card_d = parent_card.to_dict()
    card_d.update(card_updates)
    lin = dict(lineage)
    lin.update({"id": new_id, "base": base, "number": n,
                "parent": parent_card.id,
                "parent_version": parent_card.version,
                "created": lin.get("created") or now_iso()})
    lin.pop("active", None)
    card_d.update({"id": new_id, "version": f"{shipped_version}+u{n}",
                   "base_model": base, "base_version": shipped_version,
                   "weights": "weights.safetensors", "onnx": "model.onnx",
                   "graphs": {}, "lineage": lin})
    card_d.pop("quantization", None)  # the parent's INT8 graph does not fit new weights
    (tmp / "lineage.json").write_text(json.dumps(lin, indent=2) + "\n", "utf-8")
    new_card = ModelCard.from_dict(card_d, tmp)
    if export and not (tmp / "model.onnx").is_file():
        try:
            import contextlib
            from backend.models.export import export_onnx
            # the daemon's stdout carries only its "listening" line
            with contextlib.redirect_stdout(sys.stderr):
                export_onnx(new_card)
        except Exception as exc:  # the version still works with PyTorch
            lin["onnx_export_error"] = f"{type(exc).__name__}: {exc}"[:300]
            for p in tmp.glob("*.onnx*"):
                p.unlink()
    # without model.onnx (failed export) the engines fall back to PyTorch
    _write_text_synced(tmp / "card.json", json.dumps(card_d, indent=2) + "\n")


def _write_text_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

