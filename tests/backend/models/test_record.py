"""Typed records: fields checked on reading, unknown keys and key order kept on
writing back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pytest

from backend.models.record import (BadField, Record, as_float, as_int, as_str, doc_field,
                                   list_of, record_of, typed_field)


@dataclass
class _Part(Record):
    name: str = typed_field(as_str)
    _doc: Dict[str, Any] = doc_field()


@dataclass
class _Thing(Record):
    id: int = typed_field(as_int)
    parts: List[_Part] = typed_field(list_of(record_of(_Part)), list)
    scale: float = typed_field(as_float, 1.0)
    note: Optional[str] = typed_field(as_str, None)
    _doc: Dict[str, Any] = doc_field()


def test_fields_are_parsed_and_checked():
    t = _Thing.from_dict({"id": 3.0, "parts": [{"name": "a"}], "scale": 2})
    assert t.id == 3 and isinstance(t.id, int) and t.parts[0].name == "a"
    assert t.scale == 2.0 and t.note is None
    with pytest.raises(BadField, match="missing field 'id'"):
        _Thing.from_dict({"scale": 1.0})
    with pytest.raises(BadField, match="field 'id'"):
        _Thing.from_dict({"id": True})
    with pytest.raises(BadField, match="field 'parts'"):
        _Thing.from_dict({"id": 1, "parts": [{"name": 5}]})
    assert _Thing.from_dict({"id": 1, "note": None}).note is None  # null: the default


def test_unknown_keys_and_order_survive_and_defaults_stay_unwritten():
    d = {"zeta": "by hand", "id": 1, "parts": [{"name": "a", "extra": 1}]}
    t = _Thing.from_dict(d)
    out = t.to_dict()
    assert list(out) == ["zeta", "id", "parts"] and out["parts"][0]["extra"] == 1
    t.note = "set"
    assert t.to_dict()["note"] == "set" and "scale" not in t.to_dict()
