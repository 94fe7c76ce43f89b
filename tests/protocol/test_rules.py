"""protocol.rules: rules declared on parameter fields, read back, and applied."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Tuple

import pytest

import protocol as P
from protocol import checks as C
from protocol.params import BatchParams, DetectParams, PixelUpload, RetrainParams
from protocol.rules import (COMMON_RULES, RequestParams, Rule, check_fields, flat,
                            request_rules, rule)
from protocol.window import Window


def _classes():
    """Two parameter classes, made when a test runs (the rules are read at that time)."""
    @dataclass(frozen=True)
    class Inner(RequestParams):
        TYPE = "inner"
        HEADER_CHECK = staticmethod(lambda h: "too odd" if h.get("size") == 1 else None)

        name: str = rule(C.string(8), required=True)
        size: Optional[int] = rule(C.int_range(1, 9), default=None)
        tags: Optional[Tuple[int, ...]] = rule(C.check_bands, default=None)
        where: Optional[Window] = rule(lambda x: None, default=None)

    @dataclass(frozen=True)
    class Outer(RequestParams):
        TYPE = "outer"

        inner: Inner = flat(Inner, without=("tags", "where"),
                            rules={"size": Rule(True, C.int_range(1, 2))})
        flag: bool = rule(C.check_boolean, required=True, default=False)
        note: Optional[str] = None          # no rule: not part of the request

    return Inner, Outer


def test_rules_are_read_back_in_field_order_with_flat_classes_spliced_in():
    Inner, Outer = _classes()
    inner = request_rules(Inner)
    assert list(inner) == ["name", "size", "tags", "where"]
    assert inner["name"].required and not inner["size"].required
    assert inner["name"].check("abc") is None
    assert inner["name"].check("a" * 9) == "must be a non-empty string of at most 8 characters"
    assert Inner("abc").size is None and Inner("abc", 3).size == 3    # field_args kept
    outer = request_rules(Outer)
    assert list(outer) == ["name", "size", "flag"]        # left out, note has no rule
    assert outer["name"] is inner["name"]
    assert outer["size"].required and outer["size"].check(2) is None
    assert outer["size"].check(3) == "must be an integer in [1, 2]"
    assert outer["flag"].required and Outer(Inner("a")).flag is False


def test_a_flat_class_without_exceptions_brings_all_its_rules():
    Inner, _ = _classes()

    @dataclass(frozen=True)
    class Whole(RequestParams):
        TYPE = "whole"

        inner: Inner = flat(Inner)
        extra: Optional[int] = rule(C.int_range(0, 1), default=None)

    assert list(request_rules(Whole)) == ["name", "size", "tags", "where", "extra"]
    assert request_rules(Whole)["size"] is request_rules(Inner)["size"]
    assert Whole(Inner("a")).extra is None


def test_to_header_sends_the_fields_not_none_as_json_and_checks_them():
    Inner, Outer = _classes()
    h = Inner("abc", tags=(3, 1), where=Window(1, 2, 3, 4)).to_header(token="t",
                                                                      request_id="r1")
    assert h == {"v": 1, "type": "inner", "id": "r1", "token": "t", "name": "abc",
                 "tags": [3, 1], "where": {"row": 1, "col": 2, "height": 3, "width": 4}}
    assert Inner.from_header(dict(h, where=None)) == Inner("abc", tags=[3, 1])
    with pytest.raises(P.ProtocolError) as ei:
        Inner("abc", size=10).to_header()
    assert (ei.value.code, ei.value.message) == (
        P.E_BAD_REQUEST, "inner: field 'size' must be an integer in [1, 9]")
    with pytest.raises(P.ProtocolError) as ei:
        Inner("abc").to_header(token=5)
    assert ei.value.message == "inner: field 'token' must be a string"


def test_to_header_checks_the_whole_header_after_its_fields():
    Inner, _ = _classes()
    with pytest.raises(P.ProtocolError) as ei:
        Inner("abc", size=1).to_header()
    assert (ei.value.code, ei.value.message) == (P.E_BAD_REQUEST, "inner: too odd")
    with pytest.raises(P.ProtocolError) as ei:       # the fields first
        Inner("abcdefghi", size=1).to_header()
    assert ei.value.message.startswith("inner: field 'name'")
    assert Inner("abc", size=2).to_header(request_id="r") == {
        "v": 1, "type": "inner", "id": "r", "name": "abc", "size": 2}


def test_check_fields_order_of_faults_and_the_whole_header_check():
    rules = {"a": Rule(True, C.check_boolean), "b": Rule(False, C.check_boolean)}
    base = {"v": 1, "type": "t", "id": "x"}
    check_fields("t", dict(base, a=True), rules)
    for header, message in (
            (dict(base, a=True, c=1, d=2), "t: unknown field(s) ['c', 'd']"),
            (dict(base, b=1), "t: missing field 'a'"),                 # a before b
            (dict(base, a=1, b=1), "t: field 'a' must be true or false"),
            ({"v": 1, "type": "t", "a": True}, "t: missing field 'id'")):  # common first
        with pytest.raises(P.ProtocolError) as ei:
            check_fields("t", header, rules)
        assert (ei.value.code, ei.value.message) == (P.E_BAD_REQUEST, message)
    with pytest.raises(P.ProtocolError) as ei:
        check_fields("t", dict(base, a=True), rules, lambda h: "too big")
    assert ei.value.message == "t: too big"
    assert list(COMMON_RULES) == ["v", "type", "id", "arrays", "token"]


def test_every_field_of_the_request_parameters_has_its_rule_once():
    """Each parameter that travels declares its checker; ``protocol.schema`` takes those
    very rules, and a field shared by two requests shares its checker."""
    for cls in (DetectParams, PixelUpload, RetrainParams):
        assert list(request_rules(cls)) == [f.name for f in fields(cls)], cls
        assert P.REQUEST_SCHEMAS[cls.TYPE] == request_rules(cls)
    batch = request_rules(BatchParams)
    assert "by_area" not in batch and "detect" not in batch
    assert batch["source"] == Rule(True, C.check_file_source)
    assert batch["threshold"] is request_rules(DetectParams)["threshold"]
    assert P.REQUEST_SCHEMAS["batch"] == batch
    detect, retrain = request_rules(DetectParams), request_rules(RetrainParams)
    for name in ("extent", "extent_crs", "bands"):
        assert detect[name].check is retrain[name].check, name
    # a detection may leave the model to the engine (chosen by the layer's GSD); a
    # retrain and the version requests name one
    assert detect["model"] == Rule(False, C.check_optional_model)
    assert retrain["model"] == Rule(True, C.check_model)
    assert P.REQUEST_SCHEMAS["versions"]["model"].check is retrain["model"].check
    assert P.REQUEST_CHECKS == {"upload": C.check_upload}
    assert PixelUpload.HEADER_CHECK is C.check_upload
