"""backend.inference.grid: grid planning on small in-memory rasters: the ground scale
of a CRS against closed-form values (UTM's 0.9996, Web Mercator on the WGS 84
ellipsoid), the grid CRS it implies, and the planned grid's origin, size, limits and
warnings for extents in the raster's CRS and in others (the bands it reads:
tests/backend/inference/test_bands.py)."""

from __future__ import annotations

import math

import pytest
from affine import Affine
from rasterio.crs import CRS

import protocol as P
from backend.inference.grid import (MAX_GRID_PIXELS, _source_gsd, grid_crs, ground_scale,
                                    plan_grid)
from protocol.errors import InputError
from tests.support import FAR_GSD, open_raster, small_grid

#: 100 x 50 px of 0.3 m in MGI / Austria GK East (Vienna): x -1700..-1670, y 338545..338560.
VIENNA_GRID = small_grid()

A_WGS84 = 6378137.0
E2_WGS84 = 0.0066943799901413165


def _mercator_y(lat_deg: float) -> float:
    return A_WGS84 * math.log(math.tan(math.pi / 4 + math.radians(lat_deg) / 2))


def _mercator_scale(lat_deg: float):
    """Ground metres per Web Mercator unit (east, north) on the WGS 84 ellipsoid: the
    parallel's radius and the meridian's radius of curvature over the sphere's ``a``
    stretched by ``1 / cos(lat)``."""
    phi = math.radians(lat_deg)
    w = 1 - E2_WGS84 * math.sin(phi) ** 2
    return math.cos(phi) / math.sqrt(w), (1 - E2_WGS84) * math.cos(phi) / w ** 1.5


# ----------------------------------------------------------------------------- scale

def test_ground_scale_of_utm_at_its_central_meridian_is_1_over_0_9996():
    east, north = ground_scale(CRS.from_epsg(32633), 500000.0, 5300000.0, 10.0)
    assert east == pytest.approx(1 / 0.9996, rel=1e-8)
    assert north == pytest.approx(1 / 0.9996, rel=1e-8)


@pytest.mark.parametrize("lat", [0.5, 48.0, 60.0])
def test_ground_scale_of_web_mercator_is_the_ellipsoid_s(lat):
    x = A_WGS84 * math.radians(16.37)
    for step in (1.0, 30.0):
        east, north = ground_scale(CRS.from_epsg(3857), x, _mercator_y(lat), step)
        assert (east, north) == pytest.approx(_mercator_scale(lat), rel=1e-7)


# ----------------------------------------------------------------------------- grid CRS

def _note(crs: str, why: str) -> str:
    return (f"the raster's CRS ({crs}) is not a ground-metre CRS here ({why}); it is read "
            f"through a view in WGS 84 / UTM zone 33N at the model's ground GSD, and the "
            f"polygons are returned in the raster's CRS")


@pytest.mark.parametrize("epsg, bounds", [
    (32633, (500000, 5300000, 500060, 5300060)),       # UTM
    (31256, (-1700, 338500, -1640, 338560)),           # a national grid
    (2263, (1000000, 200000, 1000200, 200200)),        # US feet: true after its unit
    (3857, (A_WGS84 * 0.2857, _mercator_y(0.5), A_WGS84 * 0.2857 + 60,
            _mercator_y(0.5) + 60)),                   # Web Mercator at the equator
])
def test_ground_metre_crss_are_kept(epsg, bounds):
    crs = CRS.from_epsg(epsg)
    assert grid_crs(crs, bounds) == (crs, None)


def test_web_mercator_away_from_the_equator_and_degrees_go_to_utm():
    x = A_WGS84 * math.radians(16.37)
    y = _mercator_y(48.0)
    utm, note = grid_crs(CRS.from_epsg(3857), (x - 30, y - 30, x + 30, y + 30))
    assert utm == CRS.from_epsg(32633)
    assert note == _note("EPSG:3857", "its units are 0.670 ground metres here")
    # 8 degrees north: 1 % off north-south already
    y8 = _mercator_y(8.0)
    assert grid_crs(CRS.from_epsg(3857), (x, y8, x + 60, y8 + 60))[0] == CRS.from_epsg(32633)
    utm, note = grid_crs(CRS.from_epsg(4326), (16.37, 48.2, 16.371, 48.201))
    assert utm == CRS.from_epsg(32633)
    assert note == _note("EPSG:4326", "it is in degrees")
    # the zone is the centre's: 18.1 E is zone 34
    assert grid_crs(CRS.from_epsg(4326), (17.9, 48.2, 18.3, 48.3))[0] == CRS.from_epsg(32634)


