"""Segmentation losses: cross-entropy + soft Dice (Milletari et al. 2016, V-Net).

Dice is averaged over the foreground classes ``1..n_classes`` so that the small panel
class counts as much as the background in the gradient. :func:`dice_ce_loss` trains a
model from scratch (``backend.learning.train``); :func:`weighted_dice_ce_loss` fine-tunes
on corrections (``backend.learning.finetune``), where pixels carry loss weights (higher
on the model's mistakes, 0 on padding).
"""

from __future__ import annotations


def _soft_dice_term(p, target, n_classes: int, mask=None):
    """``sum_k (1 - soft Dice of class k)`` over ``k = 1..n_classes``.

    Args:
        p: float softmax probabilities (N, C, H, W).
        target: int64 class ids (N, H, W).
        mask: float (N, H, W) of 0/1 (pixels that count), or None for all pixels.
    """
    dice = 0.0
    for k in range(1, n_classes + 1):
        t = (target == k).float()
        pk = p[:, k]
        if mask is not None:
            t = t * mask
            pk = pk * mask
        dice = dice + 1 - (2 * (pk * t).sum() + 1) / (pk.sum() + t.sum() + 1)
    return dice


def dice_ce_loss(logits, target, n_classes: int, hard_negatives: float = 0.0):
    """Cross-entropy + (1 - soft Dice) averaged over the foreground classes, plus with
    ``hard_negatives`` the mean cross-entropy of the hardest background pixels.

    Hard negatives (online hard example mining, Shrivastava et al. 2016, CVPR): of the
    background pixels of the batch, the ``hard_negatives`` share with the highest
    cross-entropy (the roofs, skylights and shadows the model takes for panels) count
    once more, so that the few of them in a batch are not drowned by easy background.

    Args:
        logits: float32 (N, 1 + n_classes, H, W).
        target: int64 (N, H, W) class ids.
        n_classes: foreground classes.
        hard_negatives: share of background pixels counted again, 0..1 (0: none).

    Returns:
        A scalar tensor.
    """
    import torch
    import torch.nn.functional as F
    loss = F.cross_entropy(logits, target)
    if hard_negatives > 0:
        bg = F.cross_entropy(logits, target, reduction="none")[target == 0]
        k = int(round(hard_negatives * bg.numel()))
        if k > 0:
            loss = loss + torch.topk(bg, k, sorted=False).values.mean()
    p = torch.softmax(logits, 1)
    return loss + _soft_dice_term(p, target, n_classes) / n_classes


def weighted_dice_ce_loss(logits, target, weight, n_classes: int):
    """Pixel-weighted cross-entropy + soft Dice over the pixels of non-zero weight.

    Args:
        logits: float32 (N, 1 + n_classes, H, W).
        target: int64 (N, H, W) class ids.
        weight: float32 (N, H, W) pixel loss weights (0: the pixel does not count).
        n_classes: foreground classes.

    Returns:
        A scalar tensor: ``sum(ce * weight) / max(sum(weight), 1)`` + mean over the
        foreground classes of (1 - soft Dice) on the pixels of positive weight.
    """
    import torch
    import torch.nn.functional as F
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * weight).sum() / weight.sum().clamp(min=1.0)
    p = torch.softmax(logits, 1)
    m = (weight > 0).float()
    return ce + _soft_dice_term(p, target, n_classes, m) / n_classes
