"""tools.resampling_check: GDAL's bilinear warp of a coarsened tile is the read that
``tools.cv`` scores (its own bilinear resampling), and the other modes differ from it."""

from __future__ import annotations

import numpy as np

from backend.learning import data as pvdata
from tests.support import needs_real
from tools.cv import coarsen
from tools.resampling_check import warped


@needs_real
def test_gdal_bilinear_matches_the_cross_validation_read_and_sharper_modes_do_not():
    img, mask = pvdata.list_tiles("train")[0].read()
    ours, ref = coarsen(img, mask, 3)
    diff = {m: np.abs(warped(img, 3, m).astype(int) - ours).mean()
            for m in ("bilinear", "cubic", "lanczos")}
    assert warped(img, 3, "bilinear").shape == ours.shape
    assert ref.shape == (img.shape[1] // 3, img.shape[2] // 3)
    assert diff["bilinear"] < 0.5 < diff["cubic"] < diff["lanczos"]
