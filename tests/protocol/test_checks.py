"""protocol.checks: every field checker's verdict and message, word for word."""

from __future__ import annotations

import pytest

from protocol import checks as C
from protocol import framing as F


# ----------------------------------------------------------------------------- checkers, exactly


def test_number_and_short_helpers():
    for x, ok in [(1, True), (-2.5, True), (0, True), (True, False), ("1", False),
                  (None, False), (10 ** 400, False), (float("nan"), False),
                  (float("inf"), False), (2 ** 63, True)]:
        assert C.is_number(x) is ok, x
    assert C.short("abc") == "'abc'"
    assert C.short("x" * 58) == "'" + "x" * 58 + "'"                 # 60: kept
    assert C.short("x" * 59) == "'" + "x" * 56 + "..."              # 61: cut to 60
    assert C.short(list(range(100)), 20) == "[0, 1, 2, 3, 4, 5..."
    assert len(C.short(list(range(100)), 20)) == 20

    class Bad:
        def __repr__(self):
            raise RecursionError()
    assert C.short(Bad()) == "<Bad>"


@pytest.mark.parametrize("make, value, message", [
    (lambda: C.num_range(0.0, 1.0, lo_open=True), 0.0, "must be in (0.0, 1.0]"),
    (lambda: C.num_range(0.0, 1.0, lo_open=True), 1e-12, None),
    (lambda: C.num_range(0.0, 1.0, lo_open=True), 1.0, None),
    (lambda: C.num_range(0.0, 1.0, lo_open=True), 1.000001, "must be in (0.0, 1.0]"),
    (lambda: C.num_range(0.0, 1.0), 0.0, None),
    (lambda: C.num_range(0.0, 1.0), -1e-12, "must be in [0.0, 1.0]"),
    (lambda: C.num_range(0.0, 1.0), "0.5", "must be a finite number"),
    (lambda: C.num_range(0.0, 1.0), True, "must be a finite number"),
    (lambda: C.int_range(1, 256), 0, "must be an integer in [1, 256]"),
    (lambda: C.int_range(1, 256), 1, None),
    (lambda: C.int_range(1, 256), 256, None),
    (lambda: C.int_range(1, 256), 257, "must be an integer in [1, 256]"),
    (lambda: C.int_range(1, 256), True, "must be an integer in [1, 256]"),
    (lambda: C.int_range(1, 256), 2.0, "must be an integer in [1, 256]"),
    (lambda: C.string(5), "abcde", None),
    (lambda: C.string(5), "abcdef", "must be a non-empty string of at most 5 characters"),
    (lambda: C.string(5), "", "must be a non-empty string of at most 5 characters"),
    (lambda: C.string(5), 5, "must be a non-empty string of at most 5 characters"),
    (lambda: C.string(), "a" * 256, None),
    (lambda: C.string(), "a" * 257, "must be a non-empty string of at most 256 characters"),
    (lambda: C.one_of("local", "ray"), "ray", None),
    (lambda: C.one_of("local", "ray"), "RAY", "must be one of ['local', 'ray']"),
    (lambda: C.check_boolean, False, None), (lambda: C.check_boolean, 0, "must be true or false"),
    (lambda: C.check_boolean, True, None), (lambda: C.check_boolean, "true", "must be true or false"),
    (lambda: C.check_optional_string, None, None), (lambda: C.check_optional_string, "EPSG:2056", None),
    (lambda: C.check_optional_string, "",
     "must be a non-empty string of at most 20000 characters"),
    (lambda: C.check_optional_string, "x" * 20001,
     "must be a non-empty string of at most 20000 characters"),
    (lambda: C.check_token, "", None), (lambda: C.check_token, "t" * 256, None), (lambda: C.check_token, "t" * 257, "must be a string"),
    (lambda: C.check_token, 5, "must be a string"),
    (lambda: C.check_nodata, None, None), (lambda: C.check_nodata, 0, None), (lambda: C.check_nodata, "0", "must be a number or null"),
    (lambda: C.check_bands, [1, 2, 3], None), (lambda: C.check_bands, [1] * 16, None), (lambda: C.check_bands, [1024], None),
    (lambda: C.check_bands, [1] * 17, "must be a list of 1-based band numbers"),
    (lambda: C.check_bands, [1025], "must be a list of 1-based band numbers"),
    (lambda: C.check_bands, [0], "must be a list of 1-based band numbers"),
    (lambda: C.check_bands, (1, 2, 3), "must be a list of 1-based band numbers"),
    (lambda: C.check_extent, [0, 0, 1, 1], None),
    (lambda: C.check_optional_extent, None, None),           # the whole raster
    (lambda: C.check_optional_extent, [0, 0, 1, 1], None),
    (lambda: C.check_optional_extent, [1, 0, 0, 1],
     "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: C.check_extent, None, "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: C.check_extent, [0, 5, 1, 10], None),          # each axis against its own
    (lambda: C.check_extent, [2, 0, 1, 10], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: C.check_extent, [0, 0, 1], "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: C.check_extent, (0, 0, 1, 1), "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: C.check_extent, [0, 0, 1, "1"], "must be [xmin, ymin, xmax, ymax], four finite numbers"),
    (lambda: C.check_extent, [0, 0, 0, 1], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: C.check_extent, [0, 1, 1, 1], "is empty: xmin must be < xmax and ymin < ymax"),
    (lambda: C.check_transform, [0.1, 0, 0, 0, -0.1, 0], None),
    (lambda: C.check_transform, [0, 1, 0, 1, 0, 0], None),                 # rotated 90 degrees
    (lambda: C.check_transform, [1, 2, 0, 2, 4, 0], "is singular (zero pixel size)"),
    (lambda: C.check_transform, [1, 0, 0, 0, 1, 0, 0],
     "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"),
    (lambda: C.check_transform, [1, 0, 0, 0, 1, None],
     "must be six finite numbers (a, b, c, d, e, f) of a GDAL-order affine"),
    (lambda: C.check_gpkg_path, "/out/a.GPKG", None),
    (lambda: C.check_gpkg_path, "a.gpkg" + "x" * 0, None),
    (lambda: C.check_gpkg_path, "/out/a.shp", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: C.check_gpkg_path, "a\x00.gpkg", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: C.check_gpkg_path, "/" + "a" * 4090 + ".gpkg", None),                  # 4096
    (lambda: C.check_gpkg_path, "/" + "a" * 4091 + ".gpkg",
     "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: C.check_gpkg_path, "", "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: C.check_gpkg_path, 5, "must be the path of a .gpkg file (at most 4096 characters)"),
    (lambda: C.check_layer_name, "a", None),
    (lambda: C.check_layer_name, "det_2024-a", None), (lambda: C.check_layer_name, "a" * 63, None),
    (lambda: C.check_layer_name, "a" * 64, "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: C.check_layer_name, "", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: C.check_layer_name, "a b", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: C.check_layer_name, "é", "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
    (lambda: C.check_layer_name, 7, "must be 1-63 characters of A-Z, a-z, 0-9, '_' or '-'"),
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
    assert C.check_source(source, allow_upload=upload) == message
    if not upload:
        assert C.check_source(source) == message


def test_batch_sources_are_files():
    assert C.check_file_source(_FILE) is None
    assert C.check_file_source(_PIXELS) == ("must be of kind 'file': a batch job reads "
                                             "the raster again when it resumes")
    assert C.check_file_source({"kind": "file"}) == ("of kind 'file' needs a non-empty "
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
    ([{"wkt": "POINT (0 0)", "class": "pv", "review": state} for state in
      ("pending", "accepted", "deleted", "edited", "added", None)], None),
    ([{"wkt": "POINT (0 0)", "class": "pv", "review": "accepted"},
      {"wkt": "POINT (1 1)", "class": "pv", "review": "approved"}],
     "[1] 'review' must be one of ['pending', 'accepted', 'deleted', 'edited', 'added']"),
    ([{"wkt": "POINT (0 0)", "class": "pv", "review": "Accepted"}],
     "[0] 'review' must be one of ['pending', 'accepted', 'deleted', 'edited', 'added']"),
])
def test_check_features_word_for_word(features, message):
    assert C.check_features(features) == message


def test_check_features_limit(monkeypatch):
    monkeypatch.setattr(C, "MAX_RETRAIN_FEATURES", 2)
    two = [{"wkt": "POINT (0 0)", "class": "pv"}] * 2
    assert C.check_features(two) is None
    assert C.check_features(two * 2) == "must be a list of at most 2 features"


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
    assert C.check_reviewed(areas) == message


def test_check_reviewed_limit(monkeypatch):
    monkeypatch.setattr(C, "MAX_REVIEWED_AREAS", 2)
    assert C.check_reviewed([{}, {}]) is None
    assert C.check_reviewed([{}] * 3) == "must be a list of 1 to 2 reviewed areas"


def test_upload_size_limit():
    header = {"width": 1024, "height": 1024, "count": 3, "dtype": "uint16"}
    assert C.upload_bytes(header) == 1024 * 1024 * 3 * 2
    assert C.check_upload(header) is None
    exact = {"width": 16384, "height": 16384, "count": 4, "dtype": "uint8"}   # 1 GiB
    assert C.upload_bytes(exact) == F.MAX_UPLOAD_BYTES == 1 << 30
    assert C.check_upload(exact) is None
    over = dict(exact, width=16385)
    assert C.check_upload(over) == ("the image of 16385 x 16384 pixels (1024 MiB) "
                                     "exceeds the 1024 MiB an upload may hold; detect in "
                                     "a smaller extent")
    assert C.check_upload(dict(exact, dtype="float32")).startswith(
        "the image of 16384 x 16384 pixels (4096 MiB) exceeds")


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
    assert C.check_stretch(stretch) == message


# ----------------------------------------------------------------------------- inventory

@pytest.mark.parametrize("value, message", [
    ("/a", None), ("p" * 4096, None),
    ("p" * 4097, "must be a path of 1-4096 characters without NUL"),
    ("", "must be a path of 1-4096 characters without NUL"),
    ("a\x00b", "must be a path of 1-4096 characters without NUL"),
    (None, "must be a path of 1-4096 characters without NUL"),
    (["/a"], "must be a path of 1-4096 characters without NUL"),
])
def test_check_path_word_for_word(value, message):
    assert C.check_path(value) == message


_LAYER_MSG = "layer must be a non-empty string of at most 255 characters"


@pytest.mark.parametrize("value, message", [
    ({"path": "/d/a.gpkg"}, None),
    ({"path": "/d/a.gpkg", "layer": "run 1 é"}, None),
    ({"path": "/d/a.gpkg", "layer": None}, None),
    ({"path": "/d/a.gpkg", "layer": "l" * 255}, None),
    ({"path": "/d/a.gpkg", "layer": "l" * 256}, _LAYER_MSG),
    ({"path": "/d/a.gpkg", "layer": ""}, _LAYER_MSG),
    ({"path": "/d/a.gpkg", "layer": 1}, _LAYER_MSG),
    ({"path": ""}, "path must be a path of 1-4096 characters without NUL"),
    ({}, "path must be a path of 1-4096 characters without NUL"),
    ({"path": "/a", "crs": "x", "band": 1}, "has unknown field(s) ['band', 'crs']"),
    ("/d/a.gpkg", "must be an object {path, layer?}"),
    (None, "must be an object {path, layer?}"),
])
def test_check_vector_layer_word_for_word(value, message):
    assert C.check_vector_layer(value) == message
    assert C.check_optional_vector_layer(value) == (None if value is None else message)


@pytest.mark.parametrize("value, message", [
    ({}, None),
    ({"module_area_m2": 10.0, "power_w_m2": 10.0, "packing_factor": 1.0,
      "tilt_deg": 0.0}, None),
    ({"module_area_m2": 0.1}, "module_area_m2 must be in (0.1, 10.0]"),
    ({"module_area_m2": 0.1000001}, None),
    ({"module_area_m2": 10.01}, "module_area_m2 must be in (0.1, 10.0]"),
    ({"power_w_m2": 9.99}, "power_w_m2 must be in [10.0, 500.0]"),
    ({"power_w_m2": 500.0}, None),
    ({"power_w_m2": 500.5}, "power_w_m2 must be in [10.0, 500.0]"),
    ({"packing_factor": 0.0}, "packing_factor must be in (0.0, 1.0]"),
    ({"packing_factor": 1.01}, "packing_factor must be in (0.0, 1.0]"),
    ({"tilt_deg": 75.0}, None),
    ({"tilt_deg": 75.1}, "tilt_deg must be in [0.0, 75.0]"),
    ({"tilt_deg": -0.1}, "tilt_deg must be in [0.0, 75.0]"),
    ({"tilt_deg": "30"}, "tilt_deg must be a finite number"),
    ({"tilt_deg": True}, "tilt_deg must be a finite number"),
    ({"efficiency": 0.2, "area": 1}, "has unknown field(s) ['area', 'efficiency']"),
    ([2.0], "must be an object"),
])
def test_check_assumptions_word_for_word(value, message):
    assert C.check_assumptions(value) == message


def test_check_layer_field():
    assert C.check_layer_field("Gemeinde name") is None
    assert C.check_layer_field("f" * 255) is None
    assert C.check_layer_field("f" * 256) == ("must be a non-empty string of at most "
                                              "255 characters")
