"""The reviewed areas of a retrain: the parts of the rasters the user checked.

A ``retrain`` request names its reviewed areas (``reviewed``, each a
:class:`protocol.params.ReviewedArea`; by default one, the request's ``extent`` over
its ``source``). :func:`parse_areas` resolves them into :class:`ReviewedPart` s, and
:func:`split_areas` decides which are held out (never trained on) to judge the
retrained model: whole spatial groups of areas when there are several, else a strip
cut off the area with a gap between the parts. Each part is then read at the model's
GSD into a :class:`ReviewedData` (``backend.learning.corrections``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from backend.learning.data import single_link_groups
from protocol.errors import CorrectionsError
from protocol.holdout import HOLDOUT_FRACTION, HOLDOUT_GAP_M, holdout_strip
from protocol.params import FileSource, RetrainParams

Bounds = Tuple[float, float, float, float]


@dataclass
class ReviewedPart:
    """One reviewed area (a request's ``reviewed`` item), or a part of one.

    Attributes:
        index: position in the request's ``reviewed`` list (features with ``area`` set
            belong to that area only).
        source: the raster (the wire form of a protocol ``source``), ``array`` the pixel
            frame index for kind ``pixels``.
        extent, extent_crs: as in ``detect`` (None: the whole raster).
        holdout: True/False when the user chose, None to let :func:`split_areas` decide.
        part: ``""`` for a whole area, ``"train"``/``"holdout"`` for the parts of a
            split one.
    """

    index: int
    source: Dict[str, Any]
    extent: Optional[List[float]] = None
    extent_crs: Optional[str] = None
    holdout: Optional[bool] = None
    array: int = 0
    part: str = ""


def grid_bounds(grid: Any) -> Bounds:
    """``(xmin, ymin, xmax, ymax)`` of a ``backend.inference.raster.Grid``, in its CRS."""
    t = grid.transform
    return (t.c, t.f + grid.height * t.e, t.c + grid.width * t.a, t.f)


@dataclass
class ReviewedData:
    """A reviewed area (or part) read at the model GSD.

    Attributes:
        reviewed: the :class:`ReviewedPart`.
        grid: the ``backend.inference.raster.Grid`` it was read on.
        image: uint8 (bands, H, W). valid: bool (H, W).
        pred: uint8 (H, W) class map of the current model (cleaned, as ``detect``).
        target: uint8 (H, W) the corrected class map.
        weight: float32 (H, W) pixel loss weights.
        hard: bool (H, W) pixels of object-level mistakes (chip centres are drawn there).
        stats: diff counts (see ``backend.learning.corrections.diff_maps``).
        n_features: corrected features that meet the part.
        scored: bool (H, W) the pixels that are judged (a held-out part read with
            context: the part itself, valid); None: every valid pixel.
    """

    reviewed: ReviewedPart
    grid: Any
    image: np.ndarray
    valid: np.ndarray
    pred: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    hard: np.ndarray
    stats: Dict[str, Any] = field(default_factory=dict)
    n_features: int = 0
    scored: Optional[np.ndarray] = None

    @property
    def holdout(self) -> bool:
        """Whether it is held out (never trained on)."""
        return bool(self.reviewed.holdout)

    @property
    def scored_mask(self) -> np.ndarray:
        """bool (H, W): the pixels judged (:attr:`scored`, else :attr:`valid`)."""
        return self.valid if self.scored is None else self.scored

    @property
    def area_m2(self) -> float:
        """The judged surface, m²."""
        t = self.grid.transform
        return float(self.scored_mask.sum()) * abs(t.a * t.e)

    @property
    def bounds(self) -> Bounds:
        """The grid's ``(xmin, ymin, xmax, ymax)``, in its CRS (:func:`grid_bounds`)."""
        return grid_bounds(self.grid)


def whole_extents(parts: List[ReviewedData]) -> List[Tuple[Bounds, str]]:
    """The reviewed areas as the user gave them, from the parts they were read in:
    ``[((xmin, ymin, xmax, ymax), CRS WKT), ...]``, one per reviewed area, the parts of a
    split area (its held-out strip, the rest) merged into the box that holds them, in
    the first part's CRS (a split area's parts share one)."""
    merged: Dict[int, Tuple[List[float], str]] = {}
    for part in parts:
        b = list(part.bounds)
        have = merged.get(part.reviewed.index)
        if have is None:
            merged[part.reviewed.index] = (b, part.grid.crs_wkt)
            continue
        box = have[0]
        box[:] = [min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3])]
    return [(tuple(b), crs) for _, (b, crs) in sorted(merged.items())]


