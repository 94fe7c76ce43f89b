"""backend.learning.losses against the same losses written out by hand (in torch, and
pixel by pixel in float64 numpy) on a tiny example: cross-entropy per pixel, weighted by
the pixel weights, plus one minus the soft Dice of each foreground class over the pixels
that count; an ignore mask, and a batch where nothing counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.learning.losses import dice_ce_loss, weighted_dice_ce_loss

#: Foreground classes of the example (3 logit channels: background, 1, 2).
K = 2


def _example():
    """Logits (2, 3, 3, 4), targets (2, 3, 4) with every class present, and weights
    (2, 3, 4) that differ from pixel to pixel and are 0 on a border column."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, K + 1, 3, 4, generator=g) * 2
    target = torch.randint(0, K + 1, (2, 3, 4), generator=g)
    target[0, 0, :3] = torch.tensor([0, 1, 2])
    weight = torch.rand(2, 3, 4, generator=g) * 3 + 0.5
    weight[:, :, 3] = 0.0  # padding: counts for nothing
    return logits, target, weight


def _by_hand(logits, target, weight):
    """``sum(w * ce) / max(sum(w), 1)`` + the mean over k = 1..K of
    ``1 - (2 sum(p_k t_k) + 1) / (sum(p_k) + sum(t_k) + 1)`` on the pixels with w > 0."""
    p = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    ce = -torch.log(p.gather(1, target[:, None]))[:, 0]
    loss = (ce * weight).sum() / max(float(weight.sum()), 1.0)
    keep = weight > 0
    for k in range(1, K + 1):
        pk, tk = p[:, k][keep], (target == k).float()[keep]
        loss = loss + (1 - (2 * (pk * tk).sum() + 1) / (pk.sum() + tk.sum() + 1)) / K
    return loss


def test_the_weighted_loss_is_the_hand_computed_one():
    logits, target, weight = _example()
    got = weighted_dice_ce_loss(logits, target, weight, K)
    assert got.shape == () and torch.allclose(got, _by_hand(logits, target, weight), atol=1e-6)


def test_the_weights_change_the_loss_and_zero_weight_pixels_count_for_nothing():
    logits, target, weight = _example()
    base = weighted_dice_ce_loss(logits, target, weight, K)
    flat = torch.where(weight > 0, torch.ones_like(weight), weight)
    assert not torch.allclose(weighted_dice_ce_loss(logits, target, flat, K), base, atol=1e-3)
    # anything at a pixel of weight 0 (its logits, its target) leaves the loss as it is
    other_logits, other_target = logits.clone(), target.clone()
    other_logits[:, :, :, 3] = torch.randn(2, K + 1, 3) * 10
    other_target[:, :, 3] = (target[:, :, 3] + 1) % (K + 1)
    assert torch.allclose(weighted_dice_ce_loss(other_logits, other_target, weight, K), base,
                          atol=1e-6)
    # ... while a pixel that counts does change it
    other_logits = logits.clone()
    other_logits[0, :, 1, 1] += torch.tensor([5.0, -5.0, 0.0])
    assert not torch.allclose(weighted_dice_ce_loss(other_logits, target, weight, K), base,
                              atol=1e-3)


def test_small_total_weights_are_not_inflated():
    """Weights summing to less than 1 divide by 1: a few down-weighted pixels do not
    weigh like a whole batch."""
    logits, target, _ = _example()
    weight = torch.zeros(2, 3, 4)
    weight[0, 0, 0] = weight[1, 2, 1] = 0.25
    assert torch.allclose(weighted_dice_ce_loss(logits, target, weight, K),
                          _by_hand(logits, target, weight), atol=1e-6)


def test_the_unweighted_loss_is_the_mean_ce_plus_dice_over_every_pixel():
    logits, target, _ = _example()
    ones = torch.ones(2, 3, 4)
    got = dice_ce_loss(logits, target, K)
    assert torch.allclose(got, _by_hand(logits, target, ones), atol=1e-6)
    assert torch.allclose(got, weighted_dice_ce_loss(logits, target, ones, K), atol=1e-6)


def test_a_perfect_prediction_costs_almost_nothing_and_gradients_flow():
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = torch.nn.functional.one_hot(target, K + 1).permute(0, 3, 1, 2).float() * 30
    assert float(dice_ce_loss(logits, target, K)) == pytest.approx(0.0, abs=1e-3)
    logits = torch.zeros(1, K + 1, 2, 2, requires_grad=True)
    loss = weighted_dice_ce_loss(logits, target, torch.ones(1, 2, 2), K)
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def _numpy_reference(logits, target, weight):
    """The weighted loss in float64 numpy, pixel by pixel: a log-sum-exp softmax,
    ``-log p`` of the target class times the weight, divided by ``max(sum w, 1)``; then
    per foreground class the soft Dice over the pixels of positive weight only."""
    z = logits.double().numpy()
    t = target.numpy()
    w = weight.double().numpy()
    n, c, h, wd = z.shape
    num = 0.0
    p = np.empty_like(z)
    for i in range(n):
        for r in range(h):
            for q in range(wd):
                v = z[i, :, r, q]
                e = np.exp(v - v.max())
                p[i, :, r, q] = e / e.sum()
                num += w[i, r, q] * -np.log(p[i, t[i, r, q], r, q])
    loss = num / max(w.sum(), 1.0)
    keep = w > 0
    for k in range(1, c):
        pk = p[:, k][keep]
        tk = (t[keep] == k).astype(np.float64)
        loss += (1 - (2 * (pk * tk).sum() + 1) / (pk.sum() + tk.sum() + 1)) / (c - 1)
    return loss


