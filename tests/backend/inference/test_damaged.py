"""Damaged rasters are the user's input problem, named as such: never ``internal``."""

from __future__ import annotations

import pytest

from backend.config import data_dir
from backend.inference import detect as D
from protocol.errors import JobError
import protocol as P

VIENNA = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"


def test_truncated_geotiff_is_invalid_input_naming_the_file(tmp_path):
    """The first 300 kB of the Vienna orthophoto: the header opens, the pixels fail."""
    cut = tmp_path / "vienna cut.tif"
    cut.write_bytes(VIENNA.read_bytes()[:300_000])
    req = {"type": "detect", "model": "pv-unet-efl0", "v": 1, "id": "t",
           "source": {"kind": "file", "path": str(cut)}}
    with pytest.raises(JobError) as info:
        D.run_detect(P.validate_request(req), [])
    err = info.value
    assert err.code == P.E_INVALID_INPUT
    assert str(cut) in err.message and "damaged or truncated" in err.message
    assert "Read error at scanline" in err.message  # GDAL's own reason, kept
