"""backend.inference.raster: opening a request's source, reading windows of a grid
(padding, no-data, read-ahead), and damaged rasters named as the user's input problem,
never ``internal``."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import protocol as P
from backend.inference import detect as D
from backend.inference.grid import plan_grid
from backend.inference.raster import (WindowReader, open_source, read_ahead, read_failure,
                                      vsi_path)
from protocol.errors import InputError, JobError
from protocol.params import FileSource, PixelSource
from protocol.window import Window
from tests.support import DEFAULT_MODEL, VIENNA, heldout, write_raster

#: 0.1 m pixels in EPSG:31256: read on a 0.1 m grid, a window is the pixels themselves.
PIXELS = PixelSource("EPSG:31256", (0.1, 0.0, -1700.0, 0.0, -0.1, 338560.0), nodata=0)


def _image(h: int = 20, w: int = 30) -> np.ndarray:
    """uint8 (3, h, w), no zero (no-data) pixel, every pixel different in band 0."""
    a = np.arange(h * w).reshape(h, w)
    return np.stack([a % 250 + 1, (a // 7) % 250 + 1, (a * 3) % 250 + 1]).astype(np.uint8)


@contextlib.contextmanager
def _reader(img: np.ndarray):
    with open_source(PIXELS, img) as ds:
        grid = plan_grid(ds, None, None, 0.1, 3)
        reader = WindowReader(ds, grid)
        try:
            yield reader
        finally:
            reader.close()


def test_urls_are_read_through_vsicurl():
    assert vsi_path("https://x.org/a.tif") == "/vsicurl/https://x.org/a.tif"
    assert vsi_path("http://127.0.0.1:8000/a b.tif") == "/vsicurl/http://127.0.0.1:8000/a b.tif"
    for path in ("/data/a.tif", "C:\\data\\a.tif", "/vsizip/a.zip/b.tif", "ftp://x/a.tif"):
        assert vsi_path(path) == path


def test_pixels_open_with_their_georeferencing():
    img = _image()
    with open_source(PIXELS, img) as ds:
        assert (ds.count, ds.height, ds.width, ds.nodata) == (3, 20, 30, 0)
        assert tuple(ds.transform)[:6] == PIXELS.transform and ds.crs.to_epsg() == 31256
        assert np.array_equal(ds.read(), img)
    with open_source(PIXELS.to_wire(), img[0]) as ds:  # (H, W): one band
        assert ds.count == 1 and np.array_equal(ds.read(1), img[0])


def test_sources_that_cannot_be_opened(tmp_path):
    missing = str(tmp_path / "missing.tif")
    with pytest.raises(InputError) as e:
        with open_source(FileSource(missing)):
            pass
    assert (e.value.code, e.value.field) == (P.E_NOT_FOUND, "source")
    assert e.value.message == f"raster file not found on the engine's computer: {missing}"
    notes = tmp_path / "notes.tif"
    notes.write_text("this is not a GeoTIFF")
    with pytest.raises(InputError) as e:
        with open_source(FileSource(str(notes))):
            pass
    assert (e.value.code, e.value.field) == (P.E_INVALID_INPUT, "source")
    assert e.value.message.startswith(f"{notes} is not a raster GDAL can read (file): ")
    with pytest.raises(InputError) as e:
        with open_source(PIXELS):
            pass
    assert e.value.code == P.E_BAD_REQUEST and "needs one array frame" in e.value.message


def test_a_window_reads_the_grid_and_pads_beyond_it():
    img = _image()
    img[:, 5:8, 10:12] = 0  # no-data
    with _reader(img) as reader:
        assert (reader.grid.width, reader.grid.height) == (30, 20)
        whole, valid = reader.read(Window(0, 0, 20, 30))
        assert whole.dtype == np.uint8 and np.array_equal(whole[:, valid], img[:, valid])
        want = np.ones((20, 30), bool)
        want[5:8, 10:12] = False
        assert np.array_equal(valid, want)
        # 2 rows above and 3 columns left of the grid: mirrored pixels, not valid
        part, valid = reader.read(Window(-2, -3, 6, 8))
        assert part.shape == (3, 6, 8) and np.array_equal(part[:, 2:, 3:], img[:, :4, :5])
        assert np.array_equal(part[:, 0, 3:], img[:, 2, :5])  # row -2 mirrors row 2
        assert np.array_equal(part[:, 2:, 0], img[:, :4, 3])  # column -3 mirrors column 3
        assert not valid[:2].any() and not valid[:, :3].any() and valid[2:, 3:].all()
        with pytest.raises(ValueError, match="misses the grid"):
            reader.read(Window(20, 0, 5, 5))
    with open_source(PIXELS, img) as ds, pytest.raises(ValueError, match="'raise' or 'mask'"):
        WindowReader(ds, plan_grid(ds, None, None, 0.1, 3), damaged="skip")


def test_the_rasters_own_alpha_band_is_the_valid_mask(tmp_path):
    """A real held-out tile (0.1 m) as RGBA whose alpha hides a disc of 80 px radius
    and nothing else, with a black patch (0, 0, 0) that stays opaque, as shadows in
    orthophotos are: the valid mask is the alpha band as rasterio reads it by hand,
    not the pixels GDAL fills with black, and the valid pixels are the file's RGB."""
    import rasterio
    from rasterio.enums import ColorInterp
    with rasterio.open(heldout("PV01_325192_1204246")) as src:
        rgb, prof = src.read(), dict(src.profile)
    rows, cols = np.mgrid[:rgb.shape[1], :rgb.shape[2]]
    alpha = np.where((rows - 100) ** 2 + (cols - 140) ** 2 < 80 ** 2, 0, 255).astype(np.uint8)
    rgb[:, 220:250, 10:40] = 0
    path = write_raster(tmp_path / "rgba.tif", np.concatenate([rgb, alpha[None]]), prof,
                        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                     ColorInterp.alpha])
    with rasterio.open(path) as ds:
        by_hand_alpha, by_hand_rgb = ds.read(4) > 0, ds.read([1, 2, 3])
        reader = WindowReader(ds, plan_grid(ds, None, None, 0.1, 3))
        try:
            img, valid = reader.read(Window(0, 0, *by_hand_alpha.shape))
        finally:
            reader.close()
    assert 0.25 < 1 - by_hand_alpha.mean() < 0.35
    assert (by_hand_alpha & ~by_hand_rgb.any(0)).sum() >= 900  # opaque black pixels
    assert np.array_equal(valid, by_hand_alpha)
    assert np.array_equal(img[:, valid], by_hand_rgb[:, valid])


