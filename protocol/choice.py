"""Which model runs on a layer of a given GSD: the one rule the engine applies and the
plugin shows.

Each model card declares the range of ground sampling distances it serves,
``gsd_range_m = [low, high]`` in metres per pixel of the *layer* (the raster as the
user has it, before it is resampled to the model's own GSD). The engine's device has an
ordered list of candidate models (``models/defaults.json``); a detection that names no
model runs the first candidate whose range holds the layer's GSD (``low <= gsd <
high``). A layer outside every range runs the candidate whose range is nearest (in
the ratio of GSDs), with a warning that says what to expect.

Needs only the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

__all__ = ["ModelRange", "GsdChoice", "choose_for_gsd", "candidates_from_cards",
           "served_range"]


@dataclass(frozen=True)
class ModelRange:
    """A candidate model and the layer GSDs it serves.

    Attributes:
        id: model id.
        low, high: GSD range, metres per pixel, ``low <= gsd < high``.
        gsd_m: the model's own GSD, metres per pixel (what the layer is resampled to).
    """

    id: str
    low: float
    high: float
    gsd_m: float

    def holds(self, gsd_m: float) -> bool:
        """Whether a layer of ``gsd_m`` metres per pixel is in the range."""
        return self.low <= gsd_m < self.high

    def distance(self, gsd_m: float) -> float:
        """How far ``gsd_m`` lies outside the range, as ``|log(gsd / nearest end)|``
        (0 inside)."""
        if self.holds(gsd_m):
            return 0.0
        end = self.low if gsd_m < self.low else self.high
        return abs(math.log(gsd_m / end))

    def text(self) -> str:
        """``"0.05-0.15 m"``."""
        return f"{self.low:g}-{self.high:g} m"


@dataclass(frozen=True)
class GsdChoice:
    """The model chosen for a layer.

    Attributes:
        model: the model id.
        layer_gsd_m: the layer's GSD, metres per pixel.
        inside: whether the layer's GSD is in the model's range.
        why: a sentence for the user (the dock, the result's stats).
    """

    model: str
    layer_gsd_m: float
    inside: bool
    why: str

    def to_wire(self) -> dict:
        """``{"by": "gsd", "model", "layer_gsd_m", "inside", "why"}`` for a result's
        ``stats["model_choice"]``."""
        return {"by": "gsd", "model": self.model, "layer_gsd_m": round(self.layer_gsd_m, 4),
                "inside": self.inside, "why": self.why}


def choose_for_gsd(candidates: Sequence[ModelRange], gsd_m: float) -> GsdChoice:
    """The model for a layer of ``gsd_m`` metres per pixel among ``candidates`` (in
    order of preference): the first whose range holds it, else the nearest range.

    Raises:
        ValueError: no candidate, or a GSD that is not a positive number.
    """
    if not candidates:
        raise ValueError("no model to choose from")
    if not (isinstance(gsd_m, (int, float)) and math.isfinite(gsd_m) and gsd_m > 0):
        raise ValueError(f"a layer GSD must be a positive number of metres, not {gsd_m!r}")
    for c in candidates:
        if c.holds(gsd_m):
            return GsdChoice(c.id, gsd_m, True,
                             f"the layer's GSD is {gsd_m:.2f} m; {c.id} serves "
                             f"{c.text()} (it runs at {c.gsd_m:g} m)")
    best = min(candidates, key=lambda c: c.distance(gsd_m))
    ranges = ", ".join(f"{c.id} {c.text()}" for c in candidates)
    if gsd_m < best.low:
        expect = ("the layer is resampled to a coarser grid: objects come out as the "
                  "model sees them at its GSD, with coarser outlines")
    else:
        expect = (f"the layer is resampled to the model's {best.gsd_m:g} m: objects of a "
                  f"few pixels at {gsd_m:.2f} m are missed and outlines are coarse; "
                  f"expect far fewer and less accurate detections")
    return GsdChoice(best.id, gsd_m, False,
                     f"the layer's GSD ({gsd_m:.2f} m) is outside every model's range "
                     f"({ranges}): {best.id} runs, the nearest; {expect}")


def candidates_from_cards(cards: Sequence[dict], order: Sequence[str]
                          ) -> List[ModelRange]:
    """The :class:`ModelRange` of each id of ``order`` among ``cards`` (card dicts as
    the ``models`` reply carries them, with ``gsd_range_m`` and ``gsd_m``); a card
    without a range serves ``gsd_m / 1.5`` to ``gsd_m * 1.5``. Ids without a card are
    skipped."""
    by_id = {c.get("id"): c for c in cards}
    out = []
    for mid in order:
        c = by_id.get(mid)
        if c is None:
            continue
        low, high = served_range(c)
        out.append(ModelRange(mid, low, high, float(c["gsd_m"])))
    return out


def served_range(card: dict) -> Tuple[float, float]:
    """``(low, high)``, metres per pixel of the layer: a card dict's ``gsd_range_m``,
    or ``gsd_m / 1.5`` to ``gsd_m * 1.5`` for a card without one."""
    g = float(card["gsd_m"])
    low, high = card.get("gsd_range_m") or (g / 1.5, g * 1.5)
    return float(low), float(high)
