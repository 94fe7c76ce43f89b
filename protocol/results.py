"""The attribute schema of a result polygon: one definition for every place that
stores detections (the plugin's result layers, batch jobs' GeoPackages).

A ``result`` reply's feature (see ``docs/protocol.md``) carries ``wkt`` plus the
fields below except ``detected_at``, which the side that writes the layer stamps.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

#: ``(name, kind)`` of each attribute, in column order. Kinds: ``str``, ``int``
#: (32-bit), ``float`` (64-bit).
#:
#: class          class name from the model card (e.g. ``photovoltaic``)
#: class_id       class index of the model, 1.. (0 is background)
#: score          mean class probability over the polygon, 0..1
#: agreement      fraction of ensemble members voting for the polygon, 0..1 (1.0 for
#:                a single model)
#: area_m2        polygon area, square metres on the ground
#: model          model id (``<base>`` or a user version ``<base>@<n>``)
#: model_version  the model card's version
#: detected_at    when the detection ran, UTC, as ISO 8601 text
RESULT_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("class", "str"),
    ("class_id", "int"),
    ("score", "float"),
    ("agreement", "float"),
    ("area_m2", "float"),
    ("model", "str"),
    ("model_version", "str"),
    ("detected_at", "str"),
)

#: Field names of :data:`RESULT_FIELDS`, in order.
RESULT_FIELD_NAMES: Tuple[str, ...] = tuple(name for name, _ in RESULT_FIELDS)

#: The review state of a result polygon (the ``review`` field): not looked at yet, kept
#: as it is, deleted (kept in the layer, hidden, so it still teaches the model what is
#: not an object), reshaped or re-classed, added by the user.
REVIEW_STATES: Tuple[str, ...] = ("pending", "accepted", "deleted", "edited", "added")
#: The states a user gave: a polygon in one of them is labelled by a partial review.
REVIEWED_STATES: Tuple[str, ...] = REVIEW_STATES[1:]
#: Where a result polygon came from (the ``origin`` field): the model's detection, a
#: candidate miss of the engine, a click (``region`` request), drawn by hand.
ORIGINS: Tuple[str, ...] = ("detection", "candidate", "click", "drawn")

#: The fields a result layer carries for its review, after ``protocol.results``' ones:
#: ``(name, kind)``.
#:
#: uncertainty  0..1, ``protocol.review.uncertainty`` (NULL for polygons drawn or clicked)
#: rank         1.. the position in the review queue (``protocol.review.ranks``)
#: review       one of :data:`REVIEW_STATES`
#: origin       one of :data:`ORIGINS`
REVIEW_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("uncertainty", "float"),
    ("rank", "int"),
    ("review", "str"),
    ("origin", "str"),
)

#: ``(name, kind)`` of a result layer's fields, in column order: :data:`RESULT_FIELDS`,
#: then :data:`REVIEW_FIELDS`.
LAYER_FIELDS: Tuple[Tuple[str, str], ...] = RESULT_FIELDS + REVIEW_FIELDS

#: Python conversion of each kind.
_CONVERT = {"str": str, "int": int, "float": float}

#: The value a result layer gives a review field its feature lacks.
REVIEW_DEFAULTS: Dict[str, str] = {"review": "pending", "origin": "detection"}


def attribute_values(feature: Dict[str, Any], detected_at: Any) -> List[Any]:
    """The attribute values of a result polygon in :data:`LAYER_FIELDS` order, as a
    result layer stores them.

    Each value is the feature's own field converted to its kind (``str``, ``int``,
    ``float``); ``detected_at`` is the value given (the writer's own date type);
    ``review`` and ``origin`` default to :data:`REVIEW_DEFAULTS`; any other field the
    feature lacks (or holds as None) is None (NULL).

    Args:
        feature: a ``result`` feature as in ``docs/protocol.md`` (its ``wkt`` is ignored).
        detected_at: the detection time, already in the writer's type.

    Raises:
        ValueError, TypeError: a value that does not convert to its field's kind.
    """
    values: List[Any] = []
    for name, kind in LAYER_FIELDS:
        if name == "detected_at":
            values.append(detected_at)
            continue
        value = feature.get(name)
        if value is None:
            value = REVIEW_DEFAULTS.get(name)
        values.append(None if value is None else _CONVERT[kind](value))
    return values


__all__ = ["RESULT_FIELDS", "RESULT_FIELD_NAMES", "REVIEW_STATES", "REVIEWED_STATES", "ORIGINS",
           "REVIEW_FIELDS", "LAYER_FIELDS", "REVIEW_DEFAULTS",
           "attribute_values"]
