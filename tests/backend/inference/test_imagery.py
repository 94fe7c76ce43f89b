"""Imagery as users have it: band order, 16-bit and float values, grey, palettes,
JPEG-in-TIFF (YCbCr) and alpha masks.

Each variant is made from a real pv01 held-out tile (9 panel arrays) with rasterio, so
the expected polygons are those of the 8-bit RGB original whenever the variant holds
the same pixel values, and a documented transformation otherwise (the band choice and
stretch on small rasters: tests/backend/inference/test_bands.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import ColorInterp

from backend.inference import detect as D
from protocol.params import DetectParams, FileSource, Stretch
from tests.support import ATLANTA, DEFAULT_MODEL, against_mask, heldout, write_raster

#: 9 panel arrays
TILE = heldout("PV01_325192_1204246")


def _run(path, **kw):
    return D.run_detect(DetectParams(FileSource(str(path)), DEFAULT_MODEL, **kw), [])


def _wkts(res):
    return [f["wkt"] for f in res["features"]]


@pytest.fixture(scope="module")
def tile():
    with rasterio.open(TILE) as s:
        return s.read(), dict(s.profile)


@pytest.fixture(scope="module")
def reference(tile):
    return _run(TILE)


def test_16bit_and_float_with_min_max_give_the_8bit_polygons(tile, reference, tmp_path):
    """uint16 = 40 * v + 1000 and float32 = v / 255: stretched back with the given
    min/max they are the 8-bit pixels again, so the polygons are identical."""
    data, prof = tile
    u16 = write_raster(tmp_path / "u16.tif", (data.astype(np.uint16) * 40 + 1000), prof)
    f32 = write_raster(tmp_path / "f32.tif", data.astype(np.float32) / 255.0, prof)
    r16 = _run(u16, stretch=Stretch("minmax", min=(1000.0,) * 3, max=(1000 + 255 * 40.0,) * 3))
    r32 = _run(f32, stretch=Stretch("minmax", min=(0.0,) * 3, max=(1.0,) * 3))
    assert len(reference["features"]) >= 5
    assert _wkts(r16) == _wkts(reference) and _wkts(r32) == _wkts(reference)
    assert r16["stats"]["stretch"]["mode"] == "minmax"
    assert r16["stats"]["stretch"]["ranges"] == [[1000.0, 11200.0]] * 3


def test_16bit_default_is_the_2_98_percentile_stretch(tile, reference, tmp_path):
    """Without a stretch, a 16-bit raster is stretched per band between its 2 and 98 %
    percentiles over the extent (recorded in the stats), and still finds the panels."""
    data, prof = tile
    u16 = write_raster(tmp_path / "u16.tif", (data.astype(np.uint16) * 40 + 1000), prof)
    res = _run(u16)
    info = res["stats"]["stretch"]
    assert info["mode"] == "percentile" and (info["low"], info["high"]) == (2.0, 98.0)
    for band, (lo, hi) in zip(data, info["ranges"]):
        want = np.percentile(band.astype(np.float64) * 40 + 1000, [2, 98])
        assert abs(lo - want[0]) <= 40 and abs(hi - want[1]) <= 40  # one 8-bit step
    assert any("stretched to 8 bits" in w for w in res["stats"]["warnings"])
    ref_area = sum(f["area_m2"] for f in reference["features"])
    area = sum(f["area_m2"] for f in res["features"])
    assert area == pytest.approx(ref_area, rel=0.15)


def _model_pixels(path, bands=None) -> np.ndarray:
    """The pixels a detection of ``path`` feeds the model, uint8 (3, H, W), as its
    reader gives them (the grid at the model's 0.1 m is the tile's own)."""
    from backend.inference.grid import plan_grid
    from backend.inference.raster import WindowReader
    from protocol.window import Window
    with rasterio.open(path) as ds:
        grid = plan_grid(ds, None, None, 0.1, 3, bands)
        reader = WindowReader(ds, grid)
        try:
            return reader.read(Window(0, 0, grid.height, grid.width))[0]
        finally:
            reader.close()


def test_band_order_follows_the_colour_interpretation(tile, reference, tmp_path):
    """A BGR file whose bands say blue, green, red is read as R, G, B; an explicit
    mapping does the same: the model gets the tile's red, green and blue as rasterio
    reads them by hand, and finds its panels (pixel IoU with the reference mask)."""
    data, prof = tile
    bgr = write_raster(tmp_path / "bgr.tif", data[::-1].copy(), prof,
                 colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    res = _run(bgr)
    assert res["stats"]["bands"] == [3, 2, 1]
    assert _wkts(res) == _wkts(reference)
    plain = write_raster(tmp_path / "bgr_plain.tif", data[::-1].copy(), prof,
                   colorinterp=[ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined])
    assert _wkts(_run(plain, bands=(3, 2, 1))) == _wkts(reference)
    with rasterio.open(TILE) as src:
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        rgb = src.read([1, 2, 3])
    assert np.array_equal(_model_pixels(bgr), rgb)
    assert np.array_equal(_model_pixels(plain, [3, 2, 1]), rgb)
    assert np.array_equal(_model_pixels(TILE), rgb)
    assert against_mask(res["features"], TILE)[0] > 0.9


def test_alpha_band_is_the_valid_mask_not_a_colour(tile, reference, tmp_path):
    """RGBA with the west half transparent and a black patch (0, 0, 0) in the opaque
    east half: no panel in the west, the east half as before, and the valid fraction is
    the alpha band's as rasterio reads it by hand. The black patch stays valid: the mask
    is the alpha band, not the black GDAL fills transparent pixels with (which alone
    would also hide the west's panels)."""
    data, prof = tile
    alpha = np.full(data.shape[1:], 255, np.uint8)
    alpha[:, : data.shape[2] // 2] = 0
    with rasterio.open(TILE.with_name(TILE.stem + "_mask.tif")) as m:
        assert not m.read(1)[82:112, 222:252].any()  # no panel under the patch
    data = data.copy()
    data[:, 82:112, 222:252] = 0  # 900 px, 1.4 % of the tile
    rgba = write_raster(tmp_path / "rgba.tif", np.concatenate([data, alpha[None]]), prof,
                  colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                               ColorInterp.alpha])
    res = _run(rgba)
    assert res["stats"]["bands"] == [1, 2, 3]
    with rasterio.open(rgba) as ds:
        opaque = ds.read(4) > 0
    assert res["stats"]["valid_fraction"] == round(float(opaque.mean()), 4) == 0.5
    from shapely.geometry import box
    t = prof["transform"]
    mid = t.c + t.a * data.shape[2] / 2
    west = box(t.c - 10, t.f - 100, mid, t.f + 10)
    geoms = [shapely.from_wkt(w) for w in _wkts(res)]
    ref_west = sum(shapely.from_wkt(w).intersection(west).area for w in _wkts(reference))
    assert geoms and ref_west > 20.0  # panels the mask hides
    # only rectangle fits of objects cut by the mask's edge reach past it, by < 1 m
    assert sum(g.intersection(west).area for g in geoms) < 0.1 * ref_west
    assert all(g.bounds[0] >= mid - 1.0 for g in geoms)


def test_paletted_raster_is_expanded_through_its_colour_table(tile, tmp_path):
    """A 216-colour paletted GeoTIFF gives the polygons of the same colours as RGB."""
    data, prof = tile
    levels = np.rint(data / 51.0).astype(np.uint8)  # 0..5 per band
    index = (levels[0] * 36 + levels[1] * 6 + levels[2]).astype(np.uint8)
    cube = {i: (r * 51, g * 51, b * 51, 255) for i, (r, g, b) in enumerate(
        (r, g, b) for r in range(6) for g in range(6) for b in range(6))}
    pal = tmp_path / "pal.tif"
    p1 = dict(prof, count=1, dtype="uint8")
    p1.pop("photometric", None)
    with rasterio.open(pal, "w", **p1, photometric="palette") as w:
        w.write(index[None])
        w.write_colormap(1, cube)
    rgb = write_raster(tmp_path / "quantised.tif", (levels * 51).astype(np.uint8), prof)
    res = _run(pal)
    assert res["features"] and _wkts(res) == _wkts(_run(rgb))


def test_jpeg_ycbcr_tiff_reads_as_rgb(tile, reference, tmp_path):
    """JPEG-compressed YCbCr GeoTIFF (the usual municipal delivery) is decoded to RGB
    by GDAL: the panels come back within JPEG's loss."""
    data, prof = tile
    p = dict(prof, compress="jpeg", photometric="ycbcr", jpeg_quality=90, tiled=True,
             blockxsize=256, blockysize=256)
    path = tmp_path / "ycbcr.tif"
    with rasterio.open(path, "w", **p) as w:
        w.write(data)
    with rasterio.open(path) as ds:
        assert ds.colorinterp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    res = _run(path)
    ref_area = sum(f["area_m2"] for f in reference["features"])
    assert sum(f["area_m2"] for f in res["features"]) == pytest.approx(ref_area, rel=0.05)


def test_grey_uint16_scene_runs_as_stretched_grey():
    """SpaceNet Atlanta (1 band, uint16, 0.5 m): grey for R, G and B and a 2-98 %
    stretch over the extent, both stated in the warnings, instead of a refusal."""
    from rasterio.windows import from_bounds

    with rasterio.open(ATLANTA) as ds:
        b = ds.bounds
        extent = (b.left, b.top - 100.0, b.left + 100.0, b.top)  # 100 m x 100 m
        band = ds.read(1, window=from_bounds(*extent, transform=ds.transform), masked=True)
    res = D.run_detect(DetectParams(FileSource(str(ATLANTA)), DEFAULT_MODEL, extent=extent), [])
    warnings = " ".join(res["stats"]["warnings"])
    assert "one band" in warnings and "stretched to 8 bits" in warnings
    assert res["stats"]["bands"] == [1, 1, 1]
    lo, hi = res["stats"]["stretch"]["ranges"][0]
    want = np.percentile(band.compressed(), [2, 98])
    assert lo == pytest.approx(want[0], rel=0.02) and hi == pytest.approx(want[1], rel=0.02)
