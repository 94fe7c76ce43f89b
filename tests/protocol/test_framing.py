"""protocol.framing: encode/decode round trips, decode errors, frames and replies."""

from __future__ import annotations

import json

import numpy as np
import pytest

import protocol as P
from protocol import framing as F


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


def test_error_replies_name_the_field_at_fault():
    r = P.error_reply("r", P.E_FORBIDDEN, "outside", field="source")
    assert r["field"] == "source" and "job_id" not in r
    assert "field" not in P.error_reply("r", P.E_BUSY, "later", job_id="j")


def test_reply_and_error_reply():
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
    monkeypatch.setattr(F, "MAX_FRAME_BYTES", 8)
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
    buf = F._as_buffer(zmq.Frame(b"abc"))
    assert isinstance(buf, memoryview) and buf.format == "B" and bytes(buf) == b"abc"
    assert F._as_bytes(zmq.Frame(b"abc")) == b"abc"
    assert F._as_bytes(np.array([1, 2], np.uint16)) == b"\x01\x00\x02\x00"
