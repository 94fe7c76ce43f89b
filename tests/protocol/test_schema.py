"""protocol.schema: request validation, its errors and messages, fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as P


# ----------------------------------------------------------------------------- validation

_SRC = {"kind": "file", "path": "/data/a.tif"}
_PIX = {"kind": "pixels", "crs": "EPSG:2056", "transform": [0.1, 0, 0, 0, -0.1, 0]}


def _detect(**kw):
    h = {"v": 1, "type": "detect", "id": "r1", "source": _SRC, "model": "m"}
    h.update(kw)
    return {k: v for k, v in h.items() if v is not ...}


@pytest.mark.parametrize("header, code, needle", [
    ([], P.E_BAD_REQUEST, "object"),
    ({"type": "ping", "id": "a"}, P.E_BAD_REQUEST, "'v'"),
    ({"v": 2, "type": "ping", "id": "a"}, P.E_VERSION, "version"),
    ({"v": True, "type": "ping", "id": "a"}, P.E_VERSION, "version"),
    ({"v": "1", "type": "ping", "id": "a"}, P.E_VERSION, "version"),
    ({"v": 1.0, "type": "ping", "id": "a"}, P.E_VERSION, "version"),
    ({"v": 1, "type": "explode", "id": "a"}, P.E_UNKNOWN_TYPE, "explode"),
    ({"v": 1, "type": ["ping"], "id": "a"}, P.E_UNKNOWN_TYPE, "unknown request type"),
    ({"v": 1, "type": "pong", "id": "a"}, P.E_UNKNOWN_TYPE, "pong"),
    ({"v": 1, "type": "ping"}, P.E_BAD_REQUEST, "'id'"),
    ({"v": 1, "type": "ping", "id": ""}, P.E_BAD_REQUEST, "'id'"),
    ({"v": 1, "type": "ping", "id": "a" * 129}, P.E_BAD_REQUEST, "'id'"),
    ({"v": 1, "type": "ping", "id": 7}, P.E_BAD_REQUEST, "'id'"),
    ({"v": 1, "type": "ping", "id": "a", "token": 5}, P.E_BAD_REQUEST, "'token'"),
    ({"v": 1, "type": "ping", "id": "a", "extra": 1}, P.E_BAD_REQUEST, "extra"),
    ({"v": 1, "type": "cancel", "id": "a"}, P.E_BAD_REQUEST, "'job_id'"),
    ({"v": 1, "type": "status", "id": "a", "job_id": ["x"]}, P.E_BAD_REQUEST, "'job_id'"),
    (_detect(source=...), P.E_BAD_REQUEST, "'source'"),
    (_detect(model=5), P.E_BAD_REQUEST, "'model'"),
    (_detect(model=""), P.E_BAD_REQUEST, "'model'"),
    (_detect(source="a.tif"), P.E_BAD_REQUEST, "'source'"),
    (_detect(source={"kind": "url", "path": "x"}), P.E_BAD_REQUEST, "kind"),
    (_detect(source={"kind": "file"}), P.E_BAD_REQUEST, "path"),
    (_detect(source={"kind": "file", "path": "a\x00b"}), P.E_BAD_REQUEST, "NUL"),
    (_detect(source={"kind": "file", "path": "a", "x": 1}), P.E_BAD_REQUEST, "unknown"),
    (_detect(source=dict(_PIX, crs="")), P.E_BAD_REQUEST, "crs"),
    (_detect(source=dict(_PIX, transform=[1, 0, 0, 0, 1])), P.E_BAD_REQUEST, "transform"),
    (_detect(source=dict(_PIX, transform=[1, 0, 0, 0, 0, 0])), P.E_BAD_REQUEST, "singular"),
    (_detect(source=dict(_PIX, nodata="none")), P.E_BAD_REQUEST, "nodata"),
    (_detect(extent=[0, 0, 1]), P.E_BAD_REQUEST, "'extent'"),
    (_detect(extent=[1, 0, 0, 1]), P.E_BAD_REQUEST, "empty"),
    (_detect(extent=[0, 0, 1, 10 ** 400]), P.E_BAD_REQUEST, "'extent'"),
    (_detect(extent_crs=5), P.E_BAD_REQUEST, "'extent_crs'"),
    (_detect(threshold=0), P.E_BAD_REQUEST, "'threshold'"),
    (_detect(threshold=1.5), P.E_BAD_REQUEST, "'threshold'"),
    (_detect(threshold=10 ** 400), P.E_BAD_REQUEST, "'threshold'"),
    (_detect(threshold="0.5"), P.E_BAD_REQUEST, "'threshold'"),
    (_detect(min_area_m2=-1), P.E_BAD_REQUEST, "'min_area_m2'"),
    (_detect(simplify_m=101), P.E_BAD_REQUEST, "'simplify_m'"),
    (_detect(bands=[]), P.E_BAD_REQUEST, "'bands'"),
    (_detect(bands=[0, 1, 2]), P.E_BAD_REQUEST, "'bands'"),
    (_detect(bands=[1, True, 3]), P.E_BAD_REQUEST, "'bands'"),
    (_detect(batch_size=0), P.E_BAD_REQUEST, "'batch_size'"),
    (_detect(batch_size=True), P.E_BAD_REQUEST, "'batch_size'"),
    (_detect(batch_size=2.0), P.E_BAD_REQUEST, "'batch_size'"),
])
def test_validation_errors(header, code, needle):
    with pytest.raises(P.ProtocolError) as e:
        P.validate_request(header)
    assert e.value.code == code
    assert needle in e.value.message
    assert len(e.value.message) < 500


def test_valid_requests_pass():
    for h in (_detect(), _detect(source=_PIX, extent=[0, 0, 1, 1], extent_crs=None,
                                 threshold=1, min_area_m2=0, simplify_m=0.05,
                                 bands=[1, 2, 3], batch_size=4, token="t")):
        assert P.validate_request(h) is h


# ----------------------------------------------------------------------------- fuzz

_big = st.sampled_from([10 ** 400, -10 ** 400, 2 ** 63, float("1e308")])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | _big
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=5),
    max_leaves=20)
_types = st.sampled_from(list(P.REQUEST_TYPES) + ["pong", "x"])
_fields = ["arrays", "token", "job_id", "source", "model", "extent", "extent_crs",
           "threshold", "min_area_m2", "simplify_m", "bands", "batch_size"]
_value = st.one_of(
    _json, _types,
    st.fixed_dictionaries({"kind": st.sampled_from(["file", "pixels", "x"])},
                          optional={"path": _json | st.text(max_size=10), "crs": _json,
                                    "transform": st.lists(_json, max_size=7),
                                    "nodata": _json}),
    st.lists(st.integers(-5, 5) | st.floats() | _big, min_size=4, max_size=6),
    st.lists(st.fixed_dictionaries({"dtype": st.sampled_from(["uint8", "float32", "x"]),
                                    "shape": st.lists(st.integers(-1, 9), max_size=5)}),
             max_size=3))
# mostly well-formed envelopes (v=1, a request type, an id) so the fuzz reaches the
# field checks, with any value anywhere
_header = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries({}, optional={"v": st.just(1) | _json, "type": _types | _json,
                                        "id": st.text(min_size=1, max_size=8) | _json}),
    st.dictionaries(st.sampled_from(_fields) | st.text(max_size=5), _value, max_size=6))
_raw_first = st.none() | st.binary(max_size=64) | st.sampled_from(
    [b"[" * 5000, b'{"a":' * 3000, b"1" * 5000, b'"\\ud800"', b"NaN", b"{}"])


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(header=_header, raw=_raw_first,
       frames=st.lists(st.binary(max_size=40), max_size=6))
def test_fuzz_decode_validate_only_protocol_errors(header, raw, frames):
    first = raw if raw is not None else json.dumps(header).encode()
    try:
        h, arrays = P.decode([first] + frames)
        P.validate_request(h)
    except P.ProtocolError as exc:
        assert exc.code in P.ERROR_CODES


# ----------------------------------------------------------------------------- uploads

def _upload(**kw):
    h = {"v": 1, "type": "upload", "id": "u1", "crs": "EPSG:32651",
         "transform": [0.1, 0, 0, 0, -0.1, 0], "width": 100, "height": 50, "count": 3,
         "dtype": "uint8"}
    h.update(kw)
    return {k: v for k, v in h.items() if v is not ...}


@pytest.mark.parametrize("header, needle", [
    (_upload(width=0), "'width'"),
    (_upload(height=P.MAX_EXTENT_PIXELS + 1), "'height'"),
    (_upload(count=17), "'count'"),
    (_upload(dtype="float64"), "'dtype'"),
    (_upload(transform=[1, 0, 0, 0, 0, 0]), "singular"),
    (_upload(crs=...), "'crs'"),
    (_upload(nodata="none"), "'nodata'"),
    (_upload(window_px=P.MAX_WINDOW_PX + 1), "'window_px'"),
    (_upload(window_px=P.MIN_WINDOW_PX - 1), "'window_px'"),
    # 20 000 x 20 000 x 3 bytes: 1144 MiB, more than an upload may hold
    (_upload(width=20_000, height=20_000), "exceeds the 1024 MiB"),
    (_upload(width=10_000, height=10_000, dtype="float32", count=4), "exceeds"),
    ({"v": 1, "type": "window", "id": "c", "upload_id": "u", "row": -1, "col": 0}, "'row'"),
    ({"v": 1, "type": "window", "id": "c", "upload_id": "", "row": 0, "col": 0},
     "'upload_id'"),
    ({"v": 1, "type": "window", "id": "c", "row": 0, "col": 0}, "'upload_id'"),
    (_detect(source={"kind": "upload"}), "upload_id"),
    (_detect(source={"kind": "upload", "upload_id": "a", "path": "/x"}), "unknown"),
])
def test_upload_requests_are_validated_and_size_limited(header, needle):
    with pytest.raises(P.ProtocolError) as e:
        P.validate_request(header)
    assert e.value.code == P.E_BAD_REQUEST and needle in e.value.message, e.value.message


def test_only_a_detection_takes_an_upload_source():
    up = {"kind": "upload", "upload_id": "abc"}
    assert P.validate_request(_detect(source=up))["source"] == up
    assert P.validate_request(_upload(width=18_000, height=18_000))  # 927 MiB: fits
    for mtype, extra in (("batch", {"out_path": "/x.gpkg"}),
                         ("retrain", {"features": []})):
        h = {"v": 1, "type": mtype, "id": "a", "model": "m", "source": up, **extra}
        with pytest.raises(P.ProtocolError, match="'source'"):
            P.validate_request(h)
    assert P.check_source(up) == "kind must be 'file' or 'pixels'"


# ----------------------------------------------------------------------------- envelope, exactly

@pytest.mark.parametrize("header, code, message", [
    ([], P.E_BAD_REQUEST, "the header must be a JSON object"),
    ({"type": "ping", "id": "a"}, P.E_BAD_REQUEST, "the header has no protocol version 'v'"),
    ({"v": 2, "type": "ping", "id": "a"}, P.E_VERSION,
     "protocol version 2 is not supported; this side speaks 1"),
    ({"v": "x" * 100, "type": "ping", "id": "a"}, P.E_VERSION,
     "protocol version '" + "x" * 56 + "... is not supported; this side speaks 1"),
    ({"v": 1, "type": "nope", "id": "a"}, P.E_UNKNOWN_TYPE,
     f"unknown request type 'nope'; expected one of {list(P.REQUEST_TYPES)}"),
    ({"v": 1, "type": "ping", "id": "a", "b": 1, "a": 2}, P.E_BAD_REQUEST,
     "ping: unknown field(s) ['a', 'b']"),
    ({"v": 1, "type": "ping", "id": "a", **{f"f{i:03d}": 0 for i in range(40)}},
     P.E_BAD_REQUEST, "ping: unknown field(s) " + repr([f"f{i:03d}" for i in range(40)])[:197]
     + "..."),
    ({"v": 1, "type": "cancel", "id": "a"}, P.E_BAD_REQUEST, "cancel: missing field 'job_id'"),
    ({"v": 1, "type": "cancel", "id": "a", "job_id": ""}, P.E_BAD_REQUEST,
     "cancel: field 'job_id' must be a non-empty string of at most 64 characters"),
    ({"v": 1, "type": "upload", "id": "a", "crs": "EPSG:2056",
      "transform": [1, 0, 0, 0, -1, 0], "width": 100000, "height": 100000, "count": 1,
      "dtype": "uint8"}, P.E_BAD_REQUEST,
     "upload: the image of 100000 x 100000 pixels (9536 MiB) exceeds the 1024 MiB an "
     "upload may hold; detect in a smaller extent"),
])
def test_validation_messages_word_for_word(header, code, message):
    with pytest.raises(P.ProtocolError) as e:
        P.validate_request(header)
    assert (e.value.code, e.value.message) == (code, message)


def test_requests_of_every_kind_pass():
    ok = [{"type": "batch", "source": _SRC, "model": "m", "out_path": "/o/a.gpkg",
           "layer": "det", "overwrite": True, "region_px": 32, "halo_px": 0,
           "executor": "ray"},
          {"type": "retrain", "model": "m", "source": _SRC, "features": [],
           "reviewed": [{}], "budget_s": 1.0, "steps": 1, "seed": 0,
           "holdout_fraction": 0.5, "max_iou_drop": 0.0, "guard": False},
          {"type": "upload", "crs": "EPSG:2056", "transform": [1, 0, 0, 0, -1, 0],
           "width": 10, "height": 10, "count": 3, "dtype": "uint8"},
          {"type": "detect", "source": {"kind": "upload", "upload_id": "u"}, "model": "m"}]
    for h in ok:
        h = dict(h, v=1, id="r")
        assert P.validate_request(h) is h


def test_request():
    h = P.request("cancel", job_id="j1", id="r9", token=None)
    assert h == {"v": 1, "type": "cancel", "id": "r9", "job_id": "j1"}
    h = P.request("ping")
    assert set(h) == {"v", "type", "id"} and len(h["id"]) == 32
    with pytest.raises(P.ProtocolError):
        P.request("cancel")


def test_a_detection_may_leave_the_model_to_the_engine():
    """No model, or null: the engine chooses one by the layer's GSD."""
    for h in (_detect(model=...), _detect(model=None)):
        assert P.validate_request(h) == h
