"""Request building: file layers go by path, other layers as rendered pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)

from helpers import make_raster, record_requests
import protocol
from plugin.detect.crs import crs_wkt
from plugin.detect.plan import file_source_path, prepare_detect
from plugin.detect.render import pixel_source, render_pixels, render_size
from protocol.params import DetectParams, FileSource

GK_EAST = QgsCoordinateReferenceSystem("EPSG:31256")
MERC = QgsCoordinateReferenceSystem("EPSG:3857")


def test_file_layer_is_sent_by_path_with_canvas_extent(vienna_layer, vienna_path):
    ct = QgsCoordinateTransform(GK_EAST, MERC, QgsProject.instance())
    canvas_ext = ct.transformBoundingBox(QgsRectangle(-1600, 338400, -1500, 338500))
    plan = prepare_detect(vienna_layer, canvas_ext, MERC)
    assert plan.render is None
    assert plan.source == FileSource(str(vienna_path.resolve()))
    assert plan.source.to_wire() == {"kind": "file", "path": str(vienna_path.resolve())}
    assert plan.extent == (canvas_ext.xMinimum(), canvas_ext.yMinimum(),
                           canvas_ext.xMaximum(), canvas_ext.yMaximum())
    assert plan.extent_crs == crs_wkt(MERC)
    assert QgsCoordinateReferenceSystem.fromWkt(plan.extent_crs) == MERC
    assert plan.layer_id == vienna_layer.id() and plan.layer_name == "vienna"
    # the daemon would accept it
    DetectParams(plan.source, "pv-unet-efl0", extent=plan.extent, extent_crs=plan.extent_crs,
                 threshold=0.5, min_area_m2=1.0).to_header()


def test_file_source_path_strips_options(vienna_path, qgis_new_project):
    rl = QgsRasterLayer(f"{vienna_path}|option:NUM_THREADS=1", "v", "gdal")
    assert rl.isValid()
    assert file_source_path(rl) == str(vienna_path.resolve())


def test_pixels_are_rendered_at_model_gsd(vienna_layer):
    ext = QgsRectangle(-1600.0, 338400.0, -1580.05, 338415.0)  # 19.95 m x 15 m
    plan = prepare_detect(vienna_layer, ext, GK_EAST, force_pixels=True)
    assert plan.source is None and plan.render is not None
    rp = plan.render
    assert rp.mode == "rgb" and rp.bands == [1, 2, 3]
    assert not rp.reproject and rp.crs == GK_EAST
    out = render_pixels(rp, 0.1)
    assert out.array.dtype == np.uint8 and out.array.flags.c_contiguous
    assert out.array.shape == (3, 150, math.ceil(19.95 / 0.1))  # (3, 150, 200)
    assert out.transform == pytest.approx([0.1, 0.0, -1600.0, 0.0, -0.1, 338415.0])
    assert not out.capped and out.gsd_m == 0.1
    assert out.array.std() > 5  # real image content, not a blank block
    src = pixel_source(rp, out).to_wire()
    assert src["kind"] == "pixels" and src["transform"] == out.transform
    assert QgsCoordinateReferenceSystem.fromWkt(src["crs"]) == GK_EAST
    frames = protocol.encode(protocol.request("detect", source=src, model="m"), [out.array])
    header, arrays = protocol.decode(frames)
    assert arrays[0].shape == out.array.shape


def test_rendered_pixels_match_gdal_on_the_native_grid(vienna_layer, vienna_path):
    """Band order, orientation and values: a render on the file's own pixel grid equals
    GDAL's read of that window."""
    from osgeo import gdal

    ds = gdal.Open(str(vienna_path))
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    col, row, w, h = 100, 200, 40, 30
    ext = QgsRectangle(x0 + col * px, y0 + (row + h) * py, x0 + (col + w) * px, y0 + row * py)
    plan = prepare_detect(vienna_layer, ext, GK_EAST, force_pixels=True)
    out = render_pixels(plan.render, px)
    want = ds.ReadAsArray(col, row, w, h)
    assert out.array.shape == want.shape == (3, h, w)
    assert np.array_equal(out.array, want)


