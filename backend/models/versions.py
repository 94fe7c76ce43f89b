"""User model versions: fine-tuned copies of a shipped model, with lineage and rollback.

Shipped models (``models/<id>/``) are never written to. Every retrained model is a new,
immutable *version* stored under the user model folder (:func:`user_models_dir`:
``ORTHOLENS_USER_MODELS``, default ``$XDG_DATA_HOME/ortholens/models``, i.e.
``~/.local/share/ortholens/models``; ``%APPDATA%\\ortholens\\models`` on Windows)::

    <root>/<base id>/<n>/card.json          the version's model card (id "<base>@<n>")
    <root>/<base id>/<n>/weights.safetensors fp16 weights (no pickle)
    <root>/<base id>/<n>/model.onnx          ONNX export (when the export succeeded)
    <root>/<base id>/<n>/lineage.json        parent, data, corrections, metrics, config
    <root>/<base id>/active.json             {"active": "<model id>"}: the version in use
    <root>/mlruns/                           MLflow file-store layout of every retrain run

Ids: the shipped model keeps its id (``pv-unet-efl0``, version number 0 of its lineage);
user versions are ``<base>@<n>`` (``pv-unet-efl0@1``, ``pv-unet-efl0@2``, ...), numbered
in creation order. :func:`backend.models.catalog.load_card` and ``list_cards`` resolve them
like shipped ids, and every result polygon carries the id it was detected with.

The *active* version of a lineage (``active.json``; the shipped model when absent) is
the one the plugin selects for the next detection; :func:`activate` switches it and
:func:`rollback` makes the active version's parent active again (one call). Requests
that name an id explicitly always get exactly that version, so outputs of a version
never change once it is written.

*Area versions.* A version retrained with a scope (``lineage["scope"]``, see
:mod:`backend.models.scope`) was taught on one area and is not made active for
everywhere: ``active.json`` lists it under ``area_versions`` (in use there), and a
detection that asks for it (``by_area``) runs the newest such version whose site
footprint covers the extent (:func:`version_for_extent`), else the model it named.
:func:`activate` of such a version puts it back in use in its area, :func:`rollback` of
it takes it out of use (its files stay).

*Pending candidates.* A candidate the acceptance rule did not accept is kept for a
while as ``<root>/<base>/.pending-<token>/`` (:func:`save_pending`) so that the user,
who has seen the numbers, may still keep it (:func:`keep_pending`); its lineage then
records the rule's verdict and the user's choice. Pending folders older than
:data:`PENDING_DAYS` days are removed by later writes.

Atomicity: a version is written into ``<root>/<base>/.tmp-<random>/`` and renamed to
``<n>/`` in one ``os.rename`` only when complete, so a trainer killed half-way leaves
no half-written version (only a ``.tmp-*`` folder that listings ignore and later writes
remove). ``active.json`` is replaced with ``os.replace``.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from backend.config import models_dir
from backend.models.card import Lineage, ModelCard, card_path, read_card
from backend.models.torch_models import save_weights
from protocol.errors import E_INVALID_INPUT, ModelNotFound, VersionError
from protocol.paths import user_data_dir

SEP = "@"
_NUM = re.compile(r"^[1-9][0-9]{0,5}$")
_STALE_TMP_S = 24 * 3600
#: Days a rejected candidate stays available to be kept by the user.
PENDING_DAYS = 7
_PENDING = re.compile(r"^[0-9a-f]{32}$")


def user_models_dir() -> Path:
    """The user model folder (see the module docstring); not created here."""
    return user_data_dir("models", "ORTHOLENS_USER_MODELS")


def split_id(model_id: str) -> Tuple[str, int]:
    """``"pv-unet-efl0@2"`` -> ``("pv-unet-efl0", 2)``; a shipped id gives number 0.

    Raises:
        VersionError: a malformed version suffix.
    """
    if SEP not in model_id:
        return model_id, 0
    base, num = model_id.rsplit(SEP, 1)
    if not base or not _NUM.match(num):
        raise VersionError(f"invalid model version id {model_id!r}: expected "
                           f"'<model>{SEP}<number>'")
    return base, int(num)


def version_id(base: str, number: int) -> str:
    """The model id of version ``number`` of ``base`` (``base`` itself for 0)."""
    return base if number == 0 else f"{base}{SEP}{number}"


def _check_base(base: str) -> None:
    if not base or "/" in base or "\\" in base or base.startswith(".") or SEP in base:
        raise VersionError(f"invalid model id {base!r}")


def lineage_dir(base: str, root: Optional[Path] = None) -> Path:
    """``<root>/<base>``: the folder of ``base``'s user versions."""
    _check_base(base)
    return (Path(root) if root else user_models_dir()) / base


