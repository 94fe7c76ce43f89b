"""The training recipes: the plain one draws exactly as before the appearance changes
existed, and the generalising one changes colour and resolution without moving labels."""

from __future__ import annotations

import numpy as np
import pytest

from backend.learning.augment import (GENERALISE, PLAIN, TRAIN_JITTER, Appearance,
                                      augment_batch, normalize_batch)
from backend.models.card import Normalization

NORM = Normalization(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])


def _batch(n=4, size=64, seed=1):
    import torch
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    mask = np.zeros((n, size, size), np.int64)
    mask[:, 16:40, 20:44] = 1
    return normalize_batch(img, NORM), torch.from_numpy(mask)


def test_plain_recipe_makes_no_extra_draws():
    x, y = _batch()
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    a = augment_batch(x, y, 48, r1)
    b = augment_batch(x, y, 48, r2, jitter=TRAIN_JITTER, look=PLAIN, norm=NORM)
    assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a, b))
    assert r1.random() == r2.random()  # both generators stand at the same place


def test_generalising_recipe_keeps_labels_and_changes_the_look():
    # one chip: its crop and turn come before the appearance draws
    x, y = _batch(n=1)
    plain = augment_batch(x, y, 48, np.random.default_rng(3), scale_range=(1.0, 1.0))
    strong = augment_batch(x, y, 48, np.random.default_rng(3), look=GENERALISE, norm=NORM,
                           scale_range=(1.0, 1.0))
    assert np.array_equal(plain[1].numpy(), strong[1].numpy())  # same crops and turns
    assert not np.allclose(plain[0].numpy(), strong[0].numpy())
    assert strong[0].shape == plain[0].shape and strong[0].dtype == plain[0].dtype


def test_resolution_degradation_removes_fine_detail():
    x, y = _batch(n=8)
    degrade = Appearance(degrade_p=1.0, degrade_range=(3.0, 3.0))
    out, _ = augment_batch(x, y, 48, np.random.default_rng(0), look=degrade, norm=NORM,
                           scale_range=(1.0, 1.0))
    ref, _ = augment_batch(x, y, 48, np.random.default_rng(0), scale_range=(1.0, 1.0))

    def detail(t):  # mean absolute difference of neighbouring pixels
        return float((t[..., 1:] - t[..., :-1]).abs().mean())

    assert detail(out) < 0.5 * detail(ref)


def test_appearance_needs_the_normalisation():
    x, y = _batch()
    with pytest.raises(ValueError, match="normalisation"):
        augment_batch(x, y, 48, np.random.default_rng(0), look=GENERALISE)