def test_read_ahead_yields_each_group_in_order_and_raises_in_the_caller():
    img = _image()
    groups = [[(0, 0), (0, 10)], [(10, 20)]]
    with _reader(img) as reader:
        got = list(read_ahead(reader, groups, (10, 10)))
    assert [g for g, _, _ in got] == groups
    assert got[0][1].shape == (2, 3, 10, 10) and len(got[0][2]) == 2
    assert np.array_equal(got[0][1][1], img[:, :10, 10:20])
    assert np.array_equal(got[1][1][0], img[:, 10:20, 20:30]) and got[1][2][0].all()

    class Broken:
        def read(self, window):
            raise InputError("cannot read")

    with pytest.raises(InputError, match="cannot read"):
        list(read_ahead(Broken(), groups, (10, 10)))


def test_a_read_failure_names_the_damaged_tile_and_gdal_s_reason():
    def chain():
        try:
            try:
                raise OSError("TIFFFillStrip: Read error at scanline 304")
            except OSError as inner:
                raise OSError("/data/tiles/t3.tif, band 1: IReadBlock failed") from inner
        except OSError as mid:
            raise RuntimeError("Read failed.") from mid

    with pytest.raises(RuntimeError) as e:
        chain()
    err = read_failure("/data/mosaic.vrt", e.value)
    assert err.code == P.E_INVALID_INPUT and err.damaged == "/data/tiles/t3.tif"
    assert err.message == ("cannot read the pixels of /data/mosaic.vrt (damaged part: "
                           "/data/tiles/t3.tif): the file is damaged or truncated "
                           "(TIFFFillStrip: Read error at scanline 304). Check or re-create "
                           "the file (e.g. gdalinfo -checksum)")
    plain = read_failure("/data/a.tif", RuntimeError("short read"))
    assert plain.damaged == "a.tif" and "damaged part" not in plain.message
    assert "truncated (short read)" in plain.message


def test_truncated_geotiff_is_invalid_input_naming_the_file(tmp_path):
    """The first 300 kB of the Vienna orthophoto: the header opens, the pixels fail."""
    cut = tmp_path / "vienna cut.tif"
    cut.write_bytes(VIENNA.read_bytes()[:300_000])
    req = {"type": "detect", "model": DEFAULT_MODEL, "v": 1, "id": "t",
           "source": {"kind": "file", "path": str(cut)}}
    with pytest.raises(JobError) as info:
        D.run_detect(P.validate_request(req), [])
    err = info.value
    assert err.code == P.E_INVALID_INPUT
    assert str(cut) in err.message and "damaged or truncated" in err.message
    assert "Read error at scanline" in err.message  # GDAL's own reason, kept
