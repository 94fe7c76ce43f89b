"""The coarser-GSD simulation of ``tools.cv`` (its folds:
tests/backend/learning/test_data.py)."""

import numpy as np

from tools.cv import coarsen, to_coarse


def test_coarsen_averages_blocks_and_majority_votes_the_mask():
    img = np.zeros((3, 6, 6), np.uint8)
    img[:, :3, :3] = 90                       # one 3 x 3 block at 90, the rest 0
    mask = np.zeros((6, 6), np.uint8)
    mask[:3, :2] = 1                          # 6 of 9 pixels of the block: panel
    mask[3:, 3:4] = 1                         # 3 of 9: not
    up, ref = coarsen(img, mask, 3)
    assert up.shape == (3, 6, 6) and up.dtype == np.uint8
    assert ref.tolist() == [[True, False], [False, False]]
    assert up[:, 1, 1].tolist() == [90, 90, 90] and up[:, 4, 4].tolist() == [0, 0, 0]
    pred = np.zeros((6, 6), bool)
    pred[:2, :3] = True                       # 6 of 9: majority
    assert to_coarse(pred, 3).tolist() == [[True, False], [False, False]]
    same, ref1 = coarsen(img, mask, 1)
    assert same is img and ref1.sum() == mask.sum()


def test_coarser_imagery_run_at_another_gsd():
    """0.3 m imagery run at 0.15 m: two run pixels a coarse pixel; run at 0.3 m: the
    coarse pixels themselves (the block means); the reference is the same."""
    img = np.zeros((3, 6, 6), np.uint8)
    img[:, :3, :3] = 90
    mask = np.zeros((6, 6), np.uint8)
    mask[:3, :2] = 1
    half, ref = coarsen(img, mask, 3, 1.5)
    assert half.shape == (3, 4, 4) and ref.tolist() == [[True, False], [False, False]]
    assert half[:, 0, 0].tolist() == [90, 90, 90] and half[:, 3, 3].tolist() == [0, 0, 0]
    native, ref3 = coarsen(img, mask, 3, 3)
    assert native[0].tolist() == [[90, 0], [0, 0]] and (ref3 == ref).all()
    pred = np.zeros((4, 4), bool)
    pred[:2, :1] = True                       # 2 of 4: a tie is a panel (>= half)
    assert to_coarse(pred, 2).tolist() == [[True, False], [False, False]]
