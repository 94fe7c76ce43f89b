"""Typed request parameters: header round trips, conversions and refusals."""

from __future__ import annotations

import dataclasses

import pytest

import protocol as P
from protocol.params import (BatchParams, CorrectedFeature, DetectParams, FileSource,
                             PixelSource, PixelUpload, RetrainParams, ReviewedArea,
                             UploadSource, source_from_wire)

FILE = FileSource("/data/ortho.tif")
PIX = PixelSource("EPSG:31256", (0.1, 0.0, -1600.0, 0.0, -0.1, 338500.0), nodata=0)


def test_detect_params_round_trip_through_a_validated_header():
    params = DetectParams(source=FILE, model="pv-unet-efl0", extent=[1, 2, 3, 4],
                          extent_crs="EPSG:31256", threshold=0.4, bands=[3, 2, 1])
    header = params.to_header(token="secret", request_id="r1")
    assert header["type"] == "detect" and header["id"] == "r1"
    assert header["token"] == "secret"
    assert header["extent"] == [1.0, 2.0, 3.0, 4.0] and header["bands"] == [3, 2, 1]
    # fields left None are not sent: the daemon then uses the model card's values
    assert "min_area_m2" not in header and "orthogonalize" not in header
    assert P.validate_request(dict(header)) == header
    assert DetectParams.from_header(header) == params


def test_pixel_sources_and_wire_dicts_become_typed():
    params = DetectParams(source=PIX.to_wire(), model="m")
    assert params.source == PIX and isinstance(params.source, PixelSource)
    assert params.to_header()["source"] == {"kind": "pixels", "crs": "EPSG:31256",
                                            "transform": [0.1, 0.0, -1600.0, 0.0, -0.1,
                                                          338500.0],
                                            "nodata": 0}
    assert source_from_wire({"kind": "file", "path": "/x.tif"}) == FileSource("/x.tif")
    up = DetectParams(source={"kind": "upload", "upload_id": "u1"}, model="m")
    assert up.source == UploadSource("u1")
    assert up.to_header()["source"] == {"kind": "upload", "upload_id": "u1"}


def test_pixel_upload_round_trips_and_counts_its_bytes():
    spec = PixelUpload("EPSG:32651", [0.1, 0, 5, 0, -0.1, 7], width=300, height=200,
                       count=3, dtype="uint16", window_px=256)
    header = spec.to_header(token="t")
    assert header["type"] == "upload" and header["transform"] == [0.1, 0, 5, 0, -0.1, 7]
    assert "nodata" not in header and header["token"] == "t"
    assert PixelUpload.from_header(P.validate_request(header)) == spec
    assert spec.nbytes == 300 * 200 * 3 * 2 == P.upload_bytes(header)
    with pytest.raises(P.ProtocolError, match="exceeds"):
        PixelUpload("EPSG:1", (1, 0, 0, 0, -1, 0), 40_000, 40_000).to_header()


@pytest.mark.parametrize("bad", [{"kind": "file"}, {"kind": "s3", "path": "x"},
                                 {"kind": "pixels", "crs": "EPSG:1", "transform": [0] * 6}])
def test_malformed_sources_are_refused(bad):
    with pytest.raises(P.ProtocolError) as ei:
        source_from_wire(bad)
    assert ei.value.code == P.E_BAD_REQUEST


@pytest.mark.parametrize("field, value", [("threshold", 0.0), ("threshold", 1.5),
                                          ("batch_size", 0), ("extent", [3, 0, 1, 1]),
                                          ("simplify_m", -1.0)])
def test_values_outside_the_schema_are_refused_before_sending(field, value):
    params = dataclasses.replace(DetectParams(source=FILE, model="m"), **{field: value})
    with pytest.raises(P.ProtocolError, match=field):
        params.to_header()


def test_batch_params_hold_detect_params_and_round_trip():
    params = BatchParams(detect=DetectParams(source=FILE, model="m", threshold=0.3),
                         out_path="/tmp/out.gpkg", region_px=512, executor="ray")
    header = params.to_header()
    assert header["type"] == "batch" and header["threshold"] == 0.3
    assert header["out_path"] == "/tmp/out.gpkg" and header["region_px"] == 512
    assert BatchParams.from_header(header) == params
    with pytest.raises(P.ProtocolError, match="kind 'file'"):
        BatchParams(detect=DetectParams(source=PIX, model="m"),
                    out_path="/tmp/o.gpkg").to_header()
    with pytest.raises(P.ProtocolError, match="out_path"):
        BatchParams(detect=DetectParams(source=FILE, model="m"),
                    out_path="/tmp/o.shp").to_header()


def test_retrain_params_convert_features_and_areas():
    params = RetrainParams(source=FILE, model="m", crs="EPSG:31256",
                           features=[{"wkt": "POLYGON((0 0,1 0,1 1,0 0))",
                                      "class": "photovoltaic", "area": 0}],
                           reviewed=[{"extent": [0, 0, 5, 5], "holdout": False},
                                     ReviewedArea(extent=(5, 5, 9, 9), holdout=True)],
                           budget_s=30.0, steps=10)
    assert params.features == (CorrectedFeature("POLYGON((0 0,1 0,1 1,0 0))",
                                                "photovoltaic", None, 0),)
    assert params.reviewed[0] == ReviewedArea(extent=(0.0, 0.0, 5.0, 5.0), holdout=False)
    header = params.to_header()
    assert header["features"] == [{"wkt": "POLYGON((0 0,1 0,1 1,0 0))",
                                   "class": "photovoltaic", "area": 0}]
    assert header["reviewed"][1] == {"extent": [5.0, 5.0, 9.0, 9.0], "holdout": True}
    assert RetrainParams.from_header(header) == params
    with pytest.raises(P.ProtocolError, match="class"):
        RetrainParams(source=FILE, model="m", features=[{"wkt": "POINT (0 0)"}]).to_header()
