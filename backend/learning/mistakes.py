"""Where the current model and the user's corrections disagree.

:func:`diff_maps` counts the differences between the model's and the corrected class
maps, per pixel and per object (8-connected components of at least
:data:`MIN_MISTAKE_PX` pixels, matched at IoU 0.5 as in :mod:`protocol.metrics`);
:func:`mistake_maps` turns them into the pixel loss weights of a fine-tuning and the
pixels its chips are centred on.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

#: Smallest mistake component (pixels) that counts as an object-level mistake.
MIN_MISTAKE_PX = 20


def diff_maps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
              n_classes: int) -> Dict[str, Any]:
    """Pixel and object differences between the model's and the corrected class maps.

    Args:
        pred, target: uint8 (H, W) class maps (0 background, 1..``n_classes``).
        valid: bool (H, W) the pixels compared (0 in both maps elsewhere).
        n_classes: the model's classes.

    Returns:
        ``fp_px`` (predicted foreground, corrected background: deleted or shrunk),
        ``fn_px`` (added or grown), ``class_change_px`` (foreground in both, other
        class); per object: ``fp_objects`` / ``fn_objects`` (unmatched predicted /
        corrected objects at IoU 0.5, per class), ``deleted`` (predicted objects the
        user removed completely), ``added`` (corrected objects the model missed
        completely), ``class_change_objects`` (corrected objects mostly predicted as
        another class), ``reference_objects``, ``predicted_objects``.
    """
    from protocol.metrics import compare, components
    pred = np.where(valid, pred, 0)
    target = np.where(valid, target, 0)
    pf, tf = pred > 0, target > 0
    s: Dict[str, Any] = {"fp_px": int((pf & ~tf).sum()), "fn_px": int((~pf & tf).sum()),
                         "class_change_px": int((pf & tf & (pred != target)).sum())}
    fp_o = fn_o = ref_o = pred_o = 0
    for k in range(1, n_classes + 1):
        c = compare(pred == k, target == k)
        fp_o += c.fp_obj
        fn_o += c.fn_obj
        ref_o += c.tp_obj + c.fn_obj
        pred_o += c.tp_obj + c.fp_obj
    lp, n_p = components(pf, MIN_MISTAKE_PX)
    lt, n_t = components(tf, MIN_MISTAKE_PX)
    deleted = int(n_p - len(np.unique(lp[(lp > 0) & tf]))) if n_p else 0
    added = int(n_t - len(np.unique(lt[(lt > 0) & pf]))) if n_t else 0
    changed = 0
    for j in range(1, n_t + 1):
        m = lt == j
        tcls = np.bincount(target[m], minlength=n_classes + 1)[1:].argmax() + 1
        pc = np.bincount(pred[m], minlength=n_classes + 1)
        if pc[1:].sum() > m.sum() / 2 and pc[1:].argmax() + 1 != tcls:
            changed += 1
    s.update({"fp_objects": fp_o, "fn_objects": fn_o, "deleted": deleted, "added": added,
              "class_change_objects": changed, "reference_objects": ref_o,
              "predicted_objects": pred_o})
    return s


def mistake_maps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
                 mistake_weight: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(weight float32 (H, W), hard bool (H, W))``.

    ``weight`` is 1 on correct pixels, ``mistake_weight`` on every pixel where the model
    and the correction disagree (including slivers along shifted edges), 0 outside the
    valid data. ``hard`` marks the object-level mistakes only (disagreement components
    of at least :data:`MIN_MISTAKE_PX` pixels after removing 1-pixel edge slivers):
    that is where chip centres are drawn.
    """
    from scipy import ndimage

    from protocol.metrics import components
    wrong = (pred != target) & valid
    weight = np.where(wrong, np.float32(mistake_weight), np.float32(1.0)).astype(np.float32)
    weight[~valid] = 0.0
    core = ndimage.binary_opening(wrong, structure=np.ones((3, 3), bool))
    lab, _ = components(core, MIN_MISTAKE_PX)
    return weight, lab > 0