def test_a_centre_without_a_utm_zone_is_an_input_error():
    with pytest.raises(InputError) as e:
        grid_crs(CRS.from_epsg(4326), (200, 100, 201, 101))
    assert str(e.value) == "no UTM zone covers longitude 200.5000, latitude 100.5000"


# ----------------------------------------------------------------------------- bands


# ----------------------------------------------------------------------------- plan_grid

def test_the_whole_raster():
    with open_raster(*VIENNA_GRID) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
        assert g.transform == Affine(0.1, 0, -1700, 0, -0.1, 338560)
        assert (g.width, g.height, g.bands, g.src_gsd) == (300, 150, [1, 2, 3], 0.3)
        assert g.crs_wkt == ds.crs.to_wkt() and g.source_crs_wkt is None
        assert g.warnings == [FAR_GSD]


@pytest.mark.parametrize("extent, origin, size", [
    ([-1690, 338550, -1680, 338555], (-1690, 338555), (100, 50)),     # inside
    ([-1710, 338540, -1690, 338550], (-1700, 338550), (100, 50)),     # clipped left, bottom
    ([-1680, 338555, -1660, 338570], (-1680, 338560), (100, 50)),     # clipped right, top
    ([-1690, 338550, -1679.99, 338555], (-1690, 338555), (101, 50)),  # a part of a pixel more
])
def test_extent_in_the_raster_crs(extent, origin, size):
    with open_raster(*VIENNA_GRID) as ds:
        for crs in (None, "EPSG:31256"):
            g = plan_grid(ds, extent, crs, 0.1, 3)
            assert (g.transform.c, g.transform.f) == pytest.approx(origin, abs=1e-9)
            assert (g.transform.a, g.transform.b, g.transform.d, g.transform.e) == (
                0.1, 0, 0, -0.1)
            assert (g.width, g.height) == size


