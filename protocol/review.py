"""The review of a result: which objects the user looks at first, the state each is
left in, and the ``region`` request that adds a missed object with one click.

Both sides rank with these functions: the engine gives each detected object and each
candidate miss an :func:`uncertainty`; the plugin (and the Processing algorithm that
adds the ranking fields) orders a layer with :func:`review_order`. The reasons for the
formulas and the measurements behind them: ``docs/review.md``.

Needs only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .checks import (check_bands, check_crs, check_model, check_source, int_range,
                     is_number, num_range)
from .params import Source, source_from_wire
from .results import ORIGINS, REVIEW_FIELDS, REVIEW_STATES, REVIEWED_STATES
from .rules import RequestParams, rule

#: Lowest fused class probability of a candidate miss: connected pixels whose
#: probability lies in [``CANDIDATE_LOW``, threshold) and that do not meet a detection.
#: On the pv01 train split (out of fold) 0.2 holds most missed panels' pixels while a
#: detection of 0.25 km² gets a few dozen candidates, not hundreds (``docs/review.md``).
CANDIDATE_LOW = 0.2


def margin_uncertainty(score: float, threshold: float) -> float:
    """How close an object's score is to the threshold: ``1 - |score - threshold| /
    max(threshold, 1 - threshold)``, in [0, 1]; 1 at the threshold, 0 at a score of 0
    or 1 (the farther end). Source: margin sampling of active learning (Scheffer et
    al. 2001) on the object's mean probability.

    Args:
        score: the object's mean class probability, 0..1.
        threshold: the detection threshold, (0, 1].
    """
    span = max(threshold, 1.0 - threshold, 1e-9)
    return max(0.0, min(1.0, 1.0 - abs(float(score) - float(threshold)) / span))


def disagreement(agreement: float) -> float:
    """How split an ensemble is on an object: ``1 - |2 * agreement - 1|``, in [0, 1];
    1 when half the members vote for it, 0 when all or none do (query by committee,
    Seung et al. 1992, as vote entropy's linear form).

    Args:
        agreement: share of members whose mean probability over the object reaches
            the threshold, 0..1.
    """
    return max(0.0, min(1.0, 1.0 - abs(2.0 * float(agreement) - 1.0)))


def uncertainty(score: float, threshold: float, agreement: Optional[float] = None,
                members: int = 1) -> float:
    """An object's uncertainty, in [0, 1]: the larger of :func:`margin_uncertainty` and,
    for an ensemble of ``members`` >= 2, :func:`disagreement`: an object the members
    split on is as uncertain as one at the threshold, whatever its fused score (the
    fused score of a split ensemble can sit far from the threshold when one member is
    very sure). A single model has the margin only.

    Args:
        score, threshold: as :func:`margin_uncertainty`.
        agreement: as :func:`disagreement` (ignored for a single model).
        members: the ensemble's members (1: a single model).
    """
    u = margin_uncertainty(score, threshold)
    if members >= 2 and agreement is not None:
        u = max(u, disagreement(agreement))
    return round(u, 4)


def review_order(uncertainties: Sequence[Optional[float]],
                 areas: Optional[Sequence[Optional[float]]] = None) -> List[int]:
    """The review queue: the positions of the objects in the order they are reviewed,
    most uncertain first; ties by larger area (a larger error costs more), then by
    position. Objects without an uncertainty (drawn or clicked by the user) come last.

    Args:
        uncertainties: per object, 0..1 or None.
        areas: per object, m² (None: no area).

    Returns:
        Positions into ``uncertainties``, ``len(uncertainties)`` of them.
    """
    def key(i: int):
        u = uncertainties[i]
        a = areas[i] if areas is not None else None
        return (u is None, -(u or 0.0), -(a or 0.0), i)

    return sorted(range(len(uncertainties)), key=key)


def ranks(uncertainties: Sequence[Optional[float]],
          areas: Optional[Sequence[Optional[float]]] = None) -> List[int]:
    """Per object, its 1-based position in :func:`review_order` (the ``rank`` field)."""
    out = [0] * len(uncertainties)
    for pos, i in enumerate(review_order(uncertainties, areas), start=1):
        out[i] = pos
    return out


# ----------------------------------------------------------------------------- region

#: Side of the window a ``region`` request reads around the click, pixels at the
#: model's GSD (25.6 m at 0.1 m): larger than any rooftop array, and one model tile.
REGION_WINDOW_PX = 256
#: The relaxed threshold of a ``region`` request when it names none.
REGION_THRESHOLD = 0.3
#: A click within this many pixels of a pixel at the relaxed threshold grows from it.
REGION_SNAP_PX = 6


def check_number(x) -> Optional[str]:
    """A finite number (a coordinate)."""
    return None if is_number(x) else "must be a number"


@dataclass(frozen=True)
class RegionParams(RequestParams):
    """A ``region`` request: the object under a click, grown on the model's
    probabilities (``backend.inference.region``).

    Attributes:
        source: the raster (a :class:`~protocol.params.FileSource` or pixels).
        model: model id (or version ``<base>@<n>``).
        x, y: the click, in ``crs`` units.
        crs: CRS of the click (WKT or ``EPSG:n``); the reply's polygon is in the
            raster's CRS.
        threshold: the relaxed threshold, (0, 1); None: :data:`REGION_THRESHOLD`.
        window_px: side of the window read around the click, pixels at the model's
            GSD, 64..1024; None: :data:`REGION_WINDOW_PX`.
        bands: 1-based raster bands read as the model's input bands (as ``detect``).
    """

    TYPE = "region"

    source: Source = rule(check_source, required=True)
    model: str = rule(check_model, required=True)
    x: float = rule(check_number, required=True)
    y: float = rule(check_number, required=True)
    crs: str = rule(check_crs, required=True)
    threshold: Optional[float] = rule(num_range(0.01, 0.99), default=None)
    window_px: Optional[int] = rule(int_range(64, 1024), default=None)
    bands: Optional[Tuple[int, ...]] = rule(check_bands, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", source_from_wire(self.source))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))


__all__ = ["REVIEW_STATES", "REVIEWED_STATES", "ORIGINS", "REVIEW_FIELDS", "CANDIDATE_LOW",
           "margin_uncertainty", "disagreement", "uncertainty", "review_order", "ranks",
           "REGION_WINDOW_PX", "REGION_THRESHOLD", "REGION_SNAP_PX", "RegionParams"]
