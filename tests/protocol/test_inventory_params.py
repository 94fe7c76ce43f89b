"""protocol.inventory: the typed ``inventory`` request, its defaults and refusals."""

from __future__ import annotations

import dataclasses

import pytest

import protocol as P
from protocol.inventory import (ASSUMPTION_SOURCES, Assumptions, InventoryParams,
                                VectorLayer)
from protocol.rules import request_rules

DET = VectorLayer("/data/result.gpkg", "run 1")


def test_inventory_params_round_trip_through_a_validated_header():
    params = InventoryParams(
        detections=DET, out_dir="/tmp/inv", buildings={"path": "/data/roofs.geojson"},
        building_id="egid", zones=VectorLayer("/data/zones.gpkg"), zone_name="name",
        earlier=VectorLayer("/data/2021.gpkg", "detections"), title="Survey 2023",
        assumptions={"module_area_m2": 1.7, "tilt_deg": 30}, min_rectangularity=0.75,
        match_overlap=0.4, overwrite=False)
    assert params.buildings == VectorLayer("/data/roofs.geojson")
    assert params.assumptions == Assumptions(module_area_m2=1.7, tilt_deg=30.0)
    header = params.to_header(token="t", request_id="r1")
    assert header["type"] == "inventory" and header["id"] == "r1"
    assert header["detections"] == {"path": "/data/result.gpkg", "layer": "run 1"}
    assert header["buildings"] == {"path": "/data/roofs.geojson"}
    assert header["assumptions"] == {"module_area_m2": 1.7, "power_w_m2": 200.0,
                                     "packing_factor": 1.0, "tilt_deg": 30.0}
    assert P.validate_request(dict(header)) == header
    assert InventoryParams.from_header(header) == params


def test_defaults_travel_and_absent_fields_take_them():
    params = InventoryParams(detections=DET, out_dir="/o")
    header = params.to_header()
    assert {"buildings", "zones", "earlier", "title", "overwrite"}.isdisjoint(header)
    assert header["min_rectangularity"] == 0.8 and header["min_aspect"] == 1.1
    assert header["match_overlap"] == 0.5 and header["area_tolerance"] == 0.1
    assert header["area_tolerance_m2"] == 1.0
    bare = {"v": 1, "type": "inventory", "id": "x",
            "detections": {"path": "/data/result.gpkg", "layer": "run 1"}, "out_dir": "/o"}
    assert InventoryParams.from_header(P.validate_request(bare)) == params
    assert Assumptions.from_wire(None) == Assumptions() == Assumptions.from_wire({})
    assert Assumptions() == Assumptions(2.0, 200.0, 1.0, 0.0)
    assert set(ASSUMPTION_SOURCES) == set(Assumptions().to_wire())


def test_every_field_has_its_rule_in_the_schema():
    assert list(request_rules(InventoryParams)) == [
        f.name for f in dataclasses.fields(InventoryParams)]
    assert P.REQUEST_SCHEMAS["inventory"] == request_rules(InventoryParams)
    assert "inventory" in P.REQUEST_TYPES


@pytest.mark.parametrize("field, value, message", [
    ("out_dir", "", "inventory: field 'out_dir' must be a path of 1-4096 characters "
                    "without NUL"),
    ("min_rectangularity", 1.2, "inventory: field 'min_rectangularity' must be in "
                                "[0.0, 1.0]"),
    ("min_aspect", 0.9, "inventory: field 'min_aspect' must be in [1.0, 10.0]"),
    ("match_overlap", 0.0, "inventory: field 'match_overlap' must be in (0.0, 1.0]"),
    ("area_tolerance_m2", -1, "inventory: field 'area_tolerance_m2' must be in "
                              "[0.0, 1000000.0]"),
    ("building_id", "", "inventory: field 'building_id' must be a non-empty string of "
                        "at most 255 characters"),
    ("title", "t" * 201, "inventory: field 'title' must be a non-empty string of at "
                         "most 200 characters"),
])
def test_values_outside_the_schema_are_refused_before_sending(field, value, message):
    params = dataclasses.replace(InventoryParams(detections=DET, out_dir="/o"),
                                 **{field: value})
    with pytest.raises(P.ProtocolError) as ei:
        params.to_header()
    assert (ei.value.code, ei.value.message) == (P.E_BAD_REQUEST, message)


@pytest.mark.parametrize("header, message", [
    ({"out_dir": "/o"}, "inventory: missing field 'detections'"),
    ({"detections": {"path": "/a.gpkg"}}, "inventory: missing field 'out_dir'"),
    ({"detections": "/a.gpkg", "out_dir": "/o"},
     "inventory: field 'detections' must be an object {path, layer?}"),
    ({"detections": {"path": "/a.gpkg"}, "out_dir": "/o", "zones": {"layer": "z"}},
     "inventory: field 'zones' path must be a path of 1-4096 characters without NUL"),
    ({"detections": {"path": "/a.gpkg"}, "out_dir": "/o",
      "assumptions": {"power_w_m2": 0}},
     "inventory: field 'assumptions' power_w_m2 must be in [10.0, 500.0]"),
    ({"detections": {"path": "/a.gpkg"}, "out_dir": "/o", "model": "m"},
     "inventory: unknown field(s) ['model']"),
])
def test_malformed_requests_are_refused_word_for_word(header, message):
    with pytest.raises(P.ProtocolError) as ei:
        P.validate_request(dict(header, v=1, type="inventory", id="r"))
    assert (ei.value.code, ei.value.message) == (P.E_BAD_REQUEST, message)


def test_typed_values_refuse_bad_wire_forms():
    with pytest.raises(P.ProtocolError, match="assumptions tilt_deg"):
        Assumptions.from_wire({"tilt_deg": 90})
    with pytest.raises(P.ProtocolError, match="layer has unknown field"):
        VectorLayer.from_wire({"path": "/a", "kind": "file"})
    assert VectorLayer.from_wire(None) is None
    assert VectorLayer("/a").to_wire() == {"path": "/a"}