def test_size_is_capped_and_reported(vienna_layer):
    plan = prepare_detect(vienna_layer, vienna_layer.extent(), GK_EAST, force_pixels=True)
    w, h, px, used, capped = render_size(plan.render, 0.1)
    assert (w, h) == (5000, 5000) and not capped and px == 0.1
    w, h, px, used, capped = render_size(plan.render, 0.1, max_side=1000)
    assert capped and max(w, h) <= 1000 and used == pytest.approx(0.5)
    out = render_pixels(plan.render, 0.1, max_side=256)
    assert out.capped and out.array.shape[1:] == (256, 256)
    assert out.gsd_m == pytest.approx(500 / 256, rel=1e-3)


def test_single_band_raster_is_repeated_as_grey(tmp_path, qgis_new_project):
    path = make_raster(tmp_path / "grey.tif", bands=1, srs_epsg=32651,
                       geotransform=(254315.0, 0.5, 0.0, 3601415.0, 0.0, -0.5))
    rl = QgsRasterLayer(str(path), "grey", "gdal")
    plan = prepare_detect(rl, rl.extent(), rl.crs(), force_pixels=True)
    assert plan.render.mode == "gray"
    out = render_pixels(plan.render, 0.5)
    assert out.array.shape == (3, 12, 16)
    assert np.array_equal(out.array[0], out.array[2])


