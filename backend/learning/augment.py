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
from typing import Optional, Sequence, Tuple

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


@dataclass(frozen=True)
class Appearance:
    """The appearance changes of the recipe that generalises to unseen sites, drawn per
    chip after the colour jitter; each is off at its default.

    Other sites differ from the training roofs in module colour, light, haze and sharpness,
    and municipal orthophotos come at 0.2-0.3 m (resampled to the model's 0.1 m, they are
    blurred versions of 0.1 m imagery). So the recipe changes saturation and hue, blurs or
    sharpens, and degrades the resolution by down- and up-sampling.

    Attributes:
        saturation: range of the saturation factor (1 = unchanged).
        hue_deg: largest hue rotation, degrees (about the grey axis of RGB).
        blur_p: probability of a Gaussian blur (sigma 0.5-1.5 px) or, as often, an unsharp
            mask of the same sigma.
        degrade_p: probability of down-sampling by a factor in ``degrade_range`` and
            up-sampling back (bilinear), as imagery of a coarser GSD resampled to the model's.
        degrade_range: range of that factor (3 = 0.3 m imagery for a 0.1 m model).
    """

    saturation: Tuple[float, float] = (1.0, 1.0)
    hue_deg: float = 0.0
    blur_p: float = 0.0
    degrade_p: float = 0.0
    degrade_range: Tuple[float, float] = (1.0, 1.0)

    @property
    def enabled(self) -> bool:
        return (self.saturation != (1.0, 1.0) or self.hue_deg > 0 or self.blur_p > 0
                or self.degrade_p > 0)


#: No appearance change (the draws of training runs made before the recipe stay the same).
PLAIN = Appearance()
#: The recipe of models meant to hold up on unseen sites and coarser GSDs.
GENERALISE = Appearance(saturation=(0.6, 1.4), hue_deg=20.0, blur_p=0.3, degrade_p=0.35,
                        degrade_range=(1.5, 3.0))


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


def _scale_crop(x, y, chip: int, rng: np.random.Generator,
                scale_range: Tuple[float, float] = SCALE_RANGE):
    """A random rescale (log-uniform in ``scale_range``, never below ``chip``) and
    a random ``chip`` x ``chip`` crop of one image (B, H, W) and its mask (H, W)."""
    import torch.nn.functional as F
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    h, w = x.shape[-2:]
    nh, nw = max(chip, int(round(h * s))), max(chip, int(round(w * s)))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    top = int(rng.integers(0, nh - chip + 1))
    left = int(rng.integers(0, nw - chip + 1))
    return x[:, top:top + chip, left:left + chip], y[top:top + chip, left:left + chip]


def _appearance(x, norm: Normalization, rng: np.random.Generator, look: Appearance):
    """Saturation, hue, blur/sharpen and resolution changes of one normalised chip
    (B, H, W); RGB maths on the de-normalised values (0..1), then normalised again."""
    import torch
    import torch.nn.functional as F
    mean = torch.tensor(norm.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(norm.std, dtype=x.dtype).view(-1, 1, 1)
    v = x * std + mean
    if v.shape[0] >= 3:
        rgb = v[:3]
        grey = rgb.mean(0, keepdim=True)
        rgb = grey + float(rng.uniform(*look.saturation)) * (rgb - grey)
        if look.hue_deg > 0:
            # rotation about the grey axis (1, 1, 1)/sqrt(3): Rodrigues' formula
            a = np.deg2rad(float(rng.uniform(-look.hue_deg, look.hue_deg)))
            c, s3 = np.cos(a), np.sin(a) / np.sqrt(3.0)
            o = (1.0 - c) / 3.0
            m = torch.tensor([[c + o, o - s3, o + s3], [o + s3, c + o, o - s3],
                              [o - s3, o + s3, c + o]], dtype=x.dtype)
            rgb = torch.einsum("ij,jhw->ihw", m, rgb)
        v = torch.cat([rgb, v[3:]], 0)
    if rng.random() < look.blur_p:
        sigma = float(rng.uniform(0.5, 1.5))
        r = int(np.ceil(2 * sigma))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).to(x.dtype)
        b = v[:, None]
        b = F.conv2d(F.pad(b, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        b = F.conv2d(F.pad(b, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))[:, 0]
        v = b if rng.random() < 0.5 else v + (v - b)  # blur, or unsharp mask
    if rng.random() < look.degrade_p:
        f = float(rng.uniform(*look.degrade_range))
        h, w = v.shape[-2:]
        small = F.interpolate(v[None], size=(max(8, int(h / f)), max(8, int(w / f))),
                              mode="area")
        v = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (v - mean) / std


def augment_batch(images, masks, chip: int, rng: np.random.Generator,
                  jitter: Jitter = TRAIN_JITTER, look: Appearance = PLAIN,
                  norm: Optional[Normalization] = None,
                  scale_range: Tuple[float, float] = SCALE_RANGE):
    """Random chips with scale, crop, rot90, flip and colour jitter, then the
    appearance changes of ``look`` (training from scratch).

    Args:
        images: float32 torch (N, B, H, W), already normalised.
        masks: int64 torch (N, H, W).
        chip: output side in pixels.
        rng: the run's generator.
        jitter: colour jitter ranges.
        look: appearance changes (:data:`PLAIN`: none, and no extra random draws).
        norm: the normalisation of ``images``; needed when ``look`` is enabled.
        scale_range: rescale range (log-uniform draws).

    Returns:
        ``(x float32 (N, B, chip, chip), y int64 (N, chip, chip))``.

    Raises:
        ValueError: ``look`` is enabled without ``norm``.
    """
    import torch
    if look.enabled and norm is None:
        raise ValueError("appearance changes need the images' normalisation")
    xs, ys = [], []
    for i in range(images.shape[0]):
        x, y = _scale_crop(images[i], masks[i], chip, rng, scale_range)
        x, (y,) = _rotate_flip_jitter(x, (y,), rng, jitter)
        if look.enabled:
            x = _appearance(x, norm, rng, look)
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
