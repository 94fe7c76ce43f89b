"""Rasters in any CRS are read at the model's true ground GSD.

A pv01 held-out tile (0.1 m) is placed at Vienna's latitude in UTM 33N and warped with
GDAL (rasterio) to EPSG:4326 and EPSG:3857, whose units are not ground metres there
(Web Mercator's metre is 0.67 ground metres at 48° N). The same panels must come back
with the same ground areas, in each raster's own CRS, at the same places.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_geom

from backend.inference import detect as D
from backend.inference.grid import grid_crs, plan_grid
import protocol as P
from tests.support import DEFAULT_MODEL, heldout

TILE = heldout("PV01_325192_1204246")  # 9 panel arrays
UTM33 = CRS.from_epsg(32633)
#: a 0.1 m grid at 48.2° N, 15.0° E (Vienna's latitude)
AT_VIENNA = Affine(0.1, 0.0, 500000.0, 0.0, -0.1, 5339000.0)


def _detect(path):
    req = {"type": "detect", "model": DEFAULT_MODEL, "source": {"kind": "file", "path": str(path)},
           "v": 1, "id": "t"}
    return D.run_detect(P.validate_request(req), [])


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """The tile in UTM 33N at Vienna, and GDAL warps of it to EPSG:4326 and 3857."""
    d = tmp_path_factory.mktemp("crs")
    with rasterio.open(TILE) as s:
        data, profile = s.read(), s.profile
    utm = d / "utm33.tif"
    profile.update(crs=UTM33, transform=AT_VIENNA, driver="GTiff")
    with rasterio.open(utm, "w", **profile) as w:
        w.write(data)
    out = {"utm": utm}
    for name, epsg in (("4326", 4326), ("3857", 3857)):
        dst_crs = CRS.from_epsg(epsg)
        with rasterio.open(utm) as s:
            t, w_, h_ = calculate_default_transform(s.crs, dst_crs, s.width, s.height,
                                                    *s.bounds)
            prof = dict(s.profile, crs=dst_crs, transform=t, width=w_, height=h_)
            path = d / f"tile_{name}.tif"
            with rasterio.open(path, "w", **prof) as w:
                for b in range(1, s.count + 1):
                    reproject(rasterio.band(s, b), rasterio.band(w, b),
                              resampling=Resampling.bilinear)
        out[name] = path
    return out


def test_grid_crs_keeps_metre_crs_and_replaces_the_others(tiles):
    with rasterio.open(tiles["utm"]) as ds:
        crs, note = grid_crs(ds.crs, tuple(ds.bounds))
        assert crs == UTM33 and note is None
    for name in ("4326", "3857"):
        with rasterio.open(tiles[name]) as ds:
            crs, note = grid_crs(ds.crs, tuple(ds.bounds))
            assert crs == UTM33, name
            assert "WGS 84 / UTM zone 33N" in note and f"EPSG:{name}" in note


def test_grid_is_at_the_ground_gsd_in_every_crs(tiles):
    """25.6 m of ground at 0.1 m: 256 pixels whatever the raster's CRS (the warps add
    at most a few pixels of no-data margin), and the source GSD is the ground one."""
    for name, path in tiles.items():
        with rasterio.open(path) as ds:
            g = plan_grid(ds, None, None, 0.1, 3)
        assert g.transform.a == pytest.approx(0.1) and CRS.from_wkt(g.crs_wkt) == UTM33
        assert 256 <= g.width <= 262 and 256 <= g.height <= 262, (name, g.width, g.height)
        assert g.src_gsd == pytest.approx(0.1, rel=0.05), (name, g.src_gsd)
        assert (g.source_crs_wkt is None) == (name == "utm")


def test_same_panels_same_areas_in_utm_4326_and_3857(tiles):
    ref = _detect(tiles["utm"])
    ref_area = sum(f["area_m2"] for f in ref["features"])
    ref_geoms = [shapely.from_wkt(f["wkt"]) for f in ref["features"]]
    assert len(ref_geoms) >= 3 and ref_area > 20.0
    for name in ("4326", "3857"):
        res = _detect(tiles[name])
        assert CRS.from_wkt(res["crs"]) == CRS.from_epsg(int(name))  # the raster's CRS
        area = sum(f["area_m2"] for f in res["features"])
        assert area == pytest.approx(ref_area, rel=0.01), name
        assert len(res["features"]) == len(ref_geoms), name
        # back in UTM, every polygon lies where the reference one does
        for f in res["features"]:
            g = shapely.geometry.shape(transform_geom(res["crs"], UTM33.to_wkt(),
                                                      shapely.geometry.mapping(
                                                          shapely.from_wkt(f["wkt"]))))
            nearest = min(ref_geoms, key=lambda r: r.centroid.distance(g.centroid))
            assert nearest.centroid.distance(g.centroid) < 0.3, name
            iou = nearest.intersection(g).area / nearest.union(g).area
            # the warps resample twice (bilinear): a 5 m² object's outline moves most
            assert iou > (0.9 if nearest.area >= 10 else 0.6), (name, nearest.area, iou)
        assert any("UTM zone 33N" in w for w in res["stats"]["warnings"])
        assert not any("GSD" in w and "far from" in w for w in res["stats"]["warnings"])
    assert np.isfinite(ref_area)