def test_geographic_file_goes_by_path_and_renders_in_utm(tmp_path, qgis_new_project):
    """A file in degrees goes by path (the daemon reads it through a UTM view at the
    model's ground GSD); rendered as pixels (a web layer, or forced), it is reprojected
    to its UTM zone by the plugin."""
    # 0.0002 deg pixels at 16.30 E, 48.19 N: about 14.9 m x 22.2 m on the ground
    path = make_raster(tmp_path / "wgs84.tif", srs_epsg=4326, size=(10, 10),
                       geotransform=(16.30, 0.0002, 0.0, 48.19, 0.0, -0.0002))
    rl = QgsRasterLayer(str(path), "wgs84", "gdal")
    by_path = prepare_detect(rl, rl.extent(), rl.crs())
    assert by_path.render is None and by_path.source.path == str(path.resolve())
    plan = prepare_detect(rl, rl.extent(), rl.crs(), force_pixels=True)
    assert plan.source is None and plan.render is not None
    rp = plan.render
    assert rp.reproject and rp.crs.authid() == "EPSG:32633"
    assert QgsCoordinateReferenceSystem.fromWkt(rp.crs_wkt) == rp.crs
    assert rp.extent.width() == pytest.approx(149, abs=6)  # + grid convergence
    assert rp.extent.height() == pytest.approx(222, abs=6)
    out = render_pixels(rp, 1.0)
    assert out.array.shape[1] == math.ceil(rp.extent.height())
    assert out.array.shape[2] == math.ceil(rp.extent.width())
    assert out.transform[0] == 1.0 and out.transform[4] == -1.0
    centre = out.array[:, out.height // 2 - 5: out.height // 2 + 5, out.width // 2 - 5: out.width // 2 + 5]
    assert centre.std() > 0  # the synthetic gradient, not an empty block


def test_web_mercator_is_not_taken_as_metres(tmp_path, qgis_new_project):
    """EPSG:3857 units are 1.5 ground metres at 48 N: pixels are rendered in UTM."""
    from plugin.detect.crs import ground_scale, is_metric

    path = make_raster(tmp_path / "merc.tif", srs_epsg=3857, size=(20, 20),
                       geotransform=(1814000.0, 0.3, 0.0, 6138000.0, 0.0, -0.3))
    rl = QgsRasterLayer(str(path), "merc", "gdal")
    sx, sy = ground_scale(rl.crs(), rl.extent())
    assert sx == pytest.approx(0.667, abs=0.01) and sy == pytest.approx(0.667, abs=0.01)
    assert not is_metric(rl.crs(), rl.extent())
    plan = prepare_detect(rl, rl.extent(), rl.crs(), force_pixels=True)
    assert plan.render is not None and plan.render.crs.authid() == "EPSG:32633"
    assert plan.render.extent.width() == pytest.approx(6 * 0.667, rel=0.02)


def test_unreachable_daemon_gives_a_clear_error(vienna_layer, tmp_path, monkeypatch):
    """No daemon and no way to start one: the task fails with a message that says so,
    without sending a request (nothing listens on the loopback port: no time-out)."""
    from plugin.settings import DaemonSettings
    from plugin.detect.task import DetectTask

    plan = prepare_detect(vienna_layer, vienna_layer.extent(), GK_EAST)
    settings = DaemonSettings(endpoint="tcp://127.0.0.1:1", python=str(tmp_path / "nopython"),
                              repo=str(tmp_path), token=None)
    assert not settings.can_start()
    done = []
    task = DetectTask(plan, settings, str(tmp_path / "r.gpkg"), timeout_s=0.3,
                      on_done=done.append)
    sent = record_requests(monkeypatch)
    ok = task.run()
    task.finished(ok)
    # the error is the plugin's to report (QGIS's own "Task failed" would hide it)
    assert ok and done == [task]
    assert task.layer is None and not task.cancelled and task.unreachable
    assert "not reachable" in task.error and "tcp://127.0.0.1:1" in task.error
    assert "Settings" in task.error and "backend" in task.error  # what is missing, where
    assert sent == []  # nothing listens on the loopback port: nothing was asked
    assert not (tmp_path / "r.gpkg").exists()


def test_16bit_raster_rendering_is_refused_clearly(tmp_path, qgis_new_project):
    """Pixels the plugin would have to render must be 8-bit: else a clear message."""
    from osgeo import gdal, osr

    from protocol.errors import InputError

    path = tmp_path / "u16.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 1, gdal.GDT_UInt16)
    ds.SetGeoTransform((16.30, 0.0002, 0.0, 48.19, 0.0, -0.0002))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    rl = QgsRasterLayer(str(path), "u16", "gdal")
    with pytest.raises(InputError, match=r"'u16' has 1 band\(s\) of data type\(s\) UInt16"):
        prepare_detect(rl, rl.extent(), rl.crs(), force_pixels=True)


def test_argb_blocks_decode_to_rgb():
    """WMS/XYZ providers deliver one ARGB32 band; its layout is QImage's ARGB32."""
    from qgis.PyQt.QtGui import QColor, QImage

    from plugin.detect.render import argb_to_rgb

    img = QImage(5, 3, QImage.Format_ARGB32)
    img.fill(QColor(10, 200, 30, 255))
    img.setPixelColor(4, 2, QColor(250, 5, 128, 255))
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    rgb = argb_to_rgb(bytes(ptr), 5, 3)
    assert rgb.shape == (3, 3, 5) and rgb.dtype == np.uint8
    assert rgb[:, 0, 0].tolist() == [10, 200, 30]
    assert rgb[:, 2, 4].tolist() == [250, 5, 128]


@pytest.mark.parametrize("gsd", [0.1, 0.3, 0.47])
def test_windows_rendered_side_by_side_equal_the_whole_render(vienna_layer, gsd):
    """What is streamed window by window is the image a whole render gives: pixel for
    pixel on the file's own grid (0.3 m) and finer (0.1 m); coarser (0.47 m) GDAL's
    nearest-neighbour downsampling picks its source pixels per window, so a few pixels
    come from a neighbouring source pixel (far below what a window shifted by one
    pixel would change)."""
    from plugin.detect.render import render_grid, render_window, upload_spec

    ext = QgsRectangle(-1600.0, 338400.0, -1530.3, 338451.1)
    plan = prepare_detect(vienna_layer, ext, GK_EAST).fallback  # a file layer's pixels
    assert plan is not None
    whole = render_pixels(plan, gsd)
    grid = render_grid(plan, gsd)
    assert (grid.height, grid.width) == whole.array.shape[1:]
    assert grid.transform == whole.transform
    parts = np.zeros_like(whole.array)
    for window in protocol.upload_windows(grid.width, grid.height, 128):
        parts[(slice(None),) + window.slices()] = render_window(plan, grid, window)
    if gsd <= 0.3:
        assert np.array_equal(parts, whole.array)
    else:
        a, b = parts.astype(int), whole.array.astype(int)
        shifted = np.abs(b[:, :, 1:] - b[:, :, :-1]).mean()
        assert np.abs(a - b).mean() < 0.15 * shifted, (np.abs(a - b).mean(), shifted)
    spec = upload_spec(plan, grid)
    assert (spec.width, spec.height, spec.count, spec.dtype) == (grid.width, grid.height,
                                                                 3, "uint8")
    protocol.validate_request(spec.to_header())


def test_a_file_layer_keeps_a_pixel_fallback_unless_it_cannot_be_rendered(
        vienna_layer, tmp_path):
    plan = prepare_detect(vienna_layer, vienna_layer.extent(), GK_EAST)
    assert plan.source is not None and plan.render is None
    assert plan.pixels_plan() is plan.fallback and plan.fallback.mode == "rgb"
    from osgeo import gdal
    path = tmp_path / "u16.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 3, gdal.GDT_UInt16)
    ds.SetGeoTransform((1000.0, 0.5, 0.0, 2000.0, 0.0, -0.5))
    ds.SetProjection(vienna_layer.crs().toWkt())
    ds = None
    rl = QgsRasterLayer(str(path), "u16", "gdal")
    plan = prepare_detect(rl, rl.extent(), rl.crs())
    assert plan.source is not None and plan.fallback is None
    with pytest.raises(protocol.InputError, match="8-bit RGB"):
        plan.pixels_plan()


def test_raster_over_http_goes_by_url(qgis_new_project):
    """A COG opened as /vsicurl/ (or by its https URL) is sent as its URL: the daemon
    reads the extent with range requests instead of the plugin rendering it."""
    from plugin.detect.plan import file_source_path

    for source in ("/vsicurl/https://example.org/ortho_cog.tif",
                   "https://example.org/ortho_cog.tif"):
        rl = QgsRasterLayer(source, "cog", "gdal")  # unreachable: only the source matters
        assert file_source_path(rl) == "https://example.org/ortho_cog.tif"
    local = QgsRasterLayer("/vsizip//tmp/none.zip/a.tif", "zipped", "gdal")
    assert file_source_path(local) is None


def test_reprojected_render_matches_a_gdal_warp(tmp_path, vienna_path, qgis_new_project):
    """A layer in Web Mercator (the Vienna scene warped by GDAL) is rendered by the
    plugin into the UTM zone at 0.3 m: it lies on GDAL's own nearest-neighbour warp of
    the same raster onto the same grid within a quarter pixel (7.5 cm).

    Both are nearest-neighbour at about the source's resolution, so single pixels differ
    wherever a target centre falls near a source pixel border (QGIS's projector
    approximates the transform); the check is geometric: the mean absolute difference
    is smallest at zero shift and far below that of a one-pixel shift, and a parabola
    through the shifts -1, 0, +1 puts the offset under 0.25 px in x and y.
    """
    from osgeo import gdal

    merc = tmp_path / "vienna_3857.tif"
    gdal.Warp(str(merc), str(vienna_path), dstSRS="EPSG:3857", resampleAlg="near")
    rl = QgsRasterLayer(str(merc), "merc", "gdal")
    assert rl.isValid()
    e = rl.extent()
    box = QgsRectangle(e.center().x() - 150, e.center().y() - 150,
                       e.center().x() + 150, e.center().y() + 150)
    plan = prepare_detect(rl, box, rl.crs(), force_pixels=True)
    rp = plan.render
    assert rp.reproject and rp.crs.authid() == "EPSG:32633"
    out = render_pixels(rp, 0.3)
    a, _, x0, _, e_, y0 = out.transform
    h, w = out.array.shape[1:]
    ref = gdal.Warp("", str(merc), format="MEM", dstSRS="EPSG:32633", resampleAlg="near",
                    outputBounds=(x0, y0 + e_ * h, x0 + a * w, y0), width=w, height=h
                    ).ReadAsArray().astype(float)
    got = out.array.astype(float)
    assert ref.shape == got.shape and h > 600 and w > 600
    core = ref[:, 2:h - 2, 2:w - 2]

    def mad(dy, dx):
        return np.abs(got[:, 2 + dy:h - 2 + dy, 2 + dx:w - 2 + dx] - core).mean()

    grid = {(dy, dx): mad(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert min(grid, key=grid.get) == (0, 0), grid
    one_px = min(np.abs(ref[:, 2:h - 2, 3:w - 1] - core).mean(),
                 np.abs(ref[:, 3:h - 1, 2:w - 2] - core).mean())
    assert grid[0, 0] < 0.8 * one_px, (grid[0, 0], one_px)
    for m1, m0, p1 in ((grid[0, -1], grid[0, 0], grid[0, 1]),
                       (grid[-1, 0], grid[0, 0], grid[1, 0])):
        assert abs((m1 - p1) / (2 * (m1 - 2 * m0 + p1))) < 0.25
