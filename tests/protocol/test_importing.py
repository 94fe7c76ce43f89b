"""The ``import_model`` request: its typed parameters, their checks, and the message
that names missing metadata."""

from __future__ import annotations

import pytest

import protocol as P
from protocol.importing import (DEEPNESS_DEFAULTS, ImportParams, ImportValues,
                                check_new_model_id, check_values, missing_keys,
                                missing_message, onnx_only_message)


def test_params_travel_as_a_checked_header_and_back():
    params = ImportParams("/data/roads.onnx", ImportValues(resolution=10.0, tiles_size=256,
                                                           standardization_std=(1, 2, 3)),
                          "roads")
    header = params.to_header(request_id="r1")
    assert header["type"] == "import_model" and header["id"] == "r1"
    assert header["values"] == {"resolution": 10.0, "tiles_size": 256,
                                "standardization_std": [1.0, 2.0, 3.0]}
    assert P.validate_request(header) is header
    back = ImportParams.from_header(header)
    assert back == params and isinstance(back.values, ImportValues)
    assert ImportParams("/m.ONNX").to_header()["path"] == "/m.ONNX"  # values, id: absent
    assert "values" not in ImportParams("/m.onnx").to_header()


@pytest.mark.parametrize("fields, message", [
    ({"path": "/m.tif"}, "field 'path' must be the path of an .onnx file"),
    ({"path": "/m.onnx", "values": {"resolution": 0}}, "'resolution' must be in [0.01"),
    ({"path": "/m.onnx", "values": {"seg_thresh": 0}}, "'seg_thresh' must be in (0.0, 1.0]"),
    ({"path": "/m.onnx", "values": {"tiles_size": 16}}, "'tiles_size' must be an integer"),
    ({"path": "/m.onnx", "values": {"model_type": "Classifier"}}, "'model_type' must be one of"),
    ({"path": "/m.onnx", "values": {"standardization_std": [1, 0, 1]}}, "three positive"),
    ({"path": "/m.onnx", "values": {"colour": 1}}, "unknown field(s) ['colour']"),
    ({"path": "/m.onnx", "model": "a@1"}, "field 'model' must be 1-64 characters"),
])
def test_bad_fields_are_refused_with_the_field_named(fields, message):
    with pytest.raises(P.ProtocolError) as err:
        P.request("import_model", **fields)
    assert err.value.code == P.E_BAD_REQUEST and message in err.value.message


def test_checkers():
    assert check_values({}) is None and check_values([]) == "must be an object"
    assert check_values(dict(DEEPNESS_DEFAULTS)) is None
    assert check_new_model_id("roads-v2.1") is None
    assert check_new_model_id(".hidden") and check_new_model_id("x" * 65)


def test_missing_keys_read_back_the_message():
    msg = missing_message(["resolution", "seg_thresh"], "roads (v2).onnx")
    assert msg.startswith("the model file lacks the metadata resolution, seg_thresh")
    assert "resolution 3.0" in msg and "seg_thresh 0.5" in msg
    assert missing_keys(msg) == ["resolution", "seg_thresh"]
    assert missing_keys("the raster path is outside the folders") == []
    assert "needs PyTorch weights" in onnx_only_message("roads")
    assert "imported" in P.REPLY_TYPES
