"""tools.byom_agreement: the two references it compares Ortholens's polygons with, on
small synthetic graph outputs."""

from __future__ import annotations

import numpy as np

from tools.byom_agreement import deepness_masks, ortholens_masks


def _softmax(p1: np.ndarray) -> np.ndarray:
    return np.stack([1 - p1, p1]).astype(np.float32)


def test_a_softmax_below_half_is_a_class_in_ortholens_not_in_deepness():
    p1 = np.zeros((12, 12), np.float32)
    p1[2:8, 2:8] = 0.4                     # reaches 0.33, loses to the background
    p1[9:11, 9:11] = 0.9                   # 4 pixels: wins everywhere
    valid = np.ones((12, 12), bool)
    ours, = ortholens_masks([_softmax(p1)], valid, 0.33, 1)
    theirs, = deepness_masks([_softmax(p1)], valid, 0.33, 1)
    assert ours.sum() == 36 + 4 and theirs.sum() == 4
    # Ortholens drops objects under the minimum size; the median filter of side 3
    # removes the 2 x 2 block's corners
    ours, = ortholens_masks([_softmax(p1)], valid, 0.33, 5)
    assert ours.sum() == 36
    theirs, = deepness_masks([_softmax(p1)], valid, 0.33, 3)
    assert theirs.sum() == 0


def test_a_sigmoid_output_and_the_valid_mask():
    y = np.zeros((1, 6, 6), np.float32)
    y[0, 1:5, 1:5] = 0.7
    valid = np.ones((6, 6), bool)
    valid[:, 4:] = False                   # no data there
    ours, = ortholens_masks([y], valid, 0.5, 1)
    theirs, = deepness_masks([y], valid, 0.5, 1)
    assert np.array_equal(ours, theirs) and ours.sum() == 12
