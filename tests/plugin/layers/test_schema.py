"""The attribute table of a result layer: the protocol's fields, ``detected_at`` a UTC
DateTime, each value converted to its field's kind."""

from __future__ import annotations

import datetime as _dt

import pytest
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime, QVariant

from plugin.layers.schema import feature_attributes, result_fields, utc_datetime
from protocol import results
from protocol.errors import ResultLayerError


def test_the_fields_are_the_protocols_with_a_datetime():
    fields = result_fields()
    assert [f.name() for f in fields] == list(results.RESULT_FIELD_NAMES) + [
        "uncertainty", "rank", "review", "origin"]
    assert fields.field("detected_at").type() == QVariant.DateTime
    assert fields.field("class_id").type() == QVariant.Int


def test_times_become_utc():
    seven = QDateTime(QDate(2024, 5, 6), QTime(7, 8, 9), Qt.UTC)
    assert utc_datetime("2024-05-06T09:08:09+02:00") == seven
    assert utc_datetime("2024-05-06T07:08:09Z") == seven
    assert utc_datetime(_dt.datetime(2024, 5, 6, 7, 8, 9)) == seven  # no offset: UTC
    with pytest.raises(ResultLayerError, match="ISO 8601"):
        utc_datetime("yesterday")


def test_attributes_follow_the_fields_and_missing_ones_are_null():
    stamp = utc_datetime("2024-05-06T07:08:09Z")
    values = feature_attributes({"class": "photovoltaic", "class_id": "2", "score": 1},
                                stamp)
    assert values == ["photovoltaic", 2, 1.0, None, None, None, None, stamp,
                      None, None, "pending", "detection"]
