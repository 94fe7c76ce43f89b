"""The held-out part of a retrain's corrections: how much of the reviewed area is kept
aside to judge the new version, where, and how many objects a verdict needs.

The engine splits the reviewed areas with these (``backend.learning.reviewed``,
``backend.learning.acceptance``); the plugin's retrain dialog uses the same ones to
warn, before the budget is spent, when the held-out part will hold too few objects.
Needs only the standard library.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

Box = Tuple[float, float, float, float]

#: Share of the reviewed surface held out (whole spatial groups of areas, or a strip of
#: a single area's long side).
HOLDOUT_FRACTION = 0.25
#: Metres between a single area's held-out strip and its part trained on.
HOLDOUT_GAP_M = 5.0
#: The fewest held-out objects the gate gives a verdict on: with fewer, one object
#: moves object F1 by 0.1 or more, and the retrain ends undecided.
MIN_HOLDOUT_OBJECTS = 10


def holdout_strip(bounds: Sequence[float], fraction: float = HOLDOUT_FRACTION,
                  gap_m: float = HOLDOUT_GAP_M) -> Tuple[List[float], List[float]]:
    """``(held-out strip, part trained on)`` of a single reviewed area.

    Args:
        bounds: ``(xmin, ymin, xmax, ymax)`` of the area, in a metre CRS.
        fraction: the strip's share of the area's longer side.
        gap_m: metres between the strip and the part trained on (neither uses them).

    Returns:
        Two ``[xmin, ymin, xmax, ymax]`` boxes: the strip at the bottom of an area
        taller than wide, else at its right end, and the rest beyond the gap.
    """
    x0, y0, x1, y1 = (float(v) for v in bounds)
    w, h = x1 - x0, y1 - y0
    if h >= w:
        cut = y0 + fraction * h
        return [x0, y0, x1, cut], [x0, cut + gap_m, x1, y1]
    cut = x1 - fraction * w
    return [cut, y0, x1, y1], [x0, y0, cut - gap_m, y1]


__all__ = ["HOLDOUT_FRACTION", "HOLDOUT_GAP_M", "MIN_HOLDOUT_OBJECTS", "holdout_strip"]
