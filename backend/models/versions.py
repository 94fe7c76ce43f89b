"""The version store: fine-tuned copies of a shipped model, with lineage and rollback.

Shipped models (``models/<id>/``) are never written to. Every retrained model is a new,
immutable *version* stored under the user model folder (:func:`user_models_dir`:
``ORTHOLENS_USER_MODELS``, default ``$XDG_DATA_HOME/ortholens/models``, i.e.
``~/.local/share/ortholens/models``; ``%APPDATA%\\ortholens\\models`` on Windows)::

    <root>/<base id>/<n>/card.json          the version's model card (id "<base>@<n>")
    <root>/<base id>/<n>/weights.safetensors fp16 weights (no pickle)
    <root>/<base id>/<n>/model.onnx          ONNX export (when the export succeeded)
    <root>/<base id>/<n>/lineage.json        parent, data, corrections, metrics, config
    <root>/<base id>/active.json             {"active": "<model id>"}: the version in use
    <root>/<base id>/.pending-<token>/       a candidate kept aside (backend.models.pending)
    <root>/mlruns/                           MLflow file-store layout of every retrain run
                                             (backend.models.tracking)

Ids: the shipped model keeps its id (``pv-unet-efl0``, version number 0 of its lineage);
user versions are ``<base>@<n>`` (``pv-unet-efl0@1``, ``pv-unet-efl0@2``, ...), numbered
in creation order. :func:`backend.models.catalog.load_card` and ``list_cards`` resolve them
like shipped ids, and every result polygon carries the id it was detected with.

The *active* version of a lineage (``active.json``; the shipped model when absent) is
the one the plugin selects for the next detection; :func:`activate` switches it and
:func:`rollback` makes the active version's parent active again (one call). Requests
that name an id explicitly always get exactly that version, so outputs of a version
never change once it is written.

*Area versions.* A version retrained for its area (``lineage["scope"]``, see
:mod:`backend.models.area`) was taught on one area and is not made active for
everywhere: ``active.json`` lists it under ``area_versions`` (in use there), and a
detection that asks for it (``by_area``) runs the newest such version whose area
covers the extent (:func:`version_for_extent`, choosing with
:mod:`backend.models.area_choice`), else the model it named. :func:`activate` of such
a version puts it back in use in its area, :func:`rollback` of it takes it out of use
(its files stay).

New versions are written by :mod:`backend.models.version_writer`, atomically;
``active.json`` is replaced with ``os.replace``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from backend.config import models_dir
from backend.models.area_choice import choose_area_version
from backend.models.card import Lineage, ModelCard, card_path, read_card
from protocol.errors import E_INVALID_INPUT, ModelNotFound, VersionError
from protocol.paths import user_data_dir

SEP = "@"
_NUM = re.compile(r"^[1-9][0-9]{0,5}$")


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


def check_base(base: str) -> None:
    """Check a shipped model id used as the name of its lineage's folder.

    Raises:
        VersionError: empty, a path, hidden, or holding :data:`SEP`.
    """
    if not base or "/" in base or "\\" in base or base.startswith(".") or SEP in base:
        raise VersionError(f"invalid model id {base!r}")


def lineage_dir(base: str, root: Optional[Path] = None) -> Path:
    """``<root>/<base>``: the folder of ``base``'s user versions."""
    check_base(base)
    return (Path(root) if root else user_models_dir()) / base


def version_numbers(base: str, root: Optional[Path] = None) -> List[int]:
    """The numbers of ``base``'s user versions on disk (complete ones: with a card),
    ascending."""
    d = lineage_dir(base, root)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.is_dir() and _NUM.match(p.name) and (p / "card.json").is_file())


#: Prefix of the folder a deleted version leaves (``.deleted-<n>``: its card and
#: lineage, no weights), so that its number is never given to another version.
DELETED_PREFIX = ".deleted-"


def used_numbers(base: str, root: Optional[Path] = None) -> List[int]:
    """The numbers of ``base``'s versions, deleted ones included (the next version
    gets one more than the highest), ascending."""
    d = lineage_dir(base, root)
    gone = [int(p.name[len(DELETED_PREFIX):]) for p in d.glob(DELETED_PREFIX + "*")
            if _NUM.match(p.name[len(DELETED_PREFIX):])] if d.is_dir() else []
    return sorted(set(version_numbers(base, root)) | set(gone))


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
        check_base(base)
    except VersionError as exc:
        raise ModelNotFound(str(exc)) from None
    if n == 0:
        raise ModelNotFound(f"{model_id!r} is not a user version id")
    path = lineage_dir(base, root) / str(n) / "card.json"
    if not path.is_file():
        have = ", ".join(version_id(base, k) for k in version_numbers(base, root)) or "none"
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
        for n in version_numbers(d.name, r):
            try:
                cards.append(load_version_card(version_id(d.name, n), r))
            except Exception:  # a broken version is skipped, like broken shipped cards
                continue
    return cards



