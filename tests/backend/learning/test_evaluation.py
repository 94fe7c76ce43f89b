"""The evaluation of a candidate: an area in memory read like a raster, and the guard
a retrain uses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from protocol.window import Window
from backend.learning.evaluation import ArrayReader, choose_guard, guard_pixels


def test_array_reader_pads_tiles_beyond_the_image_as_invalid():
    image = np.arange(3 * 6 * 8, dtype=np.uint8).reshape(3, 6, 8)
    r = ArrayReader(image, np.ones((6, 8), bool))
    img, valid = r.read(Window(0, 0, 4, 4))
    assert (img == image[:, :4, :4]).all() and valid.all()
    img, valid = r.read(Window(-2, 6, 4, 4))
    assert img.shape == (3, 4, 4) and valid.shape == (4, 4)
    assert not valid[:2].any() and not valid[:, 2:].any() and valid[2:, :2].all()
    assert (img[:, 2:, :2] == image[:, :2, 6:]).all()


def test_a_guard_not_asked_for_is_skipped_without_a_warning():
    warnings = []
    assert choose_guard(SimpleNamespace(), False, [], warnings) is None and warnings == []
    assert guard_pixels(None, 0.1) == 0
