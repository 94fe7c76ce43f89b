"""The review of a result layer: its review fields, the queue, each polygon's state.

A result layer written by the dock has the review fields of
``protocol.results.REVIEW_FIELDS`` (``uncertainty``, ``rank``, ``review``, ``origin``);
:func:`add_review_fields` gives them to any other layer of result polygons (a batch
job's GeoPackage, an older result), computing the uncertainty from ``score`` and
``agreement`` with the one rule of ``protocol.review``. States are written through
the layer's provider when the layer is not being edited (saved at once in its
GeoPackage), else into its edit buffer, so a review survives saving and reopening the
project either way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorLayer

from protocol.results import REVIEW_FIELDS, REVIEW_STATES
from protocol.review import ranks, review_order, uncertainty

from .schema import _KINDS


def has_review_fields(layer: Optional[QgsVectorLayer]) -> bool:
    """Whether ``layer`` carries every field of ``protocol.results.REVIEW_FIELDS``."""
    if layer is None or not hasattr(layer, "fields"):
        return False
    names = set(layer.fields().names())
    return all(name in names for name, _ in REVIEW_FIELDS)


def add_review_fields(layer: QgsVectorLayer, threshold: float = 0.5,
                      members: int = 1) -> int:
    """Give a result layer the review fields and rank its polygons for review.

    Missing fields are added (through the provider); a polygon without an
    ``uncertainty`` gets ``protocol.review.uncertainty(score, threshold, agreement,
    members)`` when it has a score (NULL for one drawn by hand); ``review`` NULL
    becomes ``pending``; ``origin`` NULL becomes ``detection`` (``drawn`` without a
    score); every polygon gets its ``rank``.

    Args:
        layer: a layer of result polygons (``score``, ``agreement``, ``area_m2``), not
            in edit mode.
        threshold: the detection's threshold, 0..1 (the model card's).
        members: the ensemble's members (1: a single model).

    Returns:
        The number of polygons ranked.
    """
    have = set(layer.fields().names())
    new = [QgsField(n, _KINDS[k]) for n, k in REVIEW_FIELDS if n not in have]
    if new:
        layer.dataProvider().addAttributes(new)
        layer.updateFields()
    idx = {n: layer.fields().indexOf(n) for n in
           ("score", "agreement", "area_m2") + tuple(n for n, _ in REVIEW_FIELDS)}
    rows = []
    for f in layer.getFeatures():
        score, agree = _num(f, idx["score"]), _num(f, idx["agreement"])
        u = _num(f, idx["uncertainty"])
        if u is None and score is not None:
            u = uncertainty(score, threshold, agree, members)
        origin = _text(f, idx["origin"]) or ("detection" if score is not None else "drawn")
        rows.append((f.id(), u, _num(f, idx["area_m2"]), _text(f, idx["review"]) or "pending",
                     origin))
    order = ranks([r[1] for r in rows], [r[2] for r in rows])
    changes = {fid: {idx["uncertainty"]: u, idx["rank"]: rank, idx["review"]: state,
                     idx["origin"]: origin}
               for (fid, u, _, state, origin), rank in zip(rows, order)}
    if changes:
        layer.dataProvider().changeAttributeValues(changes)
    layer.reload()
    return len(changes)


def _num(f: QgsFeature, i: int) -> Optional[float]:
    v = f.attribute(i) if i >= 0 else None
    try:
        return None if v is None or str(v) == "NULL" else float(v)
    except (TypeError, ValueError):
        return None


def _text(f: QgsFeature, i: int) -> Optional[str]:
    v = f.attribute(i) if i >= 0 else None
    return None if v is None or str(v) in ("", "NULL") else str(v)


def review_of(f: QgsFeature, ri: int, oi: int) -> Tuple[Optional[str], bool]:
    """``(state, unvouched)`` of a feature whose ``review`` and ``origin`` fields are at
    ``ri`` and ``oi`` (-1: absent): its state (None without the field, ``pending`` when
    NULL), and whether it is a candidate miss still pending (an object the user did not
    vouch for: a whole-extent review leaves it out)."""
    if ri < 0:
        return None, False
    state = _text(f, ri) or "pending"
    return state, state == "pending" and oi >= 0 and _text(f, oi) == "candidate"


def queue(layer: QgsVectorLayer) -> List[int]:
    """The feature ids of ``layer`` in review order (``protocol.review.review_order``
    of their ``uncertainty`` and ``area_m2``; the ``rank`` field is that order as it
    was when the layer was ranked)."""
    ui, ai = layer.fields().indexOf("uncertainty"), layer.fields().indexOf("area_m2")
    rows = [(f.id(), _num(f, ui), _num(f, ai)) for f in layer.getFeatures()]
    order = review_order([r[1] for r in rows], [r[2] for r in rows])
    return [rows[i][0] for i in order]


def review_state(layer: QgsVectorLayer, fid: int) -> str:
    """The ``review`` state of feature ``fid`` (``pending`` when NULL)."""
    f = layer.getFeature(fid)
    return _text(f, layer.fields().indexOf("review")) or "pending"


def set_review(layer: QgsVectorLayer, fid: int, state: str) -> None:
    """Set feature ``fid``'s ``review`` state: into the edit buffer while the layer is
    edited, else straight into its file (through the provider).

    Raises:
        ValueError: ``state`` is not one of ``protocol.results.REVIEW_STATES``.
    """
    if state not in REVIEW_STATES:
        raise ValueError(f"review state {state!r} is not one of {list(REVIEW_STATES)}")
    ri = layer.fields().indexOf("review")
    if layer.isEditable():
        layer.changeAttributeValue(fid, ri, state)
    else:
        layer.dataProvider().changeAttributeValues({fid: {ri: state}})
    layer.triggerRepaint()


def review_counts(layer: QgsVectorLayer) -> Tuple[int, int]:
    """``(reviewed, total)``: the polygons whose state is not ``pending``, and all."""
    ri = layer.fields().indexOf("review")
    states = [(_text(f, ri) or "pending") for f in layer.getFeatures()]
    return sum(1 for s in states if s != "pending"), len(states)


def add_polygon(layer: QgsVectorLayer, geometry: QgsGeometry, values: Dict[str, Any]
                ) -> int:
    """Add a polygon (layer CRS) with ``values`` by field name (``review`` ``added``
    unless given); returns its feature id (through the provider when the layer is
    not edited, else into the edit buffer)."""
    f = QgsFeature(layer.fields())
    g = QgsGeometry(geometry)
    g.convertToMultiType()
    f.setGeometry(g)
    for name, value in dict({"review": "added"}, **values).items():
        if layer.fields().indexOf(name) >= 0:
            f.setAttribute(name, value)
    if layer.isEditable():
        layer.addFeature(f)
        return f.id()
    ok, added = layer.dataProvider().addFeatures([f])
    layer.reload()
    layer.triggerRepaint()
    return added[0].id() if ok and added else -1


__all__ = ["has_review_fields", "add_review_fields", "review_of", "queue", "review_state", "set_review",
           "review_counts", "add_polygon"]
