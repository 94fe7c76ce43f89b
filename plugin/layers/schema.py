"""The attribute table of a result layer: ``protocol.results``' result schema, with
``detected_at`` a GeoPackage DateTime (UTC), then the review fields
(``protocol.results.REVIEW_FIELDS``: uncertainty, rank, review, origin)."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List

from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime, QVariant
from qgis.core import QgsField, QgsFields

from protocol import results
from protocol.errors import ResultLayerError

#: QVariant type of each kind of ``protocol.results``.
_KINDS = {"str": QVariant.String, "int": QVariant.Int, "float": QVariant.Double}

#: Fields stored as a GeoPackage DateTime (UTC) although the protocol carries text.
DATETIME_FIELDS = ("detected_at",)

#: ``(name, kind)`` of a result layer's fields: the result schema, then the review's.
LAYER_FIELDS = results.LAYER_FIELDS

#: (name, QVariant type) of the result table's fields, in order: :data:`LAYER_FIELDS`,
#: with :data:`DATETIME_FIELDS` as ``QVariant.DateTime``.
RESULT_FIELDS = tuple((name, QVariant.DateTime if name in DATETIME_FIELDS else _KINDS[kind])
                      for name, kind in LAYER_FIELDS)


def result_fields() -> QgsFields:
    """The attribute fields of a result layer (see :data:`RESULT_FIELDS`)."""
    fields = QgsFields()
    for name, vtype in RESULT_FIELDS:
        fields.append(QgsField(name, vtype))
    return fields


def utc_datetime(value: Any) -> QDateTime:
    """``value`` as a UTC ``QDateTime`` (millisecond precision).

    Args:
        value: a ``datetime.datetime`` or ISO 8601 text (``2024-05-06T07:08:09Z``,
            ``...+02:00``); a time without an offset is taken as UTC.

    Raises:
        ResultLayerError: ``value`` is not a date and time.
    """
    if isinstance(value, _dt.datetime):
        when = value
    else:
        try:
            when = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ResultLayerError(f"{value!r} is not an ISO 8601 date and time") from None
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc)
    return QDateTime(QDate(when.year, when.month, when.day),
                     QTime(when.hour, when.minute, when.second, when.microsecond // 1000),
                     Qt.UTC)


def feature_attributes(feature: Dict[str, Any], detected_at: QDateTime) -> List[Any]:
    """The attribute values of a result feature in :data:`RESULT_FIELDS` order
    (``protocol.results.attribute_values``: each converted to its kind, ``review``
    ``pending`` and ``origin`` ``detection`` unless the feature says otherwise, another
    field the feature lacks NULL), with ``detected_at`` for that field.

    Args:
        feature: a feature as in ``docs/protocol.md`` (the fields of ``protocol.results``).
        detected_at: the detection time (see :func:`utc_datetime`).
    """
    return results.attribute_values(feature, detected_at)


def queue_features(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A detection's features and its candidate misses (``origin`` ``candidate``), each
    with its ``rank`` in the review queue (``protocol.review.ranks``: most uncertain
    first)."""
    from protocol.review import ranks
    feats = [dict(f) for f in result.get("features") or []]
    feats += [dict(c, origin="candidate") for c in result.get("candidates") or []]
    order = ranks([f.get("uncertainty") for f in feats], [f.get("area_m2") for f in feats])
    for f, r in zip(feats, order):
        f["rank"] = r
    return feats


__all__ = ["DATETIME_FIELDS", "LAYER_FIELDS", "queue_features", "RESULT_FIELDS", "result_fields", "utc_datetime",
           "feature_attributes"]
