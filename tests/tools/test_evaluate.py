"""tools.evaluate: coarser copies of held-out tiles are what coarser orthophotos show."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from tools.evaluate import coarser_copy
from tests.support import INSIDE

TILE = INSIDE.with_suffix("")


@pytest.mark.parametrize("gsd_m,factor", [(0.2, 2), (0.3, 3)])
def test_coarser_copy_is_the_block_mean_at_exactly_the_gsd(tmp_path, gsd_m, factor):
    """The image is the mean of each coarse pixel's fine pixels (as ``gdal_translate -tr
    G G -r average`` makes it), on a grid of exactly ``gsd_m``; the mask is a panel
    where at least half the fine pixels were."""
    image, ref, transform = coarser_copy(TILE.with_suffix(".tif"),
                                         TILE.parent / f"{TILE.name}_mask.tif", gsd_m,
                                         tmp_path)
    with rasterio.open(TILE.with_suffix(".tif")) as src:
        fine = src.read().astype(np.float64)
        origin = (src.transform.c, src.transform.f)
    with rasterio.open(TILE.parent / f"{TILE.name}_mask.tif") as src:
        fine_mask = src.read(1) > 0
    n = 256 // factor
    block = fine[:, :n * factor, :n * factor].reshape(3, n, factor, n, factor).mean((2, 4))
    share = fine_mask[:n * factor, :n * factor].reshape(n, factor, n, factor).mean((1, 3))
    with rasterio.open(image) as ds:
        coarse = ds.read().astype(np.float64)
        assert ds.transform == transform
    assert transform.a == pytest.approx(gsd_m) and transform.e == pytest.approx(-gsd_m)
    assert (transform.c, transform.f) == pytest.approx(origin)
    assert coarse.shape[1:] == ref.shape == (round(25.6 / gsd_m),) * 2
    assert np.abs(coarse[:, :n, :n] - block).max() <= 0.5 + 1e-9  # rounding to uint8 only
    assert np.array_equal(ref[:n, :n], share >= 0.5)
    assert ref.any() and not ref.all()
