"""Training input: normalisation and random augmentation of chips.

Both trainers (``backend.learning.train`` from scratch, ``backend.learning.finetune``
on corrections) draw, per chip and in this order, a 90-degree rotation, a horizontal
flip and a colour jitter (per-band gain, contrast, brightness in normalised space),
from one ``numpy.random.Generator``: the draws are part of a run's reproducibility
(same seed, same steps, same weights). Training from scratch first draws a random
rescale (0.75-1.33) and crop (:func:`augment_batch`); fine-tuning keeps the chips the
samplers cut, so that the pixel loss weights stay aligned
(:func:`augment_weighted_batch`). Fine-tuning jitters less (:data:`FINETUNE_JITTER`):
it must not move the model far from what it has learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from backend.models.card import Normalization


@dataclass(frozen=True)
class Jitter:
    """Colour jitter ranges (uniform draws), applied as ``x * contrast * gain +
    brightness`` to normalised chips.

    Attributes:
        gain: per-band gain range.
        contrast: contrast factor range.
        brightness: additive brightness range (normalised units).
    """

    gain: Tuple[float, float]
    contrast: Tuple[float, float]
    brightness: Tuple[float, float]


#: Jitter of training from scratch.
TRAIN_JITTER = Jitter(gain=(0.9, 1.1), contrast=(0.8, 1.25), brightness=(-0.3, 0.3))
#: Jitter of fine-tuning on corrections.
FINETUNE_JITTER = Jitter(gain=(0.92, 1.08), contrast=(0.85, 1.18), brightness=(-0.2, 0.2))
#: Rescale range of training from scratch (drawn log-uniformly).
SCALE_RANGE = (0.75, 1.333)


def normalize_batch(images, norm: Normalization):
    """``(x / scale - mean) / std`` per band, as a float32 torch tensor.

    Args:
        images: uint8 (N, B, H, W), numpy or torch.
        norm: the card's normalisation.

    Returns:
        float32 torch tensor (N, B, H, W).
    """
    import torch
    x = torch.as_tensor(images)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / float(norm.scale) - mean) / std


def _rotate_flip_jitter(x, targets: Sequence, rng: np.random.Generator, jitter: Jitter):
    """One chip: rotation by ``k * 90`` degrees, a flip with probability 0.5, then the
    colour jitter of ``x`` only.

    Args:
        x: float32 torch (B, H, W), normalised.
        targets: torch (H, W) maps that move with the pixels (class ids, weights).

    Returns:
        ``(x, [targets])`` transformed.
    """
    import torch
    k = int(rng.integers(0, 4))
    x = torch.rot90(x, k, (1, 2))
    targets = [torch.rot90(t, k, (0, 1)) for t in targets]
    if rng.random() < 0.5:
        x = torch.flip(x, (2,))
        targets = [torch.flip(t, (1,)) for t in targets]
    gain = torch.tensor(rng.uniform(*jitter.gain, size=(x.shape[0], 1, 1)), dtype=x.dtype)
    contrast = float(rng.uniform(*jitter.contrast))
    bright = float(rng.uniform(*jitter.brightness))
    return x * contrast * gain + bright, targets


def _scale_crop(x, y, chip: int, rng: np.random.Generator):
    """A random rescale (log-uniform in :data:`SCALE_RANGE`, never below ``chip``) and
    a random ``chip`` x ``chip`` crop of one image (B, H, W) and its mask (H, W)."""
    import torch.nn.functional as F
    s = float(np.exp(rng.uniform(np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1]))))
    h, w = x.shape[-2:]
    nh, nw = max(chip, int(round(h * s))), max(chip, int(round(w * s)))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    top = int(rng.integers(0, nh - chip + 1))
    left = int(rng.integers(0, nw - chip + 1))
    return x[:, top:top + chip, left:left + chip], y[top:top + chip, left:left + chip]


def augment_batch(images, masks, chip: int, rng: np.random.Generator,
                  jitter: Jitter = TRAIN_JITTER):
    """Random chips with scale, crop, rot90, flip and colour jitter (training from
    scratch).

    Args:
        images: float32 torch (N, B, H, W), already normalised.
        masks: int64 torch (N, H, W).
        chip: output side in pixels.
        rng: the run's generator.
        jitter: colour jitter ranges.

    Returns:
        ``(x float32 (N, B, chip, chip), y int64 (N, chip, chip))``.
    """
    import torch
    xs, ys = [], []
    for i in range(images.shape[0]):
        x, y = _scale_crop(images[i], masks[i], chip, rng)
        x, (y,) = _rotate_flip_jitter(x, (y,), rng, jitter)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs).contiguous(), torch.stack(ys).contiguous()


def augment_weighted_batch(x, y, w, rng: np.random.Generator,
                           jitter: Jitter = FINETUNE_JITTER):
    """Rot90, flip and colour jitter per chip, with the pixel weights moving along
    (fine-tuning).

    Args:
        x: float32 torch (N, B, H, W), normalised.
        y: int64 torch (N, H, W) class ids.
        w: float32 torch (N, H, W) pixel loss weights.
        rng: the run's generator.
        jitter: colour jitter ranges.

    Returns:
        ``(x, y, w)`` of the same shapes and dtypes.
    """
    import torch
    xs, ys, ws = [], [], []
    for i in range(x.shape[0]):
        xi, (yi, wi) = _rotate_flip_jitter(x[i], (y[i], w[i]), rng, jitter)
        xs.append(xi)
        ys.append(yi)
        ws.append(wi)
    return (torch.stack(xs).contiguous(), torch.stack(ys).contiguous(),
            torch.stack(ws).contiguous())
