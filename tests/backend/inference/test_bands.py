"""backend.inference.bands: which bands a model reads (colour interpretation, grey,
alpha, explicit mappings, types that cannot be stretched) and the stretch of 16-bit
bands to 8 bits, on small in-memory rasters (imagery of these kinds through a whole
detection: tests/backend/inference/test_imagery.py)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from backend.inference.bands import alpha_band, choose_bands
from backend.inference.grid import plan_grid
from protocol.errors import InputError
from tests.support import FAR_GSD, open_raster, small_grid

#: 100 x 50 px of 0.3 m in MGI / Austria GK East (Vienna): x -1700..-1670, y 338545..338560.
VIENNA_GRID = small_grid()


def test_choose_bands():
    """The bands named red, green and blue, else the first ones; a lone grey band as R,
    G and B; never the alpha band; unused bands named in a warning."""
    ci = ColorInterp
    with open_raster(*VIENNA_GRID, colorinterp=[ci.red, ci.green, ci.blue]) as ds:
        assert choose_bands(ds, None, 3) == ([1, 2, 3], [])
        assert choose_bands(ds, [3, 2, 1], 3) == ([3, 2, 1], [])
        assert choose_bands(ds, [3, 3, 3], 3) == ([3, 3, 3], [])
        for req, msg in [([4, 1, 2], "band(s) [4] requested but the raster has 3"),
                         ([0, 1, 2], "band(s) [0] requested but the raster has 3"),
                         ([1, 2], "the model takes 3 bands; 2 given")]:
            with pytest.raises(InputError) as e:
                choose_bands(ds, req, 3)
            assert str(e.value) == msg
    with open_raster(*VIENNA_GRID, colorinterp=[ci.blue, ci.green, ci.red]) as ds:
        assert choose_bands(ds, None, 3) == ([3, 2, 1], [])
    with open_raster(*VIENNA_GRID[:3], 50, count=4,
                colorinterp=[ci.red, ci.green, ci.blue, ci.undefined]) as ds:
        assert alpha_band(ds) is None
        assert choose_bands(ds, None, 3) == ([1, 2, 3], [
            "the raster has 4 bands; bands [1, 2, 3] are used as RGB, band(s) [4] ignored"])
    with open_raster(*VIENNA_GRID[:3], 50, count=5,
                colorinterp=[ci.undefined, ci.undefined, ci.alpha, ci.undefined,
                             ci.undefined]) as ds:
        assert alpha_band(ds) == 3
        assert choose_bands(ds, None, 3) == ([1, 2, 4], [
            "the raster has 5 bands; bands [1, 2, 4] are used as RGB, band(s) [5] "
            "ignored; band 3 is the alpha (valid-data) mask"])
    grey = ("the raster has one band; it is used as grey for R, G and B (the model learnt "
            "colour imagery: expect lower accuracy)")
    with open_raster(*VIENNA_GRID[:3], 50, count=1) as ds:
        assert choose_bands(ds, None, 3) == ([1, 1, 1], [grey])
    with open_raster(*VIENNA_GRID[:3], 50, count=2, colorinterp=[ci.gray, ci.alpha]) as ds:
        assert choose_bands(ds, None, 3) == ([1, 1, 1], [grey])
    with open_raster(*VIENNA_GRID[:3], 50, count=2,
                     colorinterp=[ci.gray, ci.undefined]) as ds:
        with pytest.raises(InputError) as e:
            choose_bands(ds, None, 3)
        assert str(e.value) == ("the model needs 3 bands (RGB) but the raster has 2 "
                                "(uint8); choose a 3-band RGB orthophoto or give an "
                                "explicit band mapping")
        assert choose_bands(ds, None, 2) == ([1, 2], [])
    with open_raster(*VIENNA_GRID, dtype="uint16") as ds:
        assert choose_bands(ds, None, 3)[0] == [1, 2, 3]       # stretched, not refused
    with open_raster(*VIENNA_GRID, dtype="complex64") as ds:
        with pytest.raises(InputError) as e:
            choose_bands(ds, None, 3)
        assert str(e.value) == ("bands [1, 2, 3] are of type ['complex64'], which cannot "
                                "be stretched to the model's 8-bit input")


def _vrt(tmp_path, dtypes):
    """A VRT of 10 x 10 pixels in EPSG:31256 with one band per dtype (GDAL names)."""
    bands = []
    for i, dt in enumerate(dtypes, start=1):
        src = tmp_path / f"b{i}.tif"
        np_dt = {"Byte": "uint8", "UInt16": "uint16", "CFloat32": "complex64"}[dt]
        with MemoryFile() as _:
            import rasterio
            with rasterio.open(src, "w", driver="GTiff", width=10, height=10, count=1,
                               dtype=np_dt, crs="EPSG:31256",
                               transform=Affine(0.3, 0, -1700, 0, -0.3, 338560)) as w:
                w.write(np.zeros((1, 10, 10), np_dt))
        bands.append(f'<VRTRasterBand dataType="{dt}" band="{i}"><SimpleSource>'
                     f'<SourceFilename relativeToVRT="1">{src.name}</SourceFilename>'
                     f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>')
    vrt = tmp_path / "mixed.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="10" rasterYSize="10"><SRS>'
                   f'{CRS.from_epsg(31256).to_wkt()}</SRS><GeoTransform>-1700, 0.3, 0, '
                   f'338560, 0, -0.3</GeoTransform>{"".join(bands)}</VRTDataset>')
    return vrt


def test_only_the_bands_the_model_reads_must_be_stretchable(tmp_path):
    import rasterio
    with rasterio.open(_vrt(tmp_path, ["Byte", "Byte", "Byte", "CFloat32"])) as ds:
        assert ds.dtypes == ("uint8", "uint8", "uint8", "complex64")
        bands, _ = choose_bands(ds, None, 3)
        assert bands == [1, 2, 3]
        with pytest.raises(InputError) as e:
            choose_bands(ds, [4, 2, 1], 3)
        assert "bands [4, 2, 1] are of type ['complex64']" in str(e.value)
    with rasterio.open(_vrt(tmp_path, ["CFloat32", "Byte"])) as ds:
        with pytest.raises(InputError) as e:
            choose_bands(ds, None, 3)
        assert "the raster has 2 (complex64)" in str(e.value)


def _uint16_vienna():
    """The VIENNA_GRID raster as uint16: band b holds ``10000 (b - 1) + row * 100 + col``."""
    base = np.arange(5000, dtype=np.uint16).reshape(50, 100)
    return open_raster(*VIENNA_GRID, dtype="uint16",
                       data=np.stack([base + 10000 * b for b in range(3)]))


def test_16_bit_bands_are_stretched_by_their_2_and_98_percentiles():
    """Over the whole raster band 1 holds 0..4999: its 2nd and 98th percentiles are
    0.02 x 4999 and 0.98 x 4999 (linear interpolation); the warning says so."""
    expected = [(99.98 + 10000 * b, 4899.02 + 10000 * b) for b in range(3)]
    with _uint16_vienna() as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
    assert [v for r in g.stretch for v in r] == pytest.approx(
        [v for r in expected for v in r], abs=1e-9)
    info = dict(g.stretch_info)
    assert [v for r in info.pop("ranges") for v in r] == pytest.approx(
        [v for r in expected for v in r], abs=1e-6)
    assert info == {"mode": "percentile", "dtype": "uint16", "low": 2.0, "high": 98.0}
    assert g.warnings == ["the uint16 bands [1, 2, 3] were stretched to 8 bits by 2-98 % "
                          "percentiles (99.98-4899.02, 10100-14899, 20100-24899)", FAR_GSD]
    # over the left half only (columns 0..49): its own percentiles
    with _uint16_vienna() as ds:
        half = plan_grid(ds, [-1700, 338545, -1685, 338560], None, 0.1, 3)
    vals = (np.arange(50)[:, None] * 100 + np.arange(50)[None, :]).ravel()
    assert half.stretch[0] == pytest.approx(tuple(np.percentile(vals, [2, 98])), abs=1e-9)


def test_requested_stretches():
    from protocol.params import Stretch
    with _uint16_vienna() as ds:
        g = plan_grid(ds, None, None, 0.1, 3,
                      stretch=Stretch("minmax", min=(0, 0, 0), max=(1000, 2000, 3000)))
        assert g.stretch == [(0.0, 1000.0), (0.0, 2000.0), (0.0, 3000.0)]
        assert g.warnings[0] == ("the uint16 bands [1, 2, 3] were stretched to 8 bits by "
                                 "the given min/max (0-1000, 0-2000, 0-3000)")
        g = plan_grid(ds, None, None, 0.1, 3, stretch=Stretch("percentile", 10, 90))
        assert g.warnings[0].startswith("the uint16 bands [1, 2, 3] were stretched to 8 "
                                        "bits by 10-90 % percentiles (499.9-4499.1, ")
        g = plan_grid(ds, None, None, 0.1, 3, stretch=Stretch("none"))
        assert g.stretch == [(0.0, 255.0)] * 3 and g.stretch_info["mode"] == "none"
        assert g.warnings == [FAR_GSD]
    with open_raster(*VIENNA_GRID) as ds:
        g = plan_grid(ds, None, None, 0.1, 3)
        assert g.stretch is None and g.stretch_info is None
