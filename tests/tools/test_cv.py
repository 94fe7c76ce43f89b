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
    assert to_coarse(pred, (2, 2)).tolist() == [[True, False], [False, False]]
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
    assert to_coarse(pred, (2, 2)).tolist() == [[True, False], [False, False]]


def test_imagery_finer_than_the_model_is_averaged_down_to_it():
    """0.2 m imagery read by a 0.3 m model: a tile of 12 x 12 px at 0.1 m is 6 x 6 at
    0.2 m and 4 x 4 at 0.3 m, a constant stays constant, and a prediction at 0.3 m is
    scored on the 0.2 m grid by the share it covers."""
    img = np.full((3, 12, 12), 60, np.uint8)
    mask = np.zeros((12, 12), np.uint8)
    mask[:6, :6] = 1
    run, ref = coarsen(img, mask, 2, 3)
    assert run.shape == (3, 4, 4) and (run == 60).all()
    assert ref.shape == (6, 6) and ref[:3, :3].all() and not ref[3:].any()
    pred = np.zeros((4, 4), bool)
    pred[:2, :2] = True                       # the top-left 0.6 m x 0.6 m at 0.3 m
    on_ref = to_coarse(pred, ref.shape)
    assert on_ref.shape == (6, 6) and on_ref[:3, :3].all() and not on_ref[3:, :].any()
