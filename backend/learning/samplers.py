"""Training chips of a fine-tuning: from the corrected areas, weighted toward the
mistakes (:class:`ChipSampler`), and from the replay tiles (:class:`ReplaySampler`).

Each draw is ``(image uint8 (B, chip, chip), target int64 (chip, chip), weight float32
(chip, chip))``: the pixel loss weights are 0 where a chip was padded beyond its image.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from backend.learning.data import tile_sampling_weights
from backend.learning.reviewed import ReviewedData

Chip = Tuple[np.ndarray, np.ndarray, np.ndarray]


def pad_chip(img: np.ndarray, tgt: np.ndarray, wt: np.ndarray, chip: int,
             mode: Optional[str] = None) -> Chip:
    """A chip cut short by its image's bottom or right edge, padded there to ``chip`` x
    ``chip``: the image (B, h, w) and target (h, w) by ``mode`` (``np.pad``'s; None:
    ``"reflect"`` when the chip is larger than the padding, else ``"edge"``), the
    weights (h, w) with 0. A full chip is returned as it is."""
    ph, pw = chip - tgt.shape[0], chip - tgt.shape[1]
    if not (ph or pw):
        return img, tgt, wt
    if mode is None:
        mode = "reflect" if min(tgt.shape) > max(ph, pw) else "edge"
    return (np.pad(img, ((0, 0), (0, ph), (0, pw)), mode=mode),
            np.pad(tgt, ((0, ph), (0, pw)), mode=mode),
            np.pad(wt, ((0, ph), (0, pw)), constant_values=0.0))


class ChipSampler:
    """Training chips from corrected areas, weighted toward the mistakes.

    A chip is centred on a random *hard* pixel (an object-level mistake) with
    probability ``hard_fraction`` when the area has any, else placed uniformly over the
    labelled pixels (those of positive loss weight: the valid ones, or what a partial
    review labelled, ``backend.learning.partial``); areas
    are drawn in proportion to ``sqrt(hard pixels) + sqrt(valid pixels) / 10`` so that
    areas with more mistakes give more chips. Chips smaller than ``chip`` (small areas)
    are padded by reflection with zero weight (:func:`pad_chip`).

    Args:
        areas: training :class:`~backend.learning.reviewed.ReviewedData`.
        chip: side in pixels.
        rng: numpy generator.
        hard_fraction: share of chips centred on a mistake.
    """

    def __init__(self, areas: Sequence[ReviewedData], chip: int, rng: np.random.Generator,
                 hard_fraction: float = 0.7):
        areas = [a for a in areas if a.valid.any()]
        self.areas = [a for a in areas if (a.weight > 0).any()]
        self.chip = int(chip)
        self.rng = rng
        self.hard_fraction = float(hard_fraction)
        self._hard = [np.flatnonzero(a.hard) for a in self.areas]
        self._valid = [np.flatnonzero(a.weight > 0) for a in self.areas]
        w = np.array([math.sqrt(len(h)) + math.sqrt(len(v)) / 10.0
                      for h, v in zip(self._hard, self._valid)], np.float64)
        self.p = w / w.sum() if len(w) and w.sum() > 0 else None

    def __len__(self) -> int:
        return len(self.areas)

    def sample(self) -> Chip:
        """``(image uint8 (B, chip, chip), target int64 (chip, chip), weight float32)``."""
        i = int(self.rng.choice(len(self.areas), p=self.p))
        a = self.areas[i]
        h, w = a.valid.shape
        pool = self._hard[i] if len(self._hard[i]) and self.rng.random() < self.hard_fraction \
            else self._valid[i]
        flat = int(pool[self.rng.integers(0, len(pool))])
        cy, cx = divmod(flat, w)
        c = self.chip
        # jitter so the mistake is not always in the centre
        cy += int(self.rng.integers(-c // 4, c // 4 + 1))
        cx += int(self.rng.integers(-c // 4, c // 4 + 1))
        r0 = int(np.clip(cy - c // 2, 0, max(0, h - c)))
        c0 = int(np.clip(cx - c // 2, 0, max(0, w - c)))
        img, tgt, wt = pad_chip(a.image[:, r0:r0 + c, c0:c0 + c], a.target[r0:r0 + c, c0:c0 + c],
                                a.weight[r0:r0 + c, c0:c0 + c], c)
        return img, tgt.astype(np.int64), wt.astype(np.float32)


class ReplaySampler:
    """Random chips of the replay tiles (panel-rich tiles drawn more often, as in
    ``backend.learning.train``), with weight 1 (0 on padding).

    Args:
        arrays: ``{"images": uint8 (N, B, H, W), "masks": uint8 (N, H, W)}``.
        chip: side in pixels.
        rng: the run's generator.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], chip: int, rng: np.random.Generator):
        self.images, self.masks = arrays["images"], arrays["masks"]
        self.chip, self.rng = chip, rng
        self.p = tile_sampling_weights(self.masks)

    def sample(self) -> Chip:
        """``(image uint8 (B, chip, chip), target int64 (chip, chip), weight float32)``."""
        i = int(self.rng.choice(len(self.masks), p=self.p))
        h, w = self.masks.shape[1:]
        c = min(self.chip, h, w)
        r0 = int(self.rng.integers(0, h - c + 1))
        c0 = int(self.rng.integers(0, w - c + 1))
        return pad_chip(self.images[i, :, r0:r0 + c, c0:c0 + c],
                        self.masks[i, r0:r0 + c, c0:c0 + c].astype(np.int64),
                        np.ones((c, c), np.float32), self.chip, "reflect")