def _numbers(base: str, root: Optional[Path] = None) -> List[int]:
    d = lineage_dir(base, root)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.is_dir() and _NUM.match(p.name) and (p / "card.json").is_file())


# ----------------------------------------------------------------------------- cards

def load_version_card(model_id: str, root: Optional[Path] = None) -> ModelCard:
    """The :class:`~backend.models.card.ModelCard` of user version ``<base>@<n>``, its
    ``lineage.active`` set.

    Raises:
        ModelNotFound: no such version.
        ModelCorrupt: its card cannot be read.
    """
    try:
        base, n = split_id(model_id)
        _check_base(base)
    except VersionError as exc:
        raise ModelNotFound(str(exc)) from None
    if n == 0:
        raise ModelNotFound(f"{model_id!r} is not a user version id")
    path = lineage_dir(base, root) / str(n) / "card.json"
    if not path.is_file():
        have = ", ".join(version_id(base, k) for k in _numbers(base, root)) or "none"
        raise ModelNotFound(f"no model version {model_id!r} in {lineage_dir(base, root)} "
                            f"(user versions of {base}: {have})")
    card = read_card(path)
    lin = card.lineage or Lineage()
    card.lineage = lin.with_active(active_id(base, root) == card.id,
                                   (card.id in area_ids(base, root)) if lin.scope else None)
    return card


def list_version_cards(root: Optional[Path] = None) -> List[ModelCard]:
    """Cards of every readable user version, sorted by base id then number."""
    r = Path(root) if root else user_models_dir()
    cards = []
    if not r.is_dir():
        return cards
    for d in sorted(p for p in r.iterdir() if p.is_dir() and not p.name.startswith(".")
                    and p.name != "mlruns"):
        for n in _numbers(d.name, r):
            try:
                cards.append(load_version_card(version_id(d.name, n), r))
            except Exception:  # a broken version is skipped, like broken shipped cards
                continue
    return cards


def _shipped_card(base: str) -> ModelCard:
    """The shipped card of ``base`` (the model folder only).

    Raises:
        ModelNotFound: no such shipped model. ModelCorrupt: its card cannot be read.
    """
    path = card_path(models_dir(), base)
    if not path.is_file():
        raise ModelNotFound(f"no model {base!r} in {models_dir()}")
    return read_card(path)


# ----------------------------------------------------------------------------- active

