"""backend.reports.job and outputs: what an ``inventory`` job writes (GeoPackage layers,
CSV, HTML) on the held-out detections with roofs, zones and an earlier date, and how
it refuses layers it cannot use. Expected figures are recomputed here from the
detections with shapely."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from pyogrio import list_layers
from pyogrio.raw import read

from backend.reports.job import OUTPUT_FILES, run_inventory
from protocol.errors import E_INVALID_INPUT, E_NOT_FOUND, JobCancelled, JobError
from protocol.inventory import InventoryParams, VectorLayer

from tests.support import ROOFS, write_polygons


def _table(path, layer):
    meta, _, wkb, data = read(str(path), layer=layer)
    rows = {str(n): list(col) for n, col in zip(meta["fields"], data)}
    return meta, (None if wkb is None else list(shapely.from_wkb(wkb))), rows


@pytest.fixture(scope="module")
def job(heldout, earlier, tmp_path_factory):
    out = tmp_path_factory.mktemp("inventory")
    zones = write_polygons(out.parent / "zones.gpkg",
                           [shapely.box(253000, 3600000, 254500, 3602000)], "EPSG:32651",
                           {"name": ["West"]})
    params = InventoryParams(
        detections=VectorLayer(str(heldout.path), "detections"), out_dir=str(out / "o"),
        buildings=VectorLayer(str(ROOFS)), building_id="building",
        zones=VectorLayer(str(zones)), zone_name="name",
        earlier=VectorLayer(str(earlier.path)), title="Test <inventory>")
    progress = []
    result = run_inventory(params.to_header(), [], lambda f, m: progress.append((f, m)))
    return result, params, progress


def test_the_job_reports_files_and_totals(job, heldout):
    result, params, progress = job
    stats = result["stats"]
    assert result["features"] == [] and "UTM zone 51N" in result["crs"]
    assert stats["outputs"] == {k: f"{params.out_dir}/{name}"
                                for k, name in OUTPUT_FILES.items()}
    areas = [shapely.from_wkt(f["wkt"]).area for f in heldout.features]
    assert stats["totals"]["installations"] == len(areas)
    assert stats["totals"]["area_m2"] == pytest.approx(sum(areas), abs=1e-3)
    assert stats["totals"]["kwp"] == pytest.approx(0.2 * sum(areas), abs=1e-3)
    assert stats["buildings"] == {"count": 7, "with_installations": 3,
                                  "outside": len(areas) - 4}
    assert stats["change"] == {"new": 1, "removed": 1, "grown": 1, "shrunk": 0,
                               "unchanged": len(areas) - 2}
    assert stats["models"] == [{"model": "pv-unet-efl0", "model_version": "2.0.0",
                                "installations": len(areas)}]
    assert stats["crs_note"] == "" and stats["warnings"] == []
    assert json.loads(json.dumps(stats)) == stats
    assert progress[0][0] == 0.0 and progress[-1] == (1.0, "done")


def test_the_geopackage_holds_every_table(job, heldout):
    result, params, _ = job
    gpkg = result["stats"]["outputs"]["gpkg"]
    assert sorted(n for n, _ in list_layers(gpkg)) == [
        "buildings", "changes", "installations", "totals", "zones"]
    meta, geoms, rows = _table(gpkg, "installations")
    assert meta["crs"] == "EPSG:32651" and meta["geometry_type"] == "MultiPolygon"
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features]
    assert [round(g.area, 6) for g in geoms] == [round(g.area, 6) for g in polys]
    assert rows["area_m2"] == pytest.approx([g.area for g in polys])
    assert rows["kwp"] == pytest.approx([0.2 * g.area for g in polys])
    flagged = [i for i, f in enumerate(rows["shape_flag"]) if f]
    assert flagged and all(np.isnan(rows["azimuth_deg"][i]) for i in flagged)
    assert rows["building"].count("G") == 2 and rows["building"].count(None) == 24
    _, bgeoms, b = _table(gpkg, "buildings")
    assert b["building"] == list("ABCDEFG") and len(bgeoms) == 7
    for name, roof, n, area, cover in zip(b["building"], bgeoms, b["installations"],
                                          b["area_m2"], b["coverage"]):
        mine = [g for g, owner in zip(polys, rows["building"]) if owner == name]
        assert n == len(mine) and area == pytest.approx(sum(g.area for g in mine))
        assert cover == pytest.approx(area / roof.area)
    _, none, totals = _table(gpkg, "totals")
    assert none is None and totals["class"] == ["photovoltaic", "all"]
    assert totals["installations"] == [len(polys)] * 2
    _, _, ch = _table(gpkg, "changes")
    assert sorted(ch["status"]) == sorted(["new", "removed", "grown"]
                                          + ["unchanged"] * (len(polys) - 2))


def test_the_csv_and_the_report(job, heldout):
    result, params, _ = job
    with open(result["stats"]["outputs"]["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(heldout.features)
    assert sum(float(r["area_m2"]) for r in rows) == pytest.approx(
        sum(shapely.from_wkt(f["wkt"]).area for f in heldout.features), abs=1e-3)
    assert {r["azimuth_deg"] for r in rows if r["shape_flag"]} == {""}
    text = open(result["stats"]["outputs"]["html"], encoding="utf-8").read()
    assert "<h1>Test &lt;inventory&gt;</h1>" in text
    t = result["stats"]["totals"]
    assert f"{t['area_m2']:,.1f}" in text and f"{t['kwp']:,.1f}" in text
    assert text.count("data:image/png;base64,") == 3
    assert "sonnendach.ch" in text and "IEC 60904-3" in text


def test_outputs_are_not_replaced_when_overwrite_is_false(job):
    _, params, _ = job
    again = InventoryParams(detections=params.detections, out_dir=params.out_dir,
                            overwrite=False)
    with pytest.raises(JobError) as ei:
        run_inventory(again, [])
    assert (ei.value.code, ei.value.field) == (E_INVALID_INPUT, "out_dir")
    assert "already holds an inventory" in ei.value.message


def test_layers_it_cannot_use_are_refused(tmp_path, heldout):
    det = VectorLayer(str(heldout.path))
    cases = [
        (dict(detections=VectorLayer(str(tmp_path / "none.gpkg"))), E_NOT_FOUND,
         "detections", "does not exist"),
        (dict(detections=det, buildings=VectorLayer(str(heldout.path), "nope")),
         E_INVALID_INPUT, "buildings", "cannot be read"),
        (dict(detections=VectorLayer(str(write_polygons(
            tmp_path / "lines.gpkg", [shapely.LineString([(0, 0), (1, 1)])],
            "EPSG:32651")))), E_INVALID_INPUT, "detections", "has no polygons"),
        (dict(detections=det, buildings=VectorLayer(str(ROOFS)), building_id="egid"),
         E_INVALID_INPUT, "buildings", "has no attribute 'egid'"),
    ]
    for kw, code, field, words in cases:
        with pytest.raises(JobError) as ei:
            run_inventory(InventoryParams(out_dir=str(tmp_path / "o"), **kw), [])
        assert (ei.value.code, ei.value.field) == (code, field), kw
        assert words in ei.value.message
    with pytest.raises(JobCancelled):
        run_inventory(InventoryParams(detections=det, out_dir=str(tmp_path / "c")), [],
                      cancelled=lambda: True)


def test_an_empty_result_layer_makes_an_empty_inventory(tmp_path):
    from pyogrio.raw import write
    path = tmp_path / "empty.gpkg"
    write(str(path), np.array([], dtype=object), [np.array([], dtype=object)], ["class"],
          layer="detections", driver="GPKG", geometry_type="MultiPolygon",
          crs="EPSG:32651")
    stats = run_inventory(InventoryParams(detections=VectorLayer(str(path)),
                                          out_dir=str(tmp_path / "o")), [])["stats"]
    assert stats["totals"] == {"installations": 0, "area_m2": 0.0, "module_m2": 0.0,
                               "modules": 0, "kwp": 0.0}
    html = open(stats["outputs"]["html"], encoding="utf-8").read()
    assert "<b>0</b><span>installations</span>" in html
