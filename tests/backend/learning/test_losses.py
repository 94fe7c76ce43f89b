"""backend.learning.losses against the same losses written out by hand in torch on a
tiny example: cross-entropy per pixel, weighted by the pixel weights, plus one minus the
soft Dice of each foreground class over the pixels that count."""

from __future__ import annotations

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