def _active_file(base: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """The content of ``<root>/<base>/active.json`` (``{}`` when missing or unreadable)."""
    try:
        d = json.loads((lineage_dir(base, root) / "active.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def area_ids(base: str, root: Optional[Path] = None) -> List[str]:
    """The versions of ``base`` in use in their own area (``active.json``'s
    ``area_versions`` that still exist), newest first."""
    have = set(_numbers(base, root))
    out = []
    for mid in _active_file(base, root).get("area_versions") or []:
        try:
            b, n = split_id(str(mid))
        except VersionError:
            continue
        if b == base and n in have and str(mid) not in out:
            out.append(str(mid))
    return sorted(out, key=lambda m: -split_id(m)[1])


def active_id(base: str, root: Optional[Path] = None) -> str:
    """The active model id of ``base``'s lineage (``base`` when none was chosen or the
    chosen version has disappeared)."""
    try:
        mid = str(_active_file(base, root)["active"])
    except (KeyError, TypeError):
        return base
    try:
        b, n = split_id(mid)
    except VersionError:
        return base
    if b != base or (n and n not in _numbers(base, root)):
        return base
    return mid


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_active(base: str, active: str, areas: List[str],
                  root: Optional[Path] = None) -> None:
    _write_json_atomic(lineage_dir(base, root) / "active.json",
                       {"active": active, "previous": active_id(base, root),
                        "area_versions": areas, "changed": _now_iso()})


def _scope_of(model_id: str, root: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The ``scope`` of a user version's lineage (None: shipped or general)."""
    if split_id(model_id)[1] == 0:
        return None
    card = load_version_card(model_id, root)
    return card.lineage.scope if card.lineage else None


def activate(model_id: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """Make ``model_id`` (a shipped id or ``<base>@<n>``) the active version; a version
    with a scope (taught on one area) is instead put in use in its area (added to
    ``area_versions``), the active version staying as it is.

    Returns:
        :func:`describe` of the lineage afterwards.

    Raises:
        VersionError: unknown version.
    """
    base, n = split_id(model_id)
    _check_base(base)
    if n and n not in _numbers(base, root):
        raise VersionError(f"no model version {model_id!r}")
    if n == 0:
        try:
            _shipped_card(base)
        except Exception as exc:
            raise VersionError(f"no model {base!r}: {exc}") from None
    mid = version_id(base, n)
    areas = area_ids(base, root)
    if _scope_of(mid, root) is not None:
        _write_active(base, active_id(base, root), [mid] + [a for a in areas if a != mid],
                      root)
    else:
        _write_active(base, mid, areas, root)
    return describe(base, root)


def rollback(model_id: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """Make the parent of the active version of ``model_id``'s lineage active; for a
    version in use in its area (see :func:`area_ids`), take it out of use there instead.

    Args:
        model_id: any id of the lineage (``pv-unet-efl0`` or ``pv-unet-efl0@3``).

    Returns:
        :func:`describe` of the lineage afterwards (``active`` is the parent).

    Raises:
        VersionError: the shipped model is active: there is nothing to roll back to.
    """
    base, n_given = split_id(model_id)
    given = version_id(base, n_given)
    if n_given and given in area_ids(base, root):  # an area version: out of use there
        _write_active(base, active_id(base, root),
                      [a for a in area_ids(base, root) if a != given], root)
        return describe(base, root)
    cur = active_id(base, root)
    _, n = split_id(cur)
    if n == 0:
        # a request that cannot be done, not a lookup miss
        raise VersionError(f"the shipped model {base!r} is active: there is no earlier "
                           f"version to roll back to", E_INVALID_INPUT)
    card = load_version_card(cur, root)
    parent = (card.lineage.parent if card.lineage else None) or base
    try:
        return activate(parent, root)
    except VersionError:  # parent deleted by hand: fall back to the shipped model
        return activate(base, root)


def describe(base_or_id: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """``{"model": base, "active": id, "versions": [...]}``, the shipped model first.

    Each version: ``{id, number, version, parent, created, active, corrections,
    metrics, decision, verdict, scope, in_use}`` (JSON-safe; ``scope`` None and
    ``in_use`` None for a general version, see :mod:`backend.models.scope`).
    """
    base, _ = split_id(base_or_id)
    _check_base(base)
    active = active_id(base, root)
    out: List[Dict[str, Any]] = []
    try:
        shipped = _shipped_card(base)
        out.append({"id": base, "number": 0, "version": shipped.version, "parent": None,
                    "created": None, "active": active == base, "corrections": 0,
                    "metrics": shipped.metrics or {}, "decision": "shipped",
                    "verdict": None, "scope": None, "in_use": None})
    except Exception:
        shipped = None
    for n in _numbers(base, root):
        try:
            card = load_version_card(version_id(base, n), root)
        except Exception:
            continue
        lin = card.lineage or Lineage()
        out.append({"id": card.id, "number": n, "version": card.version,
                    "parent": lin.parent, "created": lin.created,
                    "active": active == card.id, "corrections": int(lin.corrections or 0),
                    "metrics": lin.metrics or {}, "decision": lin.decision,
                    "verdict": lin.verdict, "scope": lin.scope,
                    "in_use": lin.in_use if lin.scope else None})
    if shipped is None and not out:
        raise VersionError(f"no model {base!r} and no user versions of it")
    return {"model": base, "active": active, "versions": out}


# ----------------------------------------------------------------------------- writing

def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cleanup_stale(d: Path) -> None:
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
        root: user model folder (default :func:`user_models_dir`).
        export: also write ``model.onnx`` (CPU inference uses it; a failed export only
            leaves the version to PyTorch).
        before_rename: test hook, called with the temporary folder just before the
            rename (a trainer killed there must leave no version behind).
        prepared: a folder that already holds ``weights.safetensors`` (and
            ``model.onnx``) of the candidate (see :func:`candidate_dir`); they are moved
            in instead of saving ``state_dict``.

    Returns:
        The new version's ``ModelCard`` (not active yet: see :func:`activate`).

    Raises:
        ModelCorrupt: ``card_updates`` holds a field of the wrong type.
    """
    base, _ = split_id(parent_card.id)
    d = lineage_dir(base, root)
    d.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(d)
    tmp = d / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        if prepared is not None:
            for name in ("weights.safetensors", "model.onnx"):
                if (Path(prepared) / name).is_file():
                    shutil.move(str(Path(prepared) / name), str(tmp / name))
        if not (tmp / "weights.safetensors").is_file():
            if state_dict is None:
                raise ValueError("write_version needs a state_dict or prepared weights")
            save_weights(state_dict, tmp / "weights.safetensors")
        for attempt in range(1000):
            n = (max(_numbers(base, root), default=0) + 1) + attempt
            new_id = version_id(base, n)
            shipped_version = (parent_card.base_version
                               or parent_card.version.split("+", 1)[0])
            card_d = parent_card.to_dict()
            card_d.update(card_updates)
            lin = dict(lineage)
            lin.update({"id": new_id, "base": base, "number": n,
                        "parent": parent_card.id,
                        "parent_version": parent_card.version,
                        "created": lin.get("created") or _now_iso()})
            lin.pop("active", None)
            card_d.update({"id": new_id, "version": f"{shipped_version}+u{n}",
                           "base_model": base, "base_version": shipped_version,
                           "weights": "weights.safetensors", "onnx": "model.onnx",
                           "lineage": lin})
            (tmp / "lineage.json").write_text(json.dumps(lin, indent=2) + "\n", "utf-8")
            new_card = ModelCard.from_dict(card_d, tmp)  # a card that would not load fails here
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
            card_d["lineage"] = lin
            _write_text_synced(tmp / "card.json", json.dumps(card_d, indent=2) + "\n")
            if before_rename is not None:
                before_rename(tmp)
            try:
                os.rename(tmp, d / str(n))
            except OSError:
                if (d / str(n)).exists():  # another trainer took this number: next one
                    continue
                raise
            _fsync_dir(d)
            return load_version_card(new_id, root)
        raise RuntimeError("could not allocate a version number")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def version_for_extent(model_id: str, bounds: Tuple[float, float, float, float],
                       crs_wkt: str, root: Optional[Path] = None
                       ) -> Tuple[Optional[ModelCard], str]:
    """The version of ``model_id``'s lineage taught on the area of an extent.

    Args:
        model_id: the model a detection asked for (any id of the lineage).
        bounds: the extent ``(xmin, ymin, xmax, ymax)`` in ``crs_wkt``.
        crs_wkt: its CRS (WKT or ``EPSG:n``).
        root: user model folder (default :func:`user_models_dir`).

    Returns:
        ``(card, why)``: the newest version in use (:func:`area_ids`) whose site
        footprint covers the whole extent and ``"<id> was taught on this area
        (<scope>)"``; or ``(None, why)`` when there is none (``why`` says so, naming
        the areas that do not cover it).
    """
    from backend.models.scope import Scope, covers
    base, _ = split_id(model_id)
    _check_base(base)
    seen = []
    for mid in area_ids(base, root):
        try:
            card = load_version_card(mid, root)
        except Exception:  # an unreadable version is skipped, like in listings
            continue
        scope = Scope.from_dict(card.lineage.scope if card.lineage else None)
        if scope is None:
            continue
        try:
            inside = covers(scope, bounds, crs_wkt)
        except Exception:  # an extent that cannot be put in lon/lat is in no area
            inside = False
        if inside:
            return card, f"{mid} was taught on this area ({scope.describe()})"
        seen.append(mid)
    if seen:
        return None, (f"no version of {base} was taught on this area ({', '.join(seen)} "
                      f"cover other areas): {model_id} was used")
    return None, f"{base} has no version taught on an area: {model_id} was used"


# ----------------------------------------------------------------------------- pending

def save_pending(parent_card: ModelCard, prepared: Path, card_updates: Dict[str, Any],
                 lineage: Dict[str, Any], root: Optional[Path] = None) -> str:
    """Keep a candidate the rule did not accept, so that the user may still keep it.

    Args:
        parent_card: the model that was fine-tuned.
        prepared: a folder holding the candidate's ``weights.safetensors`` (and
            ``model.onnx``), see :func:`candidate_dir`; they are moved out of it.
        card_updates, lineage: what :func:`write_version` will be given if it is kept.
        root: user model folder.

    Returns:
        The token naming it (32 hex digits) for :func:`keep_pending`.
    """
    base, _ = split_id(parent_card.id)
    d = lineage_dir(base, root)
    d.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(d)
    token = uuid.uuid4().hex
    p = d / f".pending-{token}"
    p.mkdir()
    for name in ("weights.safetensors", "model.onnx"):
        if (Path(prepared) / name).is_file():
            shutil.move(str(Path(prepared) / name), str(p / name))
    _write_json_atomic(p / "pending.json", {"parent": parent_card.id,
                                            "card_updates": card_updates,
                                            "lineage": lineage, "created": _now_iso()})
    return token


def keep_pending(model_id: str, token: str, note: Optional[str] = None,
                 root: Optional[Path] = None) -> Dict[str, Any]:
    """Make a pending candidate (:func:`save_pending`) a version after all: the user
    saw the numbers and chose to keep it against the rule's verdict.

    Its lineage keeps the rule's ``verdict`` and ``reason`` and records ``decision``
    ``"kept by the user"`` (with ``note``, the user's words, when given). A version
    with a scope is put in use in its area, a general one is made active.

    Args:
        model_id: any id of the candidate's lineage.
        token: the retrain report's ``pending``.
        note: why the user keeps it (optional, at most 500 characters are kept).
        root: user model folder.

    Returns:
        :func:`describe` of the lineage, plus ``kept``: the new version's id.

    Raises:
        VersionError: no such pending candidate (never made, already kept, or removed
            after :data:`PENDING_DAYS` days).
    """
    base, _ = split_id(model_id)
    _check_base(base)
    if not _PENDING.match(str(token)):
        raise VersionError(f"invalid pending candidate {token!r}", E_INVALID_INPUT)
    p = lineage_dir(base, root) / f".pending-{token}"
    try:
        meta = json.loads((p / "pending.json").read_text("utf-8"))
    except (OSError, ValueError):
        raise VersionError(f"no pending candidate {token} of {base}: it was kept already, "
                           f"or removed after {PENDING_DAYS} days; retrain again") from None
    parent_id = str(meta["parent"])
    parent = (_shipped_card(base) if split_id(parent_id)[1] == 0
              else load_version_card(parent_id, root))
    lineage = dict(meta.get("lineage") or {})
    lineage["decision"] = "kept by the user"
    lineage["kept"] = {"at": _now_iso(), "note": (note or "")[:500]}
    new = write_version(parent, None, dict(meta.get("card_updates") or {}), lineage, root,
                        prepared=p)
    shutil.rmtree(p, ignore_errors=True)
    out = activate(new.id, root)
    out["kept"] = new.id
    return out


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


# ----------------------------------------------------------------------------- MLflow

MLFLOW_EXPERIMENT = "ortholens-retrain"
_RUNNING, _FINISHED, _FAILED, _KILLED = 1, 3, 4, 5
_STATUS = {"RUNNING": _RUNNING, "FINISHED": _FINISHED, "FAILED": _FAILED, "KILLED": _KILLED}


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


def _write_yaml(path: Path, d: Dict[str, Any]) -> None:
    lines = []
    for k, v in d.items():
        if isinstance(v, list) and not v:
            lines.append(f"{k}: []")
        else:
            lines.append(f"{k}: {_yaml_scalar(v)}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", "utf-8")
    os.replace(tmp, path)


def _safe_key(k: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(k))[:250] or "_"


class MlflowRun:
    """One run in an MLflow *file store* (``mlruns/``) without importing mlflow.

    Layout (what ``mlflow ui --backend-store-uri <root>/mlruns`` reads)::

        mlruns/<exp id>/meta.yaml
        mlruns/<exp id>/<run id>/meta.yaml
        mlruns/<exp id>/<run id>/params/<key>     the value
        mlruns/<exp id>/<run id>/metrics/<key>    lines "<ms timestamp> <value> <step>"
        mlruns/<exp id>/<run id>/tags/<key>       the value

    Args:
        store: the ``mlruns`` folder.
        name: the run name.
        experiment: experiment name (created with the next free numeric id).
    """

    def __init__(self, store: Path, name: str, experiment: str = MLFLOW_EXPERIMENT):
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.experiment_id = self._experiment(experiment)
        self.run_id = uuid.uuid4().hex
        self.dir = self.store / self.experiment_id / self.run_id
        for sub in ("params", "metrics", "tags", "artifacts"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.start = int(time.time() * 1000)
        self.name = name
        self._meta(_RUNNING, None)
        self.set_tag("mlflow.runName", name)
        self.set_tag("mlflow.source.type", "LOCAL")
        self.set_tag("mlflow.source.name", "backend.learning.finetune")
        self.set_tag("mlflow.user", _user())

    def _experiment(self, name: str) -> str:
        now = int(time.time() * 1000)
        if not (self.store / "0" / "meta.yaml").is_file():
            (self.store / "0").mkdir(parents=True, exist_ok=True)
            _write_yaml(self.store / "0" / "meta.yaml", {
                "artifact_location": (self.store / "0").resolve().as_uri(),
                "creation_time": now, "experiment_id": "0", "last_update_time": now,
                "lifecycle_stage": "active", "name": "Default"})
        ids = []
        for meta in self.store.glob("*/meta.yaml"):
            try:
                text = meta.read_text("utf-8")
            except OSError:
                continue
            if re.search(r"^name: '?" + re.escape(name) + r"'?$", text, re.M):
                return meta.parent.name
            if meta.parent.name.isdigit():
                ids.append(int(meta.parent.name))
        eid = str(max(ids, default=0) + 1)
        (self.store / eid).mkdir(parents=True, exist_ok=True)
        _write_yaml(self.store / eid / "meta.yaml", {
            "artifact_location": (self.store / eid).resolve().as_uri(),
            "creation_time": now, "experiment_id": eid, "last_update_time": now,
            "lifecycle_stage": "active", "name": name})
        return eid

    def _meta(self, status: int, end: Optional[int]) -> None:
        _write_yaml(self.dir / "meta.yaml", {
            "artifact_uri": (self.dir / "artifacts").resolve().as_uri(),
            "end_time": end, "entry_point_name": "", "experiment_id": self.experiment_id,
            "lifecycle_stage": "active", "name": self.name, "run_id": self.run_id,
            "run_name": self.name, "run_uuid": self.run_id, "source_name": "",
            "source_type": 4, "source_version": "", "start_time": self.start,
            "status": status, "tags": [], "user_id": _user()})

    def log_param(self, key: str, value: Any) -> None:
        (self.dir / "params" / _safe_key(key)).write_text(str(value)[:6000], "utf-8")

    def log_params(self, params: Dict[str, Any]) -> None:
        for k, v in params.items():
            self.log_param(k, json.dumps(v) if isinstance(v, (dict, list)) else v)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if v != v:  # NaN: MLflow accepts it, but it helps nobody
            return
        with open(self.dir / "metrics" / _safe_key(key), "a", encoding="utf-8") as f:
            f.write(f"{int(time.time() * 1000)} {v!r} {int(step)}\n")

    def set_tag(self, key: str, value: Any) -> None:
        (self.dir / "tags" / _safe_key(key)).write_text(str(value)[:5000], "utf-8")

    def log_artifact_text(self, name: str, text: str) -> None:
        (self.dir / "artifacts" / _safe_key(name)).write_text(text, "utf-8")

    def end(self, status: str = "FINISHED") -> None:
        self._meta(_STATUS.get(status, _FINISHED), int(time.time() * 1000))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "user"


def mlruns_dir(root: Optional[Path] = None) -> Path:
    """``<user models>/mlruns``: the MLflow file store of retrain runs."""
    return (Path(root) if root else user_models_dir()) / "mlruns"
