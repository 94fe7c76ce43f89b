"""Where the current model and the corrections disagree."""

from __future__ import annotations

import numpy as np

def test_diff_maps_counts_mistakes():
    from backend.learning.mistakes import diff_maps, mistake_maps
    pred = np.zeros((60, 60), np.uint8)
    target = np.zeros((60, 60), np.uint8)
    pred[5:15, 5:15] = 1                 # deleted by the user (false positive)
    target[30:40, 30:40] = 1             # added by the user (missed)
    pred[45:55, 5:15] = 1                # kept but re-classed to 2
    target[45:55, 5:15] = 2
    valid = np.ones_like(pred, bool)
    s = diff_maps(pred, target, valid, 2)
    assert s["fp_px"] == 100 and s["fn_px"] == 100 and s["class_change_px"] == 100
    assert s["deleted"] == 1 and s["added"] == 1 and s["class_change_objects"] == 1
    assert s["fp_objects"] == 2 and s["fn_objects"] == 2
    w, hard = mistake_maps(pred, target, valid, 5.0)
    assert w.max() == 5.0 and w.min() == 1.0 and hard.sum() == 300