def parse_areas(params: RetrainParams) -> List[ReviewedPart]:
    """The request's reviewed areas (``reviewed``; default one area: ``extent`` of the
    request over ``source``). An area without a source or extent CRS of its own takes
    the request's."""
    areas = []
    for i, it in enumerate(params.reviewed or ()):
        areas.append(ReviewedPart(index=i, source=(it.source or params.source).to_wire(),
                                  extent=None if it.extent is None else list(it.extent),
                                  extent_crs=(it.extent_crs if it.extent_crs is not None
                                              else params.extent_crs),
                                  holdout=it.holdout, array=int(it.array or 0)))
    if not areas:
        areas.append(ReviewedPart(index=0, source=params.source.to_wire(),
                                  extent=None if params.extent is None else list(params.extent),
                                  extent_crs=params.extent_crs))
    return areas


def file_sources(params: RetrainParams) -> List[str]:
    """Real paths of the raster files the corrections were made on (the request's
    ``source`` and the reviewed areas' own), sorted; pixels sent by the plugin are
    not files."""
    srcs = [params.source] + [a.source for a in params.reviewed or () if a.source]
    return sorted({os.path.realpath(s.path) for s in srcs
                   if isinstance(s, FileSource) and s.path})


def split_areas(areas: List[ReviewedPart], bounds: List[Tuple[str, Bounds]],
                fraction: float = HOLDOUT_FRACTION, gap_m: float = HOLDOUT_GAP_M,
                group_m: float = 30.0
                ) -> List[ReviewedPart]:
    """Decide which reviewed areas are held out (never trained on).

    Args:
        areas: the reviewed areas.
        bounds: per area, ``(CRS key, (xmin, ymin, xmax, ymax))`` in its raster's CRS.
        fraction: target share of the reviewed surface held out.
        gap_m: for a single area, the width of the strip between the parts that
            neither uses (so neighbouring pixels do not leak).
        group_m: areas closer than this (same CRS) form one spatial group and go to the
            same side.

    Returns:
        The areas with ``holdout`` set; a single area (or a single spatial group) is
        replaced by two parts: the held-out strip (``fraction`` of its longer side,
        at its bottom or right end) and the rest, separated by ``gap_m``
        (``protocol.holdout.holdout_strip``).
    """
    if any(a.holdout for a in areas):  # the user chose: the rest is for training
        return [replace(a, holdout=bool(a.holdout)) for a in areas]
    free = [i for i, a in enumerate(areas) if a.holdout is None]
    groups = [sorted(g) for g in single_link_groups(
        free, lambda i, j: (bounds[i][0] == bounds[j][0]
                            and _distance(bounds[i][1], bounds[j][1]) <= group_m))]
    if len(groups) >= 2:
        surf = [sum(_surface(bounds[j][1]) for j in g) for g in groups]
        total = sum(_surface(b) for _, b in bounds)
        # smallest groups first until the held-out share is reached; never all groups
        order = sorted(range(len(groups)), key=lambda k: (surf[k], groups[k][0]))
        chosen, held = set(), 0.0
        for k in order[:-1]:
            if held >= fraction * total:
                break
            chosen.add(k)
            held += surf[k]
        out = [replace(a, holdout=False) for a in areas]
        for k in chosen:
            for j in groups[k]:
                out[j].holdout = True
        return out
    # one group: cut a strip off its long side
    out: List[ReviewedPart] = []
    for i, a in enumerate(areas):
        if i not in free:
            out.append(replace(a, holdout=False))
            continue
        _, (x0, y0, x1, y1) = bounds[i]
        w, h = x1 - x0, y1 - y0
        if max(w, h) * fraction <= gap_m or max(w, h) < 4 * gap_m:
            raise CorrectionsError(
                f"reviewed area {a.index} ({w:.0f} x {h:.0f} m) is too small to keep a part "
                f"of it for checking the retrained model; review a larger area or several")
        hold, train = holdout_strip((x0, y0, x1, y1), fraction, gap_m)
        crs = bounds[i][0]
        out.append(ReviewedPart(a.index, a.source, train, crs, False, a.array, "train"))
        out.append(ReviewedPart(a.index, a.source, hold, crs, True, a.array, "holdout"))
    return out


def _surface(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _distance(a, b) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)
