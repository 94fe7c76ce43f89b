"""The choice of a version for an extent: the newest version in use taught on its area.

A detection that asks for it (``by_area``) runs, of the versions of the model's lineage
in use in their own area (``backend.models.versions.area_ids``, newest first), the
first whose area (:class:`backend.models.area.Area`) covers the whole extent, else the
model it named. :func:`choose_area_version` makes that choice among cards already
read; ``backend.models.versions.version_for_extent`` reads them from the user model
folder.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

from backend.models.area import Area, Box, covers
from backend.models.card import ModelCard


def choose_area_version(model_id: str, base: str, in_use: Iterable[ModelCard],
                        bounds: Box, crs_wkt: str) -> Tuple[Optional[ModelCard], str]:
    """The first of ``in_use`` whose area covers an extent.

    Args:
        model_id: the model a detection asked for (any id of the lineage).
        base: the lineage's shipped model id.
        in_use: the cards of the versions in use in their area, newest first (read
            lazily: the choice stops at the first that covers the extent); a card
            without a readable area is passed over.
        bounds: the extent ``(xmin, ymin, xmax, ymax)`` in ``crs_wkt``.
        crs_wkt: its CRS (WKT or ``EPSG:n``).

    Returns:
        ``(card, "<id> was taught on this area (<area>)")``; or ``(None, why)`` when
        none covers it (``why`` says so, naming the versions whose areas do not).
    """
    seen = []
    for card in in_use:
        area = Area.from_dict(card.lineage.scope if card.lineage else None)
        if area is None:
            continue
        try:
            inside = covers(area, bounds, crs_wkt)
        except Exception:  # an extent that cannot be put in lon/lat is in no area
            inside = False
        if inside:
            return card, f"{card.id} was taught on this area ({area.describe()})"
        seen.append(card.id)
    if seen:
        return None, (f"no version of {base} was taught on this area ({', '.join(seen)} "
                      f"cover other areas): {model_id} was used")
    return None, f"{base} has no version taught on an area: {model_id} was used"