def test_extent_in_another_crs_is_the_same_ground():
    """The box [-1690, 338550, -1680, 338555] of the raster's CRS given as its corners'
    longitudes and latitudes: the grid starts within 1 m of the box and has its size
    within 1 m (the reprojected box of a rotated rectangle is a little larger)."""
    from pyproj import Transformer
    to_ll = Transformer.from_crs("EPSG:31256", "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform([-1690, -1680, -1690, -1680], [338550, 338550, 338555, 338555])
    box = [min(lon), min(lat), max(lon), max(lat)]
    with open_raster(*VIENNA_GRID) as ds:
        g = plan_grid(ds, box, "EPSG:4326", 0.1, 3)
    assert abs(g.transform.c - -1690) < 1 and abs(g.transform.f - 338555) < 1
    assert abs(g.width - 100) <= 10 and abs(g.height - 50) <= 10
    assert g.crs_wkt == CRS.from_epsg(31256).to_wkt() and g.source_crs_wkt is None


def test_one_pixel_is_the_smallest_extent():
    """At a GSD exact in binary (0.125 m) an extent of one pixel gives a 1 x 1 grid and
    one a thousandth smaller is refused."""
    with open_raster(*VIENNA_GRID) as ds:
        g = plan_grid(ds, [-1690, 338550, -1689.875, 338550.125], None, 0.125, 3)
        assert (g.width, g.height, g.transform.c, g.transform.f) == (1, 1, -1690, 338550.125)
        for extent in ([-1690, 338550, -1689.876, 338550.125],
                       [-1690, 338550, -1689.875, 338550.124]):
            with pytest.raises(InputError) as e:
                plan_grid(ds, extent, None, 0.125, 3)
            assert "is smaller than one pixel at the model's 0.125 m GSD" in str(e.value)


def test_one_pixel_from_float_coordinates_is_one_pixel():
    """Coordinates one 0.1 m pixel apart differ by a little less than 0.1 in floating
    point (-1690.2 - -1690.3 = 0.0999999999999): still one pixel, not "smaller than one
    pixel"; a thousandth of a pixel less is refused."""
    assert -1690.2 - -1690.3 < 0.1
    with open_raster(*VIENNA_GRID) as ds:
        g = plan_grid(ds, [-1690.3, 338550.7, -1690.2, 338550.8], None, 0.1, 3)
        assert (g.width, g.height) == (1, 1)
        with pytest.raises(InputError, match="smaller than one pixel"):
            plan_grid(ds, [-1690.3, 338550.7, -1690.2001, 338550.8], None, 0.1, 3)


def test_one_pixel_less_its_millionth_slack_is_still_one_pixel():
    """At 0.125 m (exact in binary) from the raster's corner at (0, 0): an extent of
    exactly 0.125 x (1 - 1e-6) m, one pixel less the documented millionth of a pixel,
    is one pixel on either axis; the next float below it is refused."""
    span = 0.125 * (1 - 1e-6)
    below = math.nextafter(span, 0.0)
    with open_raster("EPSG:31256", Affine(1, 0, 0, 0, -1, 100), 100, 100) as ds:
        for extent, size in [([0.0, 0.0, span, 1.0], (1, 8)), ([0.0, 0.0, 1.0, span], (8, 1))]:
            g = plan_grid(ds, extent, None, 0.125, 3)
            assert (g.width, g.height) == size
        for extent in ([0.0, 0.0, below, 1.0], [0.0, 0.0, 1.0, below]):
            with pytest.raises(InputError, match="is smaller than one pixel at the model's "
                                                 "0.125 m GSD"):
                plan_grid(ds, extent, None, 0.125, 3)


@pytest.mark.parametrize("extent, crs, message", [
    ([-1600, 338550, -1590, 338555], None, "the extent does not intersect the raster"),
    ([-1670, 338550, -1660, 338555], None, "the extent does not intersect the raster"),
    ([-1690, 338560, -1680, 338570], None, "the extent does not intersect the raster"),
    ([-1690, 338550, -1689.95, 338555], None,
     "the extent (0.05 x 5.00 m) is smaller than one pixel at the model's 0.1 m GSD"),
    ([-1690, 338550, -1680, 338550.05], None,
     "the extent (10.00 x 0.05 m) is smaller than one pixel at the model's 0.1 m GSD"),
])
def test_extent_errors(extent, crs, message):
    with open_raster(*VIENNA_GRID) as ds:
        with pytest.raises(InputError) as e:
            plan_grid(ds, extent, crs, 0.1, 3)
        assert str(e.value) == message


def test_an_invalid_extent_crs_or_a_raster_without_crs():
    with open_raster(*VIENNA_GRID) as ds:
        with pytest.raises(InputError) as e:
            plan_grid(ds, [-1690, 338550, -1680, 338555], "EPSG:99999999", 0.1, 3)
        assert str(e.value).startswith("invalid extent CRS: ")
    with open_raster(None, VIENNA_GRID[1], 100, 50) as ds:
        with pytest.raises(InputError) as e:
            plan_grid(ds, None, None, 0.1, 3)
        assert str(e.value) == ("the raster has no CRS; assign one (Layer Properties > "
                                "Source) before detecting")


def test_grid_size_limit():
    with open_raster(*VIENNA_GRID) as ds:
        assert plan_grid(ds, None, None, 0.1, 3, max_pixels=45000).width == 300
        with pytest.raises(InputError) as e:
            plan_grid(ds, None, None, 0.1, 3, max_pixels=44999)
        assert e.value.code == P.E_INVALID_INPUT
        assert str(e.value) == ("the extent is too large for one in-extent detection: "
                                "300 x 150 px at 0.1 m (0 Mpx > 0 Mpx); zoom in, or run "
                                "it as a batch job (Processing › Ortholens › Detect "
                                "objects)")
    # the default: 64 Mpx, 8000 x 8000 pixels of 0.1 m pass, 8010 x 8010 do not
    assert MAX_GRID_PIXELS == 64_000_000
    with open_raster("EPSG:31256", Affine(1, 0, 0, 0, -1, 800), 800, 800) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
        assert (g.width, g.height) == (8000, 8000)
    with open_raster("EPSG:31256", Affine(1, 0, 0, 0, -1, 801), 801, 801) as ds:
        with pytest.raises(InputError) as e:
            plan_grid(ds, None, None, 0.1, 3)
        assert "8010 x 8010 px at 0.1 m (64 Mpx > 64 Mpx)" in str(e.value)


@pytest.mark.parametrize("gsd, warned", [(0.2, False), (0.21, True), (0.05, False),
                                         (0.049, True), (0.1, False)])
def test_resampling_warning_beyond_half_and_double_the_gsd(gsd, warned):
    with open_raster("EPSG:31256", Affine(gsd, 0, 0, 0, -gsd, 100), 100, 100) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
    assert g.src_gsd == pytest.approx(gsd, rel=1e-12)
    assert g.warnings == ([f"the raster's GSD ({gsd:.3f} m) is far from the model's "
                           f"(0.1 m); it is resampled, expect lower accuracy"]
                          if warned else [])


def test_a_feet_crs_is_planned_in_feet_at_the_ground_gsd():
    ft = 0.3048006096012192                              # the US survey foot
    with open_raster("EPSG:2263", Affine(1, 0, 1000000, 0, -1, 200100), 100, 100) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
    assert g.transform.a == pytest.approx(0.1 / ft, rel=1e-12)
    assert (g.width, g.height) == (math.ceil(100 * ft / 0.1), math.ceil(100 * ft / 0.1))
    assert g.src_gsd == pytest.approx(ft, rel=1e-12)
    assert g.crs_wkt == CRS.from_epsg(2263).to_wkt() and g.source_crs_wkt is None


def test_a_raster_in_degrees_is_planned_in_utm():
    """3e-6 degree pixels at 48.2 N: the grid is in UTM zone 33N over the raster's
    corners, and the source GSD is the pixel's ground size there (Vincenty-free: the
    ellipsoid's radii of curvature)."""
    from pyproj import Transformer
    with open_raster("EPSG:4326", Affine(3e-6, 0, 16.37, 0, -3e-6, 48.2), 100, 50) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
        assert g.source_crs_wkt == ds.crs.to_wkt()
    assert g.crs_wkt == CRS.from_epsg(32633).to_wkt()
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    xs, ys = to_utm.transform([16.37, 16.3703, 16.37, 16.3703],
                              [48.2, 48.2, 48.19985, 48.19985])
    assert g.transform.c == pytest.approx(min(xs), abs=0.01)
    assert g.transform.f == pytest.approx(max(ys), abs=0.01)
    assert g.width == math.ceil((max(xs) - min(xs)) / 0.1 - 1e-6)
    assert g.height == math.ceil((max(ys) - min(ys)) / 0.1 - 1e-6)
    phi = math.radians(48.2 - 25 * 3e-6)
    w = 1 - E2_WGS84 * math.sin(phi) ** 2
    east = math.radians(1) * A_WGS84 * math.cos(phi) / math.sqrt(w)
    north = math.radians(1) * A_WGS84 * (1 - E2_WGS84) / w ** 1.5
    assert g.src_gsd == pytest.approx(3e-6 * math.sqrt(east * north), rel=1e-6)
    assert g.warnings == [_note("EPSG:4326", "it is in degrees"),
                          f"the raster's GSD ({g.src_gsd:.3f} m) is far from the model's "
                          f"(0.1 m); it is resampled, expect lower accuracy"]


def test_source_gsd_of_rotated_and_oblong_pixels():
    rotated = Affine.translation(-1700, 338560) @ Affine.rotation(30) @ Affine.scale(0.2, -0.3)
    for transform in (Affine(0.2, 0, -1700, 0, -0.3, 338560), rotated):
        with open_raster("EPSG:31256", transform, 10, 10) as ds:
            assert _source_gsd(ds, ds.bounds, geodesic=False) == pytest.approx(
                math.sqrt(0.2 * 0.3), rel=1e-12)
    # geodesic: Web Mercator pixels of 0.3 units at 48 N
    x, y = A_WGS84 * math.radians(16.37), _mercator_y(48.0)
    with open_raster("EPSG:3857", Affine(0.3, 0, x, 0, -0.3, y), 10, 10) as ds:
        east, north = _mercator_scale(48.0)
        assert _source_gsd(ds, ds.bounds, geodesic=True) == pytest.approx(
            0.3 * math.sqrt(east * north), rel=1e-6)
        assert _source_gsd(ds, ds.bounds, geodesic=False) == pytest.approx(0.3, rel=1e-12)


def test_ground_scale_of_utm_off_its_central_meridian_is_proj_s():
    """30 E 10 N in zone 33 (15 E): 1 / k with PROJ's own point scale factor k, where
    grid east is no longer a parallel nor grid north a meridian."""
    from pyproj import Proj, Transformer
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(30, 10)
    k = Proj("EPSG:32633").get_factors(30, 10).parallel_scale
    assert k == pytest.approx(1.034, abs=1e-3)
    assert ground_scale(CRS.from_epsg(32633), x, y, 10.0) == pytest.approx((1 / k, 1 / k),
                                                                           rel=1e-7)


def test_a_utm_raster_far_outside_its_zone_is_planned_in_its_own_zone():
    """A zone 33 raster at 31 E is 4 % off the ground: the grid is in zone 36 and the
    source GSD is the pixel's ground size there (its 0.3 units / k)."""
    from pyproj import Proj, Transformer
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(31, 10)
    k = Proj("EPSG:32633").get_factors(31, 10).parallel_scale
    assert f"{1 / k:.3f}" == "0.963"
    with open_raster("EPSG:32633", Affine(0.3, 0, x - 15, 0, -0.3, y + 15), 100, 100) as ds:
        g = plan_grid(ds, None, None, 0.3, 3)
    assert g.crs_wkt == CRS.from_epsg(32636).to_wkt()
    assert g.src_gsd == pytest.approx(0.3 / k, rel=1e-6)
    assert g.warnings == [_note("EPSG:32633", "its units are 0.963 ground metres here")
                          .replace("zone 33N", "zone 36N")]


def test_an_extent_outside_the_crs_domain_is_an_input_error():
    """Zone 33 coordinates 100 000 km east have no longitude: an ``invalid_input``
    error naming the centre, not PROJ's exception."""
    with pytest.raises(InputError) as e:
        grid_crs(CRS.from_epsg(32633), (1e8 - 1, 5e6 - 1, 1e8 + 1, 5e6 + 1))
    assert str(e.value) == ("the extent's centre (1e+08, 5e+06) has no longitude/latitude "
                            "in the raster's CRS (EPSG:32633)")


def test_a_scale_that_cannot_be_measured_sends_the_grid_to_utm():
    """A centre inside the projection's domain whose measuring segments (1 % of the
    extent each side) leave it: the scale is unknown, so the UTM zone of the centre."""
    utm, note = grid_crs(CRS.from_epsg(32633), (7e6, 5e6 - 1, 2.7e7, 5e6 + 1))
    assert utm.to_epsg() // 100 == 326 and note is not None
    assert "(its ground scale is unknown here)" in note


def test_source_gsd_of_sheared_pixels():
    """A column step ``(a, d)`` and a row step ``(b, e)``: the pixel's sides are their
    lengths, even when only one of them is tilted."""
    for transform, px, py in [(Affine(0.2, 0, -1700, 0.1, -0.3, 338560), math.hypot(0.2, 0.1), 0.3),
                              (Affine(0.2, 0.1, -1700, 0, -0.3, 338560), 0.2, math.hypot(0.1, 0.3))]:
        with open_raster("EPSG:31256", transform, 10, 10) as ds:
            assert _source_gsd(ds, ds.bounds, geodesic=False) == pytest.approx(
                math.sqrt(px * py), rel=1e-12)


def test_plan_grid_reads_the_requested_bands():
    with open_raster(*VIENNA_GRID) as ds:
        assert plan_grid(ds, None, None, 0.1, 3, bands_req=[3, 2, 1]).bands == [3, 2, 1]
        with pytest.raises(InputError) as e:
            plan_grid(ds, None, None, 0.1, 3, bands_req=[1, 2])
        assert str(e.value) == "the model takes 3 bands; 2 given"


def test_grid_size_message_in_rounded_megapixels():
    """3500 x 1000 px over a limit of 1.5 Mpx: 3.5 and 1.5 round (half to even) to 4
    and 2."""
    with open_raster("EPSG:31256", Affine(1, 0, 0, 0, -1, 100), 350, 100) as ds:
        with pytest.raises(InputError) as e:
            plan_grid(ds, None, None, 0.1, 3, max_pixels=1_500_000)
    assert "3500 x 1000 px at 0.1 m (4 Mpx > 2 Mpx)" in str(e.value)


def test_source_gsd_falls_back_to_the_crs_unit_where_the_scale_is_undefined():
    """Where the ground scale cannot be measured (PROJ refuses the point, or the
    ellipsoid gives no distance beyond a pole) the pixel's size in CRS units times the
    CRS's nominal unit: the US survey foot, or 1 for degrees."""
    with open_raster("EPSG:3424", Affine(1, 0, 500000, 0, -1, 500000), 10, 10) as ds:
        assert _source_gsd(ds, (1e9, 1e8, 1e9 + 1, 1e8 + 1), geodesic=True) == \
            pytest.approx(0.3048006096012192, rel=1e-12)
    with open_raster("EPSG:4326", Affine(3e-6, 0, 16.37, 0, -3e-6, 48.2), 10, 10) as ds:
        assert _source_gsd(ds, (16, 100, 17, 101), geodesic=True) == pytest.approx(
            3e-6, rel=1e-12)




def test_layer_gsd_is_the_ground_pixel_size_of_the_extent():
    """The GSD the model is chosen by: the pixel size times the unit in a metre CRS (a
    foot CRS in metres), and in degrees the ground metres of a pixel at the extent's
    centre from pyproj's geodesic, not from the code under test."""
    from pyproj import Geod

    from backend.inference.grid import layer_gsd
    with open_raster(*VIENNA_GRID) as ds:
        assert layer_gsd(ds, None, None) == pytest.approx(0.3, abs=1e-12)
        inside = (-1695.0, 338550.0, -1680.0, 338555.0)
        assert layer_gsd(ds, inside, "EPSG:31256") == pytest.approx(0.3, abs=1e-12)
        with pytest.raises(InputError, match="does not intersect|outside|miss"):
            layer_gsd(ds, (0.0, 0.0, 10.0, 10.0), "EPSG:31256")
    # 0.5 ft pixels in a US survey foot CRS (NAD83 / Georgia West ftUS)
    with open_raster("EPSG:2240", Affine(0.5, 0, 2200000, 0, -0.5, 1400000), 40, 40) as ds:
        assert layer_gsd(ds, None, None) == pytest.approx(0.5 * 1200 / 3937, rel=1e-9)
    # 1e-6 degree pixels at 48.2 N, 16.37 E: about 0.074 m east, 0.111 m north
    deg = 1e-6
    with open_raster("EPSG:4326", Affine(deg, 0, 16.37, 0, -deg, 48.2 + 100 * deg), 100,
                     100) as ds:
        geod = Geod(ellps="WGS84")
        lat = 48.2 + 50 * deg
        east = geod.inv(16.37 + 50 * deg, lat, 16.37 + 51 * deg, lat)[2]
        north = geod.inv(16.37 + 50 * deg, lat, 16.37 + 50 * deg, lat + deg)[2]
        assert layer_gsd(ds, None, None) == pytest.approx(math.sqrt(east * north), rel=1e-3)
    with open_raster(None, Affine(0.3, 0, 0, 0, -0.3, 0), 10, 10) as ds:
        with pytest.raises(InputError, match="no CRS"):
            layer_gsd(ds, None, None)


def test_layer_gsd_reprojects_the_extent_and_names_a_missing_crs():
    """An extent given in WGS 84 over the Vienna grid is reprojected into the raster's
    CRS before it is clipped (read as MGI metres it would miss the raster), and a
    raster without a CRS is refused with the whole sentence that tells what to do."""
    from pyproj import Transformer

    from backend.inference.grid import layer_gsd
    to_ll = Transformer.from_crs("EPSG:31256", "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform([-1695, -1680, -1695, -1680], [338550, 338550, 338555, 338555])
    with open_raster(*VIENNA_GRID) as ds:
        assert layer_gsd(ds, [min(lon), min(lat), max(lon), max(lat)], "EPSG:4326") == \
            pytest.approx(0.3, abs=1e-12)
    with open_raster(None, Affine(0.3, 0, 0, 0, -0.3, 0), 10, 10) as ds:
        with pytest.raises(InputError) as e:
            layer_gsd(ds, None, None)
    assert str(e.value) == ("the raster has no CRS; assign one (Layer Properties > "
                            "Source) before detecting")
