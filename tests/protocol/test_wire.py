"""protocol.wire: encode/decode round trips, validation errors, fuzzing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as P
from protocol import wire as W


def _raw(header) -> bytes:
    return json.dumps(header).encode()


# ----------------------------------------------------------------------------- round trip

def test_round_trip_with_arrays():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (3, 17, 23), dtype=np.uint8),
              rng.standard_normal((5, 4)).astype(np.float32),
              np.arange(12, dtype=np.uint16).reshape(2, 2, 3),
              np.asfortranarray(np.arange(-6, 6, dtype=np.int16).reshape(3, 4))]
    header = P.request("detect", source={"kind": "pixels", "crs": "EPSG:2056",
                                         "transform": [0.1, 0, 2600000, 0, -0.1, 1200000]},
                       model="pv-unet-efl0", extent=[0, 0, 1, 1], threshold=0.5)
    frames = P.encode(header, arrays)
    assert len(frames) == 1 + len(arrays)
    got, got_arrays = P.decode([bytes(f) for f in frames])
    assert P.validate_request(got) == got
    for k, v in header.items():
        assert got[k] == v
    assert got["arrays"] == [{"dtype": str(a.dtype), "shape": list(a.shape)} for a in arrays]
    for a, b in zip(arrays, got_arrays):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(a, b)


def test_round_trip_without_arrays_and_memoryview_frames():
    frames = P.encode(P.request("ping"))
    header, arrays = P.decode([memoryview(f) for f in frames])
    assert header["type"] == "ping" and header["v"] == P.PROTOCOL_VERSION
    assert arrays == []


def test_encode_rejects_bad_dtype_and_big_header():
    with pytest.raises(P.ProtocolError) as e:
        P.encode({"type": "ping"}, [np.zeros(3, np.float64)])
    assert e.value.code == P.E_BAD_REQUEST
    with pytest.raises(P.ProtocolError):
        P.encode({"pad": "x" * (P.MAX_HEADER_BYTES + 1)})
    # replies may carry bigger headers when asked to
    assert P.encode({"pad": "x" * (P.MAX_HEADER_BYTES + 1)},
                    max_header_bytes=P.MAX_REPLY_HEADER_BYTES)


# ----------------------------------------------------------------------------- decode errors

_OK = {"v": 1, "type": "ping", "id": "a"}


@pytest.mark.parametrize("frames, needle", [
    ([], "empty"),
    ([_raw(_OK)] + [b"x"] * (P.MAX_FRAMES + 1), "too many frames"),
    ([b"{not json"], "JSON"),
    ([b"\xff\xfe\x00"], "JSON"),
    ([b"[1, 2]"], "object"),
    ([b"[" * 100_000], "nested"),
    ([b"x" * (P.MAX_HEADER_BYTES + 1)], "exceeds"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [4]}] * 2)), b"abcd"], "2 array"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [4]}]))], "0 frame"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [5]}])), b"abcd"], "need 5"),
    ([_raw(dict(_OK, arrays=[{"dtype": "float64", "shape": [1]}])), b"a" * 8], "dtype"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [0]}])), b""], "positive"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [True]}])), b"a"], "positive"),
    ([_raw(dict(_OK, arrays="x")), b"a"], "array"),
    ([_raw(dict(_OK, arrays=[{"dtype": "uint8", "shape": [1 << 20, 1 << 20]}])), b"a"],
     "exceeds"),
])
def test_decode_errors(frames, needle):
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames)
    assert e.value.code == P.E_BAD_REQUEST
    assert needle in e.value.message


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
    (_detect(model=...), P.E_BAD_REQUEST, "'model'"),
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


def test_error_replies_name_the_field_at_fault():
    r = P.error_reply("r", P.E_FORBIDDEN, "outside", field="source")
    assert r["field"] == "source" and "job_id" not in r
    assert "field" not in P.error_reply("r", P.E_BUSY, "later", job_id="j")


# ----------------------------------------------------------------------------- checkers, exactly


def test_number_and_short_helpers():
    for x, ok in [(1, True), (-2.5, True), (0, True), (True, False), ("1", False),
                  (None, False), (10 ** 400, False), (float("nan"), False),
                  (float("inf"), False), (2 ** 63, True)]:
        assert W._is_number(x) is ok, x
    assert W._short("abc") == "'abc'"
    assert W._short("x" * 58) == "'" + "x" * 58 + "'"                 # 60: kept
    assert W._short("x" * 59) == "'" + "x" * 56 + "..."              # 61: cut to 60
    assert W._short(list(range(100)), 20) == "[0, 1, 2, 3, 4, 5..."
    assert len(W._short(list(range(100)), 20)) == 20

    class Bad:
        def __repr__(self):
            raise RecursionError()
    assert W._short(Bad()) == "<Bad>"


@pytest.mark.parametrize("make, value, message", [
    (lambda: W._num_range(0.0, 1.0, lo_open=True), 0.0, "must be in (0.0, 1.0]"),
    (lambda: W._num_range(0.0, 1.0, lo_open=True), 1e-12, None),
    (lambda: W._num_range(0.0, 1.0, lo_open=True), 1.0, None),
    (lambda: W._num_range(0.0, 1.0, lo_open=True), 1.000001, "must be in (0.0, 1.0]"),
    (lambda: W._num_range(0.0, 1.0), 0.0, None),
    (lambda: W._num_range(0.0, 1.0), -1e-12, "must be in [0.0, 1.0]"),
    (lambda: W._num_range(0.0, 1.0), "0.5", "must be a finite number"),
    (lambda: W._num_range(0.0, 1.0), True, "must be a finite number"),
    (lambda: W._int_range(1, 256), 0, "must be an integer in [1, 256]"),
    (lambda: W._int_range(1, 256), 1, None),
    (lambda: W._int_range(1, 256), 256, None),
    (lambda: W._int_range(1, 256), 257, "must be an integer in [1, 256]"),
    (lambda: W._int_range(1, 256), True, "must be an integer in [1, 256]"),
    (lambda: W._int_range(1, 256), 2.0, "must be an integer in [1, 256]"),
    (lambda: W._string(5), "abcde", None),
    (lambda: W._string(5), "abcdef", "must be a non-empty string of at most 5 characters"),
    (lambda: W._string(5), "", "must be a non-empty string of at most 5 characters"),
    (lambda: W._string(5), 5, "must be a non-empty string of at most 5 characters"),
    (lambda: W._string(), "a" * 256, None),
    (lambda: W._string(), "a" * 257, "must be a non-empty string of at most 256 characters"),
    (lambda: W._one_of("local", "ray"), "ray", None),
    (lambda: W._one_of("local", "ray"), "RAY", "must be one of ['local', 'ray']"),
    (lambda: W._boolean, False, None), (lambda: W._boolean, 0, "must be true or false"),
    (lambda: W._bool, True, None), (lambda: W._bool, "true", "must be true or false"),
    (lambda: W._optional_string, None, None), (lambda: W._optional_string, "EPSG:2056", None),
    (lambda: W._optional_string, "",
     "must be a non-empty string of at most 20000 characters"),
    (lambda: W._optional_string, "x" * 20001,
     "must be a non-empty string of at most 20000 characters"),
    (lambda: W._token, "", None), (lambda: W._token, "t" * 256, None), (lambda: W._token, "t" * 257, "must be a string"),
    (lambda: W._token, 5, "must be a string"),
    (lambda: W._nodata, None, None), (lambda: W._nodata, 0, None), (lambda: W._nodata, "0", "must be a number or null"),
    (lambda: W._bands, [1, 2, 3], None), (lambda: W._bands, [1] * 16, None), (lambda: W._bands, [1024], None),
    (lambda: W._bands, [1] * 17, "must be a list of 1-based band numbers"),
    (lambda: W._bands, [1025], "must be a list of 1-based band numbers"),
    (lambda: W._bands, [0], "must be a list of 1-based band numbers"),
    (lambda: W._bands, (1, 2, 3), "must be a list of 1-based band numbers"),
    (lambda: W._check_extent, [0, 0, 1, 1], None),
    (lambda: W._check_extent, [0, 5, 1, 10], None),          # each axis against its own
    (lambda: W._check_extent, [2, 0, 1, 10], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: W._check_extent, [0, 0, 1], "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: W._check_extent, (0, 0, 1, 1), "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: W._check_extent, [0, 0, 1, "1"], "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: W._check_extent, [0, 0, 0, 1], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: W._check_extent, [0, 1, 1, 1], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: W._check_transform, [0.1, 0, 0, 0, -0.1, 0], None),
    (lambda: W._check_transform, [0, 1, 0, 1, 0, 0], None),                 # rotated 90 degrees
    (lambda: W._check_transform, [1, 2, 0, 2, 4, 0], "is singular (zero pixel size)"),
    (lambda: W._check_transform, [1, 0, 0, 0, 1, 0, 0],
     "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"),
    (lambda: W._check_transform, [1, 0, 0, 0, 1, None],
     "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"),
    (lambda: W._gpkg_path, "/out/a.GPKG", None),
    (lambda: W._gpkg_path, "a.gpkg" + "x" * 0, None),
    (lambda: W._gpkg_path, "/out/a.shp", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: W._gpkg_path, "a\x00.gpkg", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: W._gpkg_path, "/" + "a" * 4090 + ".gpkg", None),                  # 4096
    (lambda: W._gpkg_path, "/" + "a" * 4091 + ".gpkg",
     "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: W._gpkg_path, "", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: W._gpkg_path, 5, "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: W._layer_name, "a", None),
    (lambda: W._layer_name, "det_2024-a", None), (lambda: W._layer_name, "a" * 63, None),
    (lambda: W._layer_name, "a" * 64, "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: W._layer_name, "", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: W._layer_name, "a b", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: W._layer_name, "é", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: W._layer_name, 7, "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
])
def test_field_checkers_word_for_word(make, value, message):
    """Each checker's verdict at and beyond its limits; checkers made by a factory
    (``_num_range(lo, hi)``) are made here, in the test."""
    assert make()(value) == message


_FILE = {"kind": "file", "path": "/data/a.tif"}
_PIXELS = {"kind": "pixels", "crs": "EPSG:2056", "transform": [0.1, 0, 0, 0, -0.1, 0]}


@pytest.mark.parametrize("source, upload, message", [
    (_FILE, False, None),
    (dict(_FILE, path="p" * 4096), False, None),
    (dict(_FILE, path="p" * 4097), False, "of kind 'file' needs a non-empty 'path' string"),
    (dict(_FILE, path=""), False, "of kind 'file' needs a non-empty 'path' string"),
    (dict(_FILE, path=3), False, "of kind 'file' needs a non-empty 'path' string"),
    (dict(_FILE, path="a\x00"), False, "path contains a NUL byte"),
    (dict(_FILE, crs="x"), False, "has unknown field(s) ['crs']"),
    (_PIXELS, False, None),
    (dict(_PIXELS, nodata=None), False, None), (dict(_PIXELS, nodata=0), False, None),
    (dict(_PIXELS, nodata="0"), False, "nodata must be a number or null"),
    (dict(_PIXELS, crs=""), False,
     "of kind 'pixels' needs a 'crs' string (WKT or authority id)"),
    (dict(_PIXELS, crs=2056), False,
     "of kind 'pixels' needs a 'crs' string (WKT or authority id)"),
    (dict(_PIXELS, transform=[0, 0, 0, 0, 0, 0]), False,
     "transform is singular (zero pixel size)"),
    (dict(_PIXELS, path="a", band=1), False, "has unknown field(s) ['band', 'path']"),
    ({"kind": "upload", "upload_id": "u1"}, True, None),
    ({"kind": "upload", "upload_id": "u" * 64}, True, None),
    ({"kind": "upload", "upload_id": "u" * 65}, True,
     "of kind 'upload' needs an 'upload_id' string of 1-64 characters"),
    ({"kind": "upload"}, True,
     "of kind 'upload' needs an 'upload_id' string of 1-64 characters"),
    ({"kind": "upload", "upload_id": "u1", "path": "x"}, True,
     "has unknown field(s) ['path']"),
    ({"kind": "upload", "upload_id": "u1"}, False, "kind must be 'file' or 'pixels'"),
    ({"kind": "url"}, True, "kind must be 'file', 'pixels' or 'upload'"),
    ({"path": "a"}, False, "kind must be 'file' or 'pixels'"),
    ("a.tif", False, "must be an object"),
])
def test_check_source_word_for_word(source, upload, message):
    assert W.check_source(source, allow_upload=upload) == message
    if not upload:
        assert W.check_source(source) == message


def test_batch_sources_are_files():
    assert W._check_file_source(_FILE) is None
    assert W._check_file_source(_PIXELS) == ("must be of kind 'file': a batch job reads "
                                             "the raster again when it resumes")
    assert W._check_file_source({"kind": "file"}) == ("of kind 'file' needs a non-empty "
                                                      "'path' string")


@pytest.mark.parametrize("features, message", [
    ([], None),
    ([{"wkt": "POINT (0 0)", "class": "pv"}, {"wkt": "POINT (1 1)", "class_id": 0,
                                              "area": 0}], None),
    ([{"wkt": "POINT (0 0)", "class": None, "class_id": 2, "area": None}], None),
    ("x", "must be a list of at most 100000 features"),
    ([{"class": "pv"}], "[0] needs a non-empty 'wkt' string"),
    ([{"wkt": "POINT (0 0)", "class": "pv"}, {"wkt": "", "class": "pv"}],
     "[1] needs a non-empty 'wkt' string"),
    (["POINT (0 0)"], "[0] needs a non-empty 'wkt' string"),
    ([{"wkt": "POINT (0 0)", "class": 1}], "[0] 'class' must be a string"),
    ([{"wkt": "POINT (0 0)", "class_id": -1}], "[0] 'class_id' must be a non-negative integer"),
    ([{"wkt": "POINT (0 0)", "class_id": True}],
     "[0] 'class_id' must be a non-negative integer"),
    ([{"wkt": "POINT (0 0)", "class": "pv", "area": 1.0}],
     "[0] 'area' must be a non-negative integer"),
    ([{"wkt": "POINT (0 0)"}], "[0] needs a 'class' (or 'class_id')"),
    ([{"wkt": "POINT (0 0)", "class": None, "class_id": None}],
     "[0] needs a 'class' (or 'class_id')"),
])
def test_check_features_word_for_word(features, message):
    assert W._check_features(features) == message


def test_check_features_limit(monkeypatch):
    monkeypatch.setattr(W, "MAX_RETRAIN_FEATURES", 2)
    two = [{"wkt": "POINT (0 0)", "class": "pv"}] * 2
    assert W._check_features(two) is None
    assert W._check_features(two * 2) == "must be a list of at most 2 features"


@pytest.mark.parametrize("areas, message", [
    ([{}], None),
    ([{"extent": [0, 0, 1, 1], "extent_crs": "EPSG:2056", "source": _FILE,
       "holdout": True, "array": 0}, {"extent": None, "holdout": None, "array": 3}], None),
    ([], "must be a list of 1 to 1024 reviewed areas"),
    ({}, "must be a list of 1 to 1024 reviewed areas"),
    ([{}, 5], "[1] must be an object"),
    ([{"extent": [0, 0, 1, 1], "colour": "red"}], "[0] has unknown field(s) ['colour']"),
    ([{"extent": [1, 0, 0, 1]}], "[0] extent is empty: xmin must be < xmax and ymin < ymax"),
    ([{"extent_crs": 2056}], "[0] extent_crs must be a string"),
    ([{"source": {"kind": "x"}}], "[0] source kind must be 'file' or 'pixels'"),
    ([{"holdout": "yes"}], "[0] holdout must be true, false or null"),
    ([{"array": 4}], "[0] array must be a frame index in [0, 3]"),
    ([{"array": -1}], "[0] array must be a frame index in [0, 3]"),
    ([{"array": None}], "[0] array must be a frame index in [0, 3]"),
])
def test_check_reviewed_word_for_word(areas, message):
    assert W._check_reviewed(areas) == message


def test_check_reviewed_limit(monkeypatch):
    monkeypatch.setattr(W, "MAX_REVIEWED_AREAS", 2)
    assert W._check_reviewed([{}, {}]) is None
    assert W._check_reviewed([{}] * 3) == "must be a list of 1 to 2 reviewed areas"


def test_upload_size_limit():
    header = {"width": 1024, "height": 1024, "count": 3, "dtype": "uint16"}
    assert W.upload_bytes(header) == 1024 * 1024 * 3 * 2
    assert W._check_upload(header) is None
    exact = {"width": 16384, "height": 16384, "count": 4, "dtype": "uint8"}   # 1 GiB
    assert W.upload_bytes(exact) == W.MAX_UPLOAD_BYTES == 1 << 30
    assert W._check_upload(exact) is None
    over = dict(exact, width=16385)
    assert W._check_upload(over) == ("the image of 16385 x 16384 pixels (1024 MiB) "
                                     "exceeds the 1024 MiB an upload may hold; detect in "
                                     "a smaller extent")
    assert W._check_upload(dict(exact, dtype="float32")).startswith(
        "the image of 16384 x 16384 pixels (4096 MiB) exceeds")


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
    ok = [{"type": "batch", "source": _FILE, "model": "m", "out_path": "/o/a.gpkg",
           "layer": "det", "overwrite": True, "chunk_px": 32, "halo_px": 0,
           "executor": "ray"},
          {"type": "retrain", "model": "m", "source": _FILE, "features": [],
           "reviewed": [{}], "budget_s": 1.0, "steps": 1, "seed": 0,
           "holdout_fraction": 0.5, "max_iou_drop": 0.0, "guard": False},
          {"type": "upload", "crs": "EPSG:2056", "transform": [1, 0, 0, 0, -1, 0],
           "width": 10, "height": 10, "count": 3, "dtype": "uint8"},
          {"type": "detect", "source": {"kind": "upload", "upload_id": "u"}, "model": "m"}]
    for h in ok:
        h = dict(h, v=1, id="r")
        assert P.validate_request(h) is h


def test_request_reply_and_error_reply():
    h = P.request("cancel", job_id="j1", id="r9", token=None)
    assert h == {"v": 1, "type": "cancel", "id": "r9", "job_id": "j1"}
    h = P.request("ping")
    assert set(h) == {"v", "type", "id"} and len(h["id"]) == 32
    with pytest.raises(P.ProtocolError):
        P.request("cancel")
    assert P.reply("pong", "r1", version="x") == {"v": 1, "type": "pong", "id": "r1",
                                                 "version": "x"}
    with pytest.raises(ValueError) as e:
        P.reply("ping", "r1")
    assert str(e.value) == "not a reply type: ping"
    assert P.error_reply("r1", P.E_BAD_REQUEST, "bad") == {
        "v": 1, "type": "error", "id": "r1", "code": P.E_BAD_REQUEST, "message": "bad"}
    assert P.error_reply(None, P.E_INTERNAL, "x", job_id="j", field="source") == {
        "v": 1, "type": "error", "id": None, "code": P.E_INTERNAL, "message": "x",
        "job_id": "j", "field": "source"}


# ----------------------------------------------------------------------------- frames, exactly

def test_encoded_header_is_compact_json_without_nan():
    frames = P.encode({"type": "ping", "id": "a"})
    assert frames == [b'{"type":"ping","id":"a","v":1}']
    assert P.encode({"type": "ping", "id": "a", "v": 7})[0] == b'{"type":"ping","id":"a","v":7}'
    with pytest.raises(ValueError):
        P.encode({"x": float("nan")})
    with pytest.raises(P.ProtocolError) as e:
        P.encode({"a": np.zeros(1)}, [np.zeros(2, np.float64)])
    assert (e.value.code, e.value.message) == (P.E_BAD_REQUEST, "array dtype float64 not allowed")
    a = np.arange(6, dtype=np.uint16).reshape(2, 3)
    frames = P.encode({"type": "x"}, [a])
    assert bytes(frames[1]) == a.tobytes() and len(frames[1]) == 12


def test_header_size_limits_are_inclusive():
    base = len(P.encode({"p": ""})[0])
    exact = {"p": "x" * (P.MAX_HEADER_BYTES - base)}
    raw = P.encode(exact)[0]
    assert len(raw) == P.MAX_HEADER_BYTES
    assert P.decode([raw])[0]["p"] == exact["p"]
    over = {"p": "x" * (P.MAX_HEADER_BYTES - base + 1)}
    with pytest.raises(P.ProtocolError) as e:
        P.encode(over)
    assert e.value.message == (f"header of {P.MAX_HEADER_BYTES + 1} bytes exceeds "
                               f"{P.MAX_HEADER_BYTES}")
    with pytest.raises(P.ProtocolError) as e:
        P.decode([raw + b" "])
    assert e.value.message == (f"header of {P.MAX_HEADER_BYTES + 1} bytes exceeds "
                               f"{P.MAX_HEADER_BYTES}")
    assert P.decode([raw + b" "], max_header_bytes=P.MAX_HEADER_BYTES + 1)[0] == P.decode([raw])[0]


def _meta(*arrays):
    return _raw({"v": 1, "type": "ping", "id": "a", "arrays": list(arrays)})


@pytest.mark.parametrize("frames, message", [
    ([], "empty message"),
    ([_raw(_OK)] + [b"x"] * 5, "too many frames (6); at most 5"),
    ([b"[1]"], "the header must be a JSON object"),
    ([b"[" * 100_000], "header JSON is nested too deeply"),
    ([_meta({"dtype": "uint8", "shape": [4]})], "header describes 1 array(s) but 0 frame(s) follow"),
    ([_raw(dict(_OK, arrays=7)), b"a"], "header describes ? array(s) but 1 frame(s) follow"),
    ([_meta({"dtype": "uint8", "shape": [1, 1, 1, 1, 1]}), b"a"],
     "array 0: needs dtype in ['uint8', 'uint16', 'int16', 'float32'] and a shape of 1-4 "
     "positive ints"),
    ([_meta({"dtype": "uint8", "shape": []}), b"a"],
     "array 0: needs dtype in ['uint8', 'uint16', 'int16', 'float32'] and a shape of 1-4 "
     "positive ints"),
    ([_meta({"dtype": "uint8", "shape": "4"}), b"abcd"],
     "array 0: needs dtype in ['uint8', 'uint16', 'int16', 'float32'] and a shape of 1-4 "
     "positive ints"),
    ([_meta({"dtype": "uint8", "shape": [(1 << 20) + 1]}), b"a"],
     "array 0: needs dtype in ['uint8', 'uint16', 'int16', 'float32'] and a shape of 1-4 "
     "positive ints"),
    ([_meta({"dtype": "uint8", "shape": [2]}, {"dtype": "uint16", "shape": [2]}), b"ab",
      b"abc"], "array 1: frame has 3 bytes, shape/dtype need 4"),
])
def test_decode_messages_word_for_word(frames, message):
    with pytest.raises(P.ProtocolError) as e:
        P.decode(frames)
    assert (e.value.code, e.value.message) == (P.E_BAD_REQUEST, message)


def test_decode_shapes_at_their_limits(monkeypatch):
    h, (a,) = P.decode([_meta({"dtype": "uint8", "shape": [1, 1, 1, 1]}), b"a"])
    assert a.shape == (1, 1, 1, 1)
    h, (a,) = P.decode([_meta({"dtype": "uint8", "shape": [1 << 20]}), bytes(1 << 20)])
    assert a.shape == (1 << 20,)
    h, arrays = P.decode([_meta(*[{"dtype": "int16", "shape": [1]}] * 4)] + [b"ab"] * 4)
    assert [a.tolist() for a in arrays] == [[int.from_bytes(b"ab", "little", signed=True)]] * 4
    monkeypatch.setattr(W, "MAX_FRAME_BYTES", 8)
    assert P.decode([_meta({"dtype": "float32", "shape": [2]}), bytes(8)])[1][0].shape == (2,)
    for shape, frame in (([3], bytes(12)), ([3], bytes(8))):
        with pytest.raises(P.ProtocolError) as e:
            P.decode([_meta({"dtype": "float32", "shape": shape}), frame])
        assert e.value.message == "array 0: frame exceeds 8 bytes"
    with pytest.raises(P.ProtocolError) as e:
        P.decode([_meta({"dtype": "uint8", "shape": [2]}), bytes(9)])
    assert e.value.message == "array 0: frame exceeds 8 bytes"


def test_decode_reads_zmq_frames_and_memoryviews():
    import zmq
    raw = _raw(_OK)
    assert P.decode([zmq.Frame(raw)])[0] == _OK
    assert P.decode([memoryview(bytearray(raw))])[0] == _OK
    buf = W._as_buffer(zmq.Frame(b"abc"))
    assert isinstance(buf, memoryview) and buf.format == "B" and bytes(buf) == b"abc"
    assert W._as_bytes(zmq.Frame(b"abc")) == b"abc"
    assert W._as_bytes(np.array([1, 2], np.uint16)) == b"\x01\x00\x02\x00"


_STRETCH_MODE = "must be an object with mode 'percentile', 'minmax' or 'none'"
_PERCENT = "percentiles must satisfy 0 <= low < high <= 100"
_MINMAX = "min and max must be lists of numbers, one per band, with min < max"


@pytest.mark.parametrize("stretch, message", [
    ({"mode": "none"}, None), ({"mode": "percentile"}, None),
    ({"mode": "percentile", "low": 0, "high": 100}, None),
    ({"mode": "percentile", "low": 2.5, "high": 3}, None),
    ({"mode": "minmax", "min": [0, 0, 0], "max": [255, 255, 254.5]}, None),
    ({"mode": "minmax", "min": [5], "max": [6]}, None),
    ({"mode": "minmax", "min": [0] * 16, "max": [1] * 16}, None),
    ("percentile", _STRETCH_MODE), ({}, _STRETCH_MODE), ({"mode": "gamma"}, _STRETCH_MODE),
    ({"mode": "none", "gamma": 1, "bias": 0}, "has unknown field(s) ['bias', 'gamma']"),
    ({"mode": "percentile", "low": -0.5}, _PERCENT),
    ({"mode": "percentile", "high": 100.5}, _PERCENT),
    ({"mode": "percentile", "low": 50, "high": 50}, _PERCENT),
    ({"mode": "percentile", "low": 99}, _PERCENT),        # above the default high, 98
    ({"mode": "percentile", "low": 98.5}, _PERCENT),
    ({"mode": "percentile", "high": 2.5}, None),          # above the default low, 2
    ({"mode": "percentile", "high": 1}, _PERCENT),        # below the default low, 2
    ({"mode": "percentile", "low": "2"}, _PERCENT),
    ({"mode": "percentile", "high": True}, _PERCENT),
    ({"mode": "minmax", "min": [0, 0], "max": [1, 0]}, _MINMAX),
    ({"mode": "minmax", "min": [0, 0], "max": [1]}, _MINMAX),
    ({"mode": "minmax", "min": [], "max": []}, _MINMAX),
    ({"mode": "minmax", "min": [0] * 17, "max": [1] * 17}, _MINMAX),
    ({"mode": "minmax", "min": (0,), "max": [1]}, _MINMAX),
    ({"mode": "minmax", "min": [0], "max": (1,)}, _MINMAX),
    ({"mode": "minmax", "min": [0], "max": ["1"]}, _MINMAX),
    ({"mode": "minmax", "min": [float("nan")], "max": [1]}, _MINMAX),
    ({"mode": "minmax", "max": [1]}, _MINMAX),
])
def test_check_stretch_word_for_word(stretch, message):
    assert W.check_stretch(stretch) == message
