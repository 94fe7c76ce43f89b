"""Training chips: their shapes and types, and zero weight where they were padded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from backend.learning.samplers import ChipSampler, ReplaySampler, pad_chip


def test_a_small_area_gives_padded_chips_with_zero_weight_there():
    valid = np.ones((10, 12), bool)
    hard = np.zeros_like(valid)
    hard[5, 6] = True
    area = SimpleNamespace(valid=valid, hard=hard, image=np.full((3, 10, 12), 7, np.uint8),
                           target=np.ones((10, 12), np.uint8),
                           weight=np.full((10, 12), 5.0, np.float32))
    s = ChipSampler([area], 16, np.random.default_rng(0), 1.0)
    img, tgt, wt = s.sample()
    assert img.shape == (3, 16, 16) and img.dtype == np.uint8 and (img == 7).all()
    assert tgt.shape == (16, 16) and tgt.dtype == np.int64 and (tgt == 1).all()
    assert wt.dtype == np.float32 and wt[:10, :12].min() == 5.0
    assert wt[10:].max() == 0.0 and wt[:, 12:].max() == 0.0
    assert len(s) == 1 and len(ChipSampler([SimpleNamespace(valid=~valid)], 8,
                                           np.random.default_rng(0))) == 0


def test_replay_chips_are_cut_from_the_tiles_and_weighted_one():
    arrays = {"images": np.arange(2 * 3 * 20 * 20, dtype=np.uint32).astype(np.uint8)
              .reshape(2, 3, 20, 20), "masks": np.ones((2, 20, 20), np.uint8)}
    img, tgt, wt = ReplaySampler(arrays, 8, np.random.default_rng(1)).sample()
    assert img.shape == (3, 8, 8) and tgt.dtype == np.int64 and (wt == 1.0).all()
    img, tgt, wt = ReplaySampler(arrays, 24, np.random.default_rng(1)).sample()
    assert img.shape == (3, 24, 24) and wt[:20, :20].min() == 1.0 and wt[20:].max() == 0.0


def test_pad_chip_reflects_where_it_can_and_repeats_the_edge_where_it_cannot():
    img = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    tgt, wt = img[0].copy(), np.ones((4, 4), np.float32)
    full = pad_chip(img, tgt, wt, 4)
    assert all(a is b for a, b in zip(full, (img, tgt, wt)))
    _, t, w = pad_chip(img, tgt, wt, 6)
    assert (t[4, :4] == tgt[2]).all() and w[4:].max() == 0.0   # reflected
    _, t, w = pad_chip(img[:, :2, :2], tgt[:2, :2], wt[:2, :2], 6)
    assert (t[5, :2] == tgt[1, :2]).all() and t.shape == (6, 6)  # the edge repeated