@pytest.mark.parametrize("case", ["weights", "mask", "ones"])
def test_the_weighted_loss_equals_a_numpy_reference(case):
    """Weights that vary (with an ignored column), a 0/1 ignore mask alone, and all
    ones: the loss is the numpy float64 computation to 1e-5."""
    logits, target, weight = _example()
    if case == "mask":
        weight = (weight > 0).float()
        weight[1, 0, :2] = 0.0  # ignored pixels inside the image, not only the border
    elif case == "ones":
        weight = torch.ones_like(weight)
    got = float(weighted_dice_ce_loss(logits, target, weight, K))
    assert got == pytest.approx(_numpy_reference(logits, target, weight), abs=1e-5)


def test_an_ignore_mask_drops_its_pixels_from_both_terms():
    """With weights 1 and 0 the loss is the loss of the kept pixels alone: the same
    as the unweighted loss of a batch holding only them (one row here)."""
    logits, target, _ = _example()
    weight = torch.zeros(2, 3, 4)
    weight[0, 1] = 1.0  # row 1 of the first image counts, nothing else
    alone = dice_ce_loss(logits[:1, :, 1:2], target[:1, 1:2], K)
    assert torch.allclose(weighted_dice_ce_loss(logits, target, weight, K), alone, atol=1e-6)
    assert not torch.allclose(dice_ce_loss(logits, target, K), alone, atol=1e-3)


def test_an_all_ignored_batch_costs_nothing_and_moves_nothing():
    """Every weight 0 (a chip wholly padding or no-data): the loss is exactly 0, not
    NaN, and its gradient is zero everywhere."""
    logits, target, _ = _example()
    logits.requires_grad_(True)
    loss = weighted_dice_ce_loss(logits, target, torch.zeros(2, 3, 4), K)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().max()) == 0.0
    assert _numpy_reference(logits.detach(), target, torch.zeros(2, 3, 4)) == 0.0


def _numpy_unweighted(logits, target, hard_negatives):
    """The unweighted loss in float64 numpy: the mean ``-log p`` of the target class over
    every pixel, plus (hard negatives) the mean of the ``k = round(h * n_bg)`` largest
    ``-log p`` of the background pixels when k >= 1, plus the mean over the foreground
    classes of one minus the soft Dice over every pixel."""
    z = logits.double().numpy()
    t = target.numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    ce = -np.log(np.take_along_axis(p, t[:, None], 1)[:, 0])
    loss = ce.mean()
    bg = np.sort(ce[t == 0])[::-1]
    k = int(np.round(hard_negatives * bg.size))
    if k >= 1:
        loss += bg[:k].mean()
    c = z.shape[1]
    for cls in range(1, c):
        pk, tk = p[:, cls], (t == cls).astype(np.float64)
        loss += (1 - (2 * (pk * tk).sum() + 1) / (pk.sum() + tk.sum() + 1)) / (c - 1)
    return loss


def test_hard_negatives_add_the_mean_ce_of_the_hardest_background_pixels():
    """The example has n_bg background pixels: a share giving k = 1, 3 and every one of
    them adds the mean cross-entropy of the k hardest background pixels (not of the
    panel pixels, not of the easiest) to the plain loss, as the numpy reference does."""
    logits, target, _ = _example()
    n_bg = int((target == 0).sum())
    assert 5 <= n_bg < 24 and int((target == 1).sum()) > 0 and int((target == 2).sum()) > 0
    plain = float(dice_ce_loss(logits, target, K))
    assert plain == pytest.approx(_numpy_unweighted(logits, target, 0.0), abs=1e-5)
    for k in (1, 3, n_bg):
        share = k / n_bg
        got = float(dice_ce_loss(logits, target, K, hard_negatives=share))
        want = _numpy_unweighted(logits, target, share)
        assert got == pytest.approx(want, abs=1e-5), k
        assert got - plain > 0.05, k  # the hard negatives do count
    # k = 1 is the single hardest background pixel, by hand
    p = torch.softmax(logits.double(), 1)
    ce = -torch.log(p.gather(1, target[:, None]))[:, 0]
    hardest = float(ce[target == 0].max())
    got = float(dice_ce_loss(logits, target, K, hard_negatives=1 / n_bg))
    assert got == pytest.approx(plain + hardest, abs=1e-5)


@pytest.mark.parametrize("share", [0.0, 0.01])
def test_hard_negatives_that_round_to_no_pixel_leave_the_loss_as_it_is(share):
    """A share of 0, or one so small that it rounds to no background pixel: the plain
    loss, finite (no mean over an empty selection)."""
    logits, target, _ = _example()
    got = dice_ce_loss(logits, target, K, hard_negatives=share)
    assert torch.isfinite(got)
    assert torch.allclose(got, dice_ce_loss(logits, target, K), atol=0)


def test_hard_negatives_of_a_batch_without_background_add_nothing():
    """No background pixel in the batch: nothing to mine, the plain loss."""
    logits, target, _ = _example()
    target = torch.where(target == 0, torch.ones_like(target), target)
    got = dice_ce_loss(logits, target, K, hard_negatives=0.5)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(_numpy_unweighted(logits, target, 0.0), abs=1e-5)
