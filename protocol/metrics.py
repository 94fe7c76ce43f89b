"""Segmentation metrics: pixel IoU and object-level precision/recall/F1.

Object definition (the project's benchmark convention, also used for the anchor in
DEVELOPERS.md): objects are 8-connected components of a binary mask with at least
``min_pixels`` (20) pixels; a predicted object matches a reference object when their
IoU is >= 0.5. With that threshold a match is unique (two objects can't both have
IoU > 0.5 with a third that does not overlap both by more than half), so greedy
matching by descending IoU is optimal (as in the COCO/SpaceNet evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


def components(mask: np.ndarray, min_pixels: int = 20) -> Tuple[np.ndarray, int]:
    """Label the 8-connected components of ``mask`` that have >= ``min_pixels`` px.

    Args:
        mask: bool/uint8 array (H, W).
        min_pixels: smallest component kept.

    Returns:
        ``(labels, n)``: int32 (H, W) with 0 = none and 1..n the kept components.
    """
    labels, n = ndimage.label(np.asarray(mask, bool), structure=_EIGHT)
    if n == 0:
        return labels.astype(np.int32), 0
    sel = labels > 0
    kept = labels[sel]
    sizes = np.bincount(kept, minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    labels = labels.astype(np.int32, copy=False)
    if keep[1:].all():  # nothing to drop or renumber
        return labels, n
    remap = np.zeros(n + 1, np.int32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels[sel] = remap[kept]  # only the labelled pixels (objects are sparse)
    return labels, int(keep.sum())


@dataclass
class Counts:
    """Accumulated pixel and object counts over many tiles."""

    tp_px: int = 0
    fp_px: int = 0
    fn_px: int = 0
    tp_obj: int = 0
    fp_obj: int = 0
    fn_obj: int = 0
    matched_ious: List[float] = field(default_factory=list)

    def add(self, other: "Counts") -> "Counts":
        for k in ("tp_px", "fp_px", "fn_px", "tp_obj", "fp_obj", "fn_obj"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.matched_ious += other.matched_ious
        return self

    def summary(self) -> Dict[str, float]:
        """Pixel IoU/precision/recall/F1 and object precision/recall/F1 (0..1)."""
        def ratio(a: float, b: float) -> float:
            return float(a / b) if b else float("nan")
        p_px = ratio(self.tp_px, self.tp_px + self.fp_px)
        r_px = ratio(self.tp_px, self.tp_px + self.fn_px)
        p_o = ratio(self.tp_obj, self.tp_obj + self.fp_obj)
        r_o = ratio(self.tp_obj, self.tp_obj + self.fn_obj)
        return {
            "pixel_iou": ratio(self.tp_px, self.tp_px + self.fp_px + self.fn_px),
            "pixel_precision": p_px, "pixel_recall": r_px,
            "pixel_f1": ratio(2 * self.tp_px, 2 * self.tp_px + self.fp_px + self.fn_px),
            "object_precision": p_o, "object_recall": r_o,
            "object_f1": ratio(2 * self.tp_obj, 2 * self.tp_obj + self.fp_obj + self.fn_obj),
            "objects_true": self.tp_obj + self.fn_obj, "objects_pred": self.tp_obj + self.fp_obj,
            "false_objects": self.fp_obj, "missed_objects": self.fn_obj,
            "mean_matched_iou": float(np.mean(self.matched_ious)) if self.matched_ious else float("nan"),
        }


def compare(pred: np.ndarray, ref: np.ndarray, min_pixels: int = 20,
            iou_match: float = 0.5, valid: np.ndarray = None) -> Counts:
    """Pixel and object counts of a binary prediction against a binary reference.

    Args:
        pred, ref: bool/uint8 (H, W) masks of one class.
        min_pixels: objects smaller than this are ignored on both sides.
        iou_match: IoU needed for a predicted object to match a reference object.
        valid: optional bool (H, W); pixels outside it (nodata) are not counted.

    Returns:
        :class:`Counts` for this pair.

    Raises:
        ValueError: shapes differ.
    """
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if valid is not None:
        pred = pred & valid
        ref = ref & valid
    c = Counts(tp_px=int((pred & ref).sum()), fp_px=int((pred & ~ref).sum()),
               fn_px=int((~pred & ref).sum()))
    lp, npred = components(pred, min_pixels)
    lr, nref = components(ref, min_pixels)
    if npred and nref:
        # intersection table via a joint histogram of label pairs
        both = (lp > 0) & (lr > 0)
        inter = np.zeros((npred + 1, nref + 1), np.int64)
        np.add.at(inter, (lp[both], lr[both]), 1)
        area_p = np.bincount(lp.ravel(), minlength=npred + 1)
        area_r = np.bincount(lr.ravel(), minlength=nref + 1)
        union = area_p[:, None] + area_r[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        iou[0, :] = 0
        iou[:, 0] = 0
        pairs = np.argwhere(iou >= iou_match)
        order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]]) if len(pairs) else []
        used_p, used_r = set(), set()
        for k in order:
            i, j = pairs[k]
            if i in used_p or j in used_r:
                continue
            used_p.add(i)
            used_r.add(j)
            c.matched_ious.append(float(iou[i, j]))
        c.tp_obj = len(used_p)
    c.fp_obj = npred - c.tp_obj
    c.fn_obj = nref - c.tp_obj
    return c
