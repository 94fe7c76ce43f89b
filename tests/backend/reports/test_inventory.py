"""backend.reports.inventory on real detections (the pv01 held-out result) and on
hand-checked geometry: per-installation attributes, modules and capacity, the building
and zone each installation belongs to, and a result layer in degrees. Every expected
figure is computed here with shapely and pyproj (areas, rectangles, geodesic azimuths,
intersections), never with the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from pyproj import CRS, Geod, Transformer

from backend.reports.job import build_inventory
from protocol.inventory import Assumptions, InventoryParams, VectorLayer

from tests.support import ROOFS, write_polygons
from shapes import X0, Y0, rotated_rectangle

UTM51 = CRS.from_epsg(32651)
GEOD = Geod(ellps="WGS84")


def true_axis_azimuth(geom, crs) -> float:
    """The long side of ``geom``'s minimum rotated rectangle as a geodesic azimuth
    from true north (pyproj.Geod between its ends in WGS 84), folded into [0, 180)."""
    ring = np.asarray(shapely.minimum_rotated_rectangle(geom).exterior.coords)
    sides = [(ring[k], ring[k + 1]) for k in range(2)]
    a, b = max(sides, key=lambda s: np.hypot(*(s[1] - s[0])))
    to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
    (lon1, lon2), (lat1, lat2) = to_ll.transform([a[0], b[0]], [a[1], b[1]])
    return GEOD.inv(lon1, lat1, lon2, lat2)[0] % 180.0


def rectangle_sides(geom):
    ring = np.asarray(shapely.minimum_rotated_rectangle(geom).exterior.coords)
    s = sorted(np.hypot(*(ring[k + 1] - ring[k])) for k in range(2))
    return s[1], s[0]


def inventory(tmp_path, path, **kw):
    return build_inventory(InventoryParams(detections=VectorLayer(str(path)),
                                           out_dir=str(tmp_path), **kw))


# ------------------------------------------------------------ real detections

def test_attributes_of_the_heldout_detections(heldout, tmp_path):
    r = inventory(tmp_path, heldout.path)
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features]
    assert len(r.installations) == len(polys) >= 20
    assert r.crs == UTM51 and r.crs_note == ""
    with_azimuth = 0
    for inst, g, f in zip(r.installations, polys, heldout.features):
        assert inst.area_m2 == pytest.approx(g.area, rel=1e-9)
        assert inst.area_m2 == pytest.approx(f["area_m2"], abs=0.01)
        length, width = rectangle_sides(g)
        assert (inst.length_m, inst.width_m) == pytest.approx((length, width), abs=1e-3)
        rect = shapely.minimum_rotated_rectangle(g).area
        # (shapely's rectangle at coordinates of 3.6e6 m keeps about 5 digits)
        assert inst.rectangularity == pytest.approx(g.area / rect, abs=1e-4)
        if g.area / rect >= 0.8 and length / width >= 1.1:
            with_azimuth += 1
            expected = true_axis_azimuth(g, UTM51)
            got = inst.azimuth_deg
            assert min(abs(got - expected), 180 - abs(got - expected)) < 0.01, inst.inst_id
        else:
            assert inst.azimuth_deg is None and inst.flag in ("irregular", "square")
        assert (inst.score, inst.model, inst.model_version) == (
            pytest.approx(f["score"]), "pv-unet-efl0", "2.0.0")
        assert inst.kwp == pytest.approx(g.area * 200.0 / 1000.0)
        assert inst.modules == math.floor(g.area / 2.0 + 0.5)
        c = Transformer.from_crs(UTM51, 4326, always_xy=True).transform(
            g.centroid.x, g.centroid.y)
        assert (inst.lon, inst.lat) == pytest.approx(c, abs=1e-9)
    assert with_azimuth >= 10
    # the flat-roof arrays of the industrial site run at about 69-70° from true north
    site = [i.azimuth_deg for i in r.installations
            if i.lon > 120.42 and i.azimuth_deg is not None and i.area_m2 > 20]
    assert site and all(68.0 < a < 71.5 for a in site)
    total = sum(g.area for g in polys)
    assert r.total.area_m2 == pytest.approx(total)
    assert r.total.kwp == pytest.approx(total * 0.2)
    assert r.total.installations == len(polys)
    assert list(r.per_class) == ["photovoltaic"]
    assert r.models == {("pv-unet-efl0", "2.0.0"): len(polys)}


def test_assumptions_set_modules_and_capacity(heldout, tmp_path):
    a = Assumptions(module_area_m2=1.7, power_w_m2=180.0, packing_factor=0.9,
                    tilt_deg=30.0)
    r = inventory(tmp_path, heldout.path, assumptions=a)
    for inst in r.installations:
        module_m2 = inst.area_m2 * 0.9 / math.cos(math.radians(30.0))
        assert inst.module_m2 == pytest.approx(module_m2)
        assert inst.modules == math.floor(module_m2 / 1.7 + 0.5)
        assert inst.kwp == pytest.approx(module_m2 * 0.18)
    assert r.total.modules == sum(i.modules for i in r.installations)


def test_a_rotated_rectangle_gets_its_true_azimuth(tmp_path):
    """A 12 x 3 m array at grid bearing 30° in UTM 51N, west of the zone's central
    meridian: its azimuth from true north is smaller by the meridian convergence."""
    g = rotated_rectangle(12.0, 3.0, 30.0)
    path = write_polygons(tmp_path / "r.gpkg", [g], "EPSG:32651")
    inst = inventory(tmp_path, path).installations[0]
    expected = true_axis_azimuth(g, UTM51)
    assert 28.0 < expected < 29.0     # convergence about -1.4° here
    assert inst.azimuth_deg == pytest.approx(expected, abs=0.01)
    assert inst.area_m2 == pytest.approx(36.0) and inst.flag == ""


# ------------------------------------------------------------ buildings and zones

def _roofs():
    from pyogrio.raw import read
    _, _, wkb, data = read(str(ROOFS))
    return list(shapely.from_wkb(wkb)), list(data[0])


def expected_owner(geom, polygons):
    """Index of the polygon ``geom`` overlaps most, or None (computed here)."""
    areas = [geom.intersection(p).area for p in polygons]
    return int(np.argmax(areas)) if max(areas, default=0) > 0 else None


def test_installations_are_counted_on_the_roofs_they_cover(heldout, tmp_path):
    roofs, names = _roofs()
    r = inventory(tmp_path, heldout.path, buildings=VectorLayer(str(ROOFS)),
                  building_id="building")
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features]
    owners = [expected_owner(g, roofs) for g in polys]
    assert [i.building for i in r.installations] == [
        None if o is None else names[o] for o in owners]
    # the hand facts: arrays on C, D and G; none on A, B, E, F. G holds two: its array
    # as detected on its own tile and on the overlapping PV01_325237_1203816 (one site
    # in two tiles); the first one reaches onto the eaves of the house E
    held = {n for n in names if r.buildings.totals[n].installations}
    assert held == {"C", "D", "G"}
    on_g = [g for g, o in zip(polys, owners) if o == names.index("G")]
    assert len(on_g) == 2
    assert max(g.intersection(roofs[names.index("E")]).area for g in on_g) > 0.1
    for n, roof in zip(names, roofs):
        mine = [g for g, o in zip(polys, owners) if o is not None and names[o] == n]
        t = r.buildings.totals[n]
        assert t.installations == len(mine)
        assert t.area_m2 == pytest.approx(sum(g.area for g in mine))
        assert t.kwp == pytest.approx(0.2 * sum(g.area for g in mine))
    outside = [i for i, o in enumerate(owners) if o is None]
    assert [i.inst_id - 1 for i in r.buildings.outside] == outside
    assert len(outside) == len(polys) - 4


def test_a_panel_crossing_two_buildings_belongs_to_the_one_it_covers_most(tmp_path):
    """Two buildings side by side; a panel 60 % on the second one, one on neither,
    one exactly half on each (the first building wins the tie)."""
    b1 = shapely.box(X0, Y0, X0 + 10, Y0 + 10)
    b2 = shapely.box(X0 + 10, Y0, X0 + 20, Y0 + 10)
    crossing = shapely.box(X0 + 8, Y0 + 2, X0 + 13, Y0 + 4)      # 2 m on b1, 3 m on b2
    away = shapely.box(X0 + 30, Y0, X0 + 33, Y0 + 2)
    tie = shapely.box(X0 + 8, Y0 + 6, X0 + 12, Y0 + 8)
    touching = shapely.box(X0 + 20, Y0 + 6, X0 + 22, Y0 + 8)     # shares an edge only
    det = write_polygons(tmp_path / "d.gpkg", [crossing, away, tie, touching],
                         "EPSG:32651")
    bld = write_polygons(tmp_path / "b.gpkg", [b1, b2], "EPSG:32651",
                         {"name": ["first", "second"]})
    r = inventory(tmp_path, det, buildings=VectorLayer(str(bld)), building_id="name")
    assert [i.building for i in r.installations] == ["second", None, "first", None]
    assert r.buildings.totals["second"].area_m2 == pytest.approx(crossing.area)
    assert r.buildings.totals["first"].area_m2 == pytest.approx(tie.area)
    assert [i.inst_id for i in r.buildings.outside] == [2, 4]
    # without a name attribute, buildings are named by their feature id
    r = inventory(tmp_path, det, buildings=VectorLayer(str(bld)))
    assert [i.building for i in r.installations] == ["2", None, "1", None]


def test_zones_add_up_the_installations_they_hold(heldout, tmp_path):
    """Three zones around the pv01 sites (x in EPSG:32651): the two western sites,
    the industrial site in the east, and an empty one; the site at 254300 lies in none."""
    west = shapely.box(253000, 3600000, 254200, 3602000)
    east = shapely.box(257500, 3600000, 259000, 3602000)
    empty = shapely.box(240000, 3590000, 241000, 3591000)
    zones = write_polygons(tmp_path / "z.gpkg", [west, east, empty], "EPSG:32651",
                           {"district": ["West", "East", "Empty"]})
    r = inventory(tmp_path, heldout.path, zones=VectorLayer(str(zones)),
                  zone_name="district")
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features]
    for name, zone in (("West", west), ("East", east), ("Empty", empty)):
        mine = [g for g in polys if zone.contains(g)]
        assert r.zones.totals[name].installations == len(mine)
        assert r.zones.totals[name].area_m2 == pytest.approx(sum(g.area for g in mine))
    none = [g for g in polys if not (west.intersects(g) or east.intersects(g))]
    assert none and len(r.zones.outside) == len(none)
    assert r.zones.totals["Empty"].installations == 0
    with pytest.raises(Exception, match="has no attribute 'name'"):
        inventory(tmp_path, heldout.path, zones=VectorLayer(str(zones)), zone_name="name")


# ------------------------------------------------------------ CRS

def test_a_layer_in_degrees_is_computed_in_its_utm_zone(heldout, tmp_path):
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features]
    to_ll = Transformer.from_crs(UTM51, 4326, always_xy=True)
    in_degrees = [shapely.transform(g, lambda c: np.column_stack(
        to_ll.transform(c[:, 0], c[:, 1]))) for g in polys]
    path = write_polygons(tmp_path / "ll.gpkg", in_degrees, "EPSG:4326")
    r = inventory(tmp_path, path)
    assert r.crs == UTM51
    assert "geographic (degrees)" in r.crs_note and "EPSG:32651" in r.crs_note
    for inst, g in zip(r.installations, polys):
        assert inst.area_m2 == pytest.approx(g.area, rel=1e-6)


def test_a_swiss_roof_in_degrees_matches_its_geodesic_area(tmp_path):
    """A 20 x 10 m roof array near Bern given in WGS 84 degrees: computed in UTM 32N,
    its area agrees with the geodesic area (pyproj.Geod) to 0.1 %."""
    lon, lat = 7.4474, 46.9480
    dlon = 20.0 / (111320.0 * math.cos(math.radians(lat)))
    dlat = 10.0 / 110540.0
    g = shapely.box(lon, lat, lon + dlon, lat + dlat)
    path = write_polygons(tmp_path / "bern.gpkg", [g], "EPSG:4326")
    r = inventory(tmp_path, path)
    assert r.crs == CRS.from_epsg(32632)
    geodesic = abs(GEOD.geometry_area_perimeter(g)[0])
    assert r.installations[0].area_m2 == pytest.approx(geodesic, rel=1e-3)
    assert r.installations[0].azimuth_deg == pytest.approx(90.0, abs=0.5)


def test_web_mercator_is_reprojected_too(heldout, tmp_path):
    polys = [shapely.from_wkt(f["wkt"]) for f in heldout.features[:3]]
    to_wm = Transformer.from_crs(UTM51, 3857, always_xy=True)
    wm = [shapely.transform(g, lambda c: np.column_stack(
        to_wm.transform(c[:, 0], c[:, 1]))) for g in polys]
    r = inventory(tmp_path, write_polygons(tmp_path / "wm.gpkg", wm, "EPSG:3857"))
    assert r.crs == UTM51 and "distorts areas by +4" in r.crs_note
    for inst, g in zip(r.installations, polys):
        assert inst.area_m2 == pytest.approx(g.area, rel=1e-5)