def shipped_card(base: str) -> ModelCard:
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
    have = set(version_numbers(base, root))
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
    if b != base or (n and n not in version_numbers(base, root)):
        return base
    return mid


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` (folders created), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_active(base: str, active: str, areas: List[str],
                  root: Optional[Path] = None) -> None:
    write_json_atomic(lineage_dir(base, root) / "active.json",
                      {"active": active, "previous": active_id(base, root),
                       "area_versions": areas, "changed": now_iso()})


def _area_of(model_id: str, root: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The area (``scope``) of a user version's lineage (None: shipped or general)."""
    if split_id(model_id)[1] == 0:
        return None
    card = load_version_card(model_id, root)
    return card.lineage.scope if card.lineage else None


def activate(model_id: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """Make ``model_id`` (a shipped id or ``<base>@<n>``) the active version; a version
    with an area (taught on one area) is instead put in use in its area (added to
    ``area_versions``), the active version staying as it is.

    Returns:
        :func:`describe` of the lineage afterwards.

    Raises:
        VersionError: unknown version.
    """
    base, n = split_id(model_id)
    check_base(base)
    if n and n not in version_numbers(base, root):
        raise VersionError(f"no model version {model_id!r}")
    if n == 0:
        try:
            shipped_card(base)
        except Exception as exc:
            raise VersionError(f"no model {base!r}: {exc}") from None
    mid = version_id(base, n)
    areas = area_ids(base, root)
    if _area_of(mid, root) is not None:
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


def describe_here(model_id: str, extent: Optional[Tuple[float, float, float, float]],
                  extent_crs: Optional[str], root: Optional[Path] = None
                  ) -> Dict[str, Any]:
    """:func:`describe` of ``model_id``'s lineage, plus ``here`` when an extent is
    given: ``{"model", "why"}``, the version a detection of ``model_id`` there runs
    (a version taught on one area runs as chosen; any other model lets the version in
    use in that area run, :func:`version_for_extent`).

    Raises:
        VersionError: as :func:`describe`.
    """
    out = describe(model_id, root)
    if extent is None:
        return out
    if _area_of(model_id, root) is not None:
        out["here"] = {"model": model_id, "why": f"{model_id} was chosen: a version taught "
                                                 f"on one area runs wherever it is chosen"}
        return out
    try:
        card, why = version_for_extent(model_id, extent, extent_crs or "EPSG:4326", root)
    except Exception as exc:  # an extent that cannot be placed: the model itself runs
        card, why = None, f"{model_id} was used ({exc})"
    if card is None:  # said of the map view now, not of a detection that ran
        why = why.replace(f": {model_id} was used", "")
    out["here"] = {"model": card.id if card is not None else model_id, "why": why}
    return out


def describe(base_or_id: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """``{"model": base, "active": id, "versions": [...]}``, the shipped model first.

    Each version: ``{id, number, version, parent, created, active, corrections,
    metrics, decision, verdict, scope, in_use}`` (JSON-safe; ``scope`` None and
    ``in_use`` None for a general version, see :mod:`backend.models.area`); the
    shipped model also has ``heldout``, its card's pv01 held-out metrics (or None).
    """
    base, _ = split_id(base_or_id)
    check_base(base)
    active = active_id(base, root)
    out: List[Dict[str, Any]] = []
    try:
        shipped = shipped_card(base)
        out.append({"id": base, "number": 0, "version": shipped.version, "parent": None,
                    "created": None, "active": active == base, "corrections": 0,
                    "metrics": shipped.metrics or {}, "decision": "shipped",
                    "verdict": None, "scope": None, "in_use": None,
                    "heldout": shipped.heldout_metrics or None})
    except Exception:
        shipped = None
    for n in version_numbers(base, root):
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

def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2024-05-01T12:00:00+00:00``): the
    time stamps of versions, pending candidates and ``active.json``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- by area

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
        ``(card, why)``: the newest version in use (:func:`area_ids`) whose area covers
        the whole extent and ``"<id> was taught on this area (<area>)"``; or
        ``(None, why)`` when there is none (``why`` says so, naming the areas that do
        not cover it). The choice is
        :func:`backend.models.area_choice.choose_area_version`'s.
    """
    base, _ = split_id(model_id)
    check_base(base)
    return choose_area_version(model_id, base, _readable_cards(area_ids(base, root), root),
                               bounds, crs_wkt)


def _readable_cards(ids: List[str], root: Optional[Path]) -> Iterator[ModelCard]:
    """The cards of ``ids``, read one at a time; an unreadable version is skipped, like
    in listings."""
    for mid in ids:
        try:
            yield load_version_card(mid, root)
        except Exception:
            continue
