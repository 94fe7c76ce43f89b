"""protocol.metrics on masks drawn by hand: component labels, pixel counts, object
matching at its IoU threshold, greedy matching order, and the summary's ratios, each
against constants worked out from the definitions (8-connected objects of >= 20 px,
matched at IoU >= 0.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.metrics import Counts, compare, components


def _strip(width: int, *spans) -> np.ndarray:
    """A 2-row mask of ``width`` columns, True on the column spans ``(start, stop)``."""
    m = np.zeros((2, width), bool)
    for a, b in spans:
        m[:, a:b] = True
    return m


# ----------------------------------------------------------------------------- objects

def test_components_label_kept_objects_in_scan_order():
    mask = np.zeros((8, 30), bool)
    mask[0:4, 0:5] = True            # 20 px: kept (the minimum)
    mask[0:3, 10:16] = True          # 18 px: dropped
    mask[4:6, 20:24] = True          # 8 px ...
    mask[6:8, 24:30] = True          # ... + 12 px touching it diagonally: one object of 20
    labels, n = components(mask)
    assert n == 2 and labels.dtype == np.int32
    expected = np.zeros((8, 30), np.int32)
    expected[0:4, 0:5] = 1
    expected[4:6, 20:24] = 2
    expected[6:8, 24:30] = 2
    np.testing.assert_array_equal(labels, expected)


def test_components_min_pixels_and_empty_masks():
    mask = np.zeros((5, 5), np.uint8)
    mask[1, 1] = mask[3, 3] = 1
    labels, n = components(mask, min_pixels=1)
    assert n == 2 and labels[1, 1] == 1 and labels[3, 3] == 2 and labels.sum() == 3
    labels, n = components(mask, min_pixels=2)
    assert n == 0 and not labels.any()
    labels, n = components(np.zeros((4, 6), bool))
    assert n == 0 and labels.dtype == np.int32 and labels.shape == (4, 6)
    assert not labels.any()


# ----------------------------------------------------------------------------- compare

def test_pixel_counts_and_nodata():
    pred = np.zeros((4, 4), bool)
    ref = np.zeros((4, 4), bool)
    pred[0, :3] = True               # 3 px
    ref[0, 1:] = True                # 3 px, 2 shared
    ref[3, 3] = True
    c = compare(pred, ref)
    assert (c.tp_px, c.fp_px, c.fn_px) == (2, 1, 2)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = valid[3, 3] = False
    c = compare(pred, ref, valid=valid)
    assert (c.tp_px, c.fp_px, c.fn_px) == (2, 0, 1)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (0, 0, 0)    # all below 20 px


def test_shapes_must_agree():
    with pytest.raises(ValueError) as e:
        compare(np.zeros((2, 3), bool), np.zeros((3, 2), bool))
    assert str(e.value) == "prediction (2, 3) and reference (3, 2) differ in shape"


def test_an_object_matches_at_iou_half_and_not_below():
    ref = _strip(40, (0, 24))                       # 48 px
    half = _strip(40, (0, 12))                      # 24 px inside it: IoU 24 / 48 = 0.5
    c = compare(half, ref)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (1, 0, 0)
    assert c.matched_ious == [0.5]
    below = half.copy()
    below[1, 11] = False                            # 23 px: IoU 23 / 48 < 0.5
    c = compare(below, ref)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (0, 1, 1) and c.matched_ious == []
    # the threshold is a parameter
    c = compare(below, ref, iou_match=23 / 48)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (1, 0, 0)


def test_small_objects_count_as_pixels_but_not_as_objects():
    ref = _strip(40, (0, 10), (20, 30))             # two objects of 20 px
    pred = _strip(40, (0, 10), (20, 29))            # 20 px and 18 px
    c = compare(pred, ref)
    assert (c.tp_px, c.fp_px, c.fn_px) == (38, 0, 2)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (1, 0, 1)
    c = compare(pred, ref, min_pixels=18)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (2, 0, 0)
    assert c.matched_ious == [1.0, 0.9]
    # min_pixels holds on the reference side too
    c = compare(pred, pred, min_pixels=18)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (2, 0, 0)
    c = compare(pred, pred, min_pixels=19)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (1, 0, 0)


def test_greedy_matching_takes_the_highest_iou_first():
    """With a low threshold one prediction may reach two references: it is matched to
    the one of higher IoU (0.4, not 0.3), and the other is missed."""
    pred = _strip(50, (10, 40))                      # 60 px
    ref = _strip(50, (0, 22), (24, 50))              # 44 px (IoU 24/80) and 52 px (32/80)
    c = compare(pred, ref, iou_match=0.25)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (1, 0, 1)
    assert c.matched_ious == [pytest.approx(0.4)]


def test_a_reference_is_matched_once():
    """Two predictions over one reference, both above a lowered threshold: the better
    one matches, the other is a false object; a third pair of lower IoU after them is
    still matched."""
    ref = _strip(80, (0, 40), (50, 75))              # 80 px, 50 px
    pred = _strip(80, (0, 20), (22, 40), (50, 60))   # IoU 40/80, 36/80; 20/50
    c = compare(pred, ref, iou_match=0.25)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (2, 1, 0)
    assert c.matched_ious == [0.5, 0.4]
    assert (c.tp_px, c.fp_px, c.fn_px) == (96, 0, 34)


def test_masks_of_any_nonzero_value_count_as_true():
    """uint8 masks of class ids (2, 4: no bit in common with True) count like bool
    masks, pixels and objects."""
    ref = _strip(40, (0, 24))
    pred = _strip(40, (0, 12), (30, 40))
    expected = compare(pred, ref)
    got = compare(pred.astype(np.uint8) * 2, ref.astype(np.uint8) * 4)
    assert (got.tp_px, got.fp_px, got.fn_px) == (24, 20, 24)
    assert (got.tp_obj, got.fp_obj, got.fn_obj) == (1, 1, 0)
    assert got == expected


def test_objects_without_a_counterpart():
    ref = _strip(60, (0, 10))
    pred = _strip(60, (30, 45))
    c = compare(pred, ref)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (0, 1, 1)
    c = compare(pred, np.zeros_like(ref))
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (0, 1, 0)
    c = compare(np.zeros_like(pred), ref)
    assert (c.tp_obj, c.fp_obj, c.fn_obj) == (0, 0, 1)


# ----------------------------------------------------------------------------- counts

def test_counts_add_and_summary():
    a = Counts(tp_px=4, fp_px=1, fn_px=3, tp_obj=2, fp_obj=1, fn_obj=0, matched_ious=[0.6])
    b = Counts(tp_px=2, fp_px=1, fn_px=1, tp_obj=1, fp_obj=0, fn_obj=2, matched_ious=[0.9])
    assert a.add(b) is a
    assert (a.tp_px, a.fp_px, a.fn_px, a.tp_obj, a.fp_obj, a.fn_obj) == (6, 2, 4, 3, 1, 2)
    assert a.matched_ious == [0.6, 0.9] and b.matched_ious == [0.9]
    assert a.summary() == {
        "pixel_iou": 0.5, "pixel_precision": 0.75, "pixel_recall": 0.6,
        "pixel_f1": pytest.approx(12 / 18), "object_precision": 0.75,
        "object_recall": 0.6, "object_f1": pytest.approx(6 / 9), "objects_true": 5,
        "objects_pred": 4, "false_objects": 1, "missed_objects": 2,
        "mean_matched_iou": pytest.approx(0.75)}


def test_summary_of_nothing_is_undefined_not_zero():
    s = Counts().summary()
    assert set(s) == {"pixel_iou", "pixel_precision", "pixel_recall", "pixel_f1",
                      "object_precision", "object_recall", "object_f1", "objects_true",
                      "objects_pred", "false_objects", "missed_objects", "mean_matched_iou"}
    for k in ("pixel_iou", "pixel_precision", "pixel_recall", "pixel_f1",
              "object_precision", "object_recall", "object_f1", "mean_matched_iou"):
        assert isinstance(s[k], float) and math.isnan(s[k]), k
    assert (s["objects_true"], s["objects_pred"], s["false_objects"],
            s["missed_objects"]) == (0, 0, 0, 0)
    # defined as soon as its denominator is: all wrong is 0, not NaN
    s = Counts(fp_px=3, fp_obj=1).summary()
    assert s["pixel_iou"] == 0.0 and s["pixel_precision"] == 0.0
    assert math.isnan(s["pixel_recall"]) and s["object_f1"] == 0.0
    assert type(s["pixel_iou"]) is float
