"""Change between two dates: which installations are new, removed, grown or shrunk.

Two result layers of the same area (two orthophoto years) are compared in the working
CRS. The rule:

1. **Candidates.** An earlier installation *b* and a later one *a* are a candidate pair
   when their intersection covers at least ``match_overlap`` (default 0.5) of the
   smaller of the two: area(b ∩ a) / min(area(b), area(a)). Measuring against the
   smaller one pairs an array with its extension (grown) and with what is left of it
   (shrunk), and tolerates a shift of the imagery between the years of up to about
   half the array's width.
2. **One to one.** Candidate pairs are taken by decreasing intersection area (ties:
   the higher ratio, then the earlier, then the later feature first); a pair whose
   installations are already taken is skipped. An array split in two is therefore
   matched with its larger part (shrunk), the other part being new.
3. **Status.** A later installation without a pair is ``new``, an earlier one
   ``removed``. A pair is ``unchanged`` when |area(a) - area(b)| is at most the larger
   of ``area_tolerance`` × area(b) (default 10 %) and ``area_tolerance_m2`` (default
   1 m²: about 100 pixels of 0.1 m, what a detection's outline varies by between two
   images of one array); else ``grown`` or ``shrunk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import shapely

#: The statuses, in the order tables list them.
NEW, REMOVED, GROWN, SHRUNK, UNCHANGED = "new", "removed", "grown", "shrunk", "unchanged"
STATUSES = (NEW, REMOVED, GROWN, SHRUNK, UNCHANGED)


@dataclass(frozen=True)
class Change:
    """One row of the change table.

    Attributes:
        status: one of :data:`STATUSES`.
        before: index of the earlier installation, or None (new).
        after: index of the later installation, or None (removed).
        area_before_m2, area_after_m2: their areas, m² (0 for the one that is not).
        overlap: area of their intersection / the smaller area (0 when unmatched).
    """

    status: str
    before: Optional[int]
    after: Optional[int]
    area_before_m2: float
    area_after_m2: float
    overlap: float

    @property
    def delta_m2(self) -> float:
        """Area after - area before, m²."""
        return self.area_after_m2 - self.area_before_m2


def match(before: Sequence[Any], after: Sequence[Any], min_overlap: float
          ) -> List[Tuple[int, int, float]]:
    """One-to-one pairs ``(i_before, j_after, overlap)`` by the module's rules 1 and 2."""
    if not len(before) or not len(after):
        return []
    b = np.asarray(before, dtype=object)
    a = np.asarray(after, dtype=object)
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(b[ib], a[ia]))
    smaller = np.minimum(shapely.area(b[ib]), shapely.area(a[ia]))
    ratio = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    cands = sorted(((float(x), float(r), int(i), int(j))
                    for x, r, i, j in zip(inter, ratio, ib, ia) if r >= min_overlap),
                   key=lambda t: (-t[0], -t[1], t[2], t[3]))
    used_b, used_a, pairs = set(), set(), []
    for _, r, i, j in cands:
        if i not in used_b and j not in used_a:
            used_b.add(i)
            used_a.add(j)
            pairs.append((i, j, r))
    return pairs


def compare(before: Sequence[Any], after: Sequence[Any], min_overlap: float,
            tolerance: float, tolerance_m2: float) -> List[Change]:
    """The change table of two dates (the module's rules), later installations in
    their order first (matched or new), then the removed ones in theirs.

    Args:
        before, after: the installations' outlines (shapely) of the earlier and the
            later date, in one metre CRS.
        min_overlap: rule 1's share, (0, 1].
        tolerance, tolerance_m2: rule 3's relative and absolute area tolerance.
    """
    area_b = [float(g.area) for g in before]
    area_a = [float(g.area) for g in after]
    by_after = {j: (i, r) for i, j, r in match(before, after, min_overlap)}
    out = []
    for j, aa in enumerate(area_a):
        if j not in by_after:
            out.append(Change(NEW, None, j, 0.0, aa, 0.0))
            continue
        i, r = by_after[j]
        delta = aa - area_b[i]
        if abs(delta) <= max(tolerance * area_b[i], tolerance_m2):
            status = UNCHANGED
        else:
            status = GROWN if delta > 0 else SHRUNK
        out.append(Change(status, i, j, area_b[i], aa, r))
    matched = {i for i, _ in by_after.values()}
    out += [Change(REMOVED, i, None, ab, 0.0, 0.0)
            for i, ab in enumerate(area_b) if i not in matched]
    return out


def counts(changes: Sequence[Change]) -> dict:
    """``{status: {"installations": n, "delta_m2": sum}}`` for every status."""
    out = {s: {"installations": 0, "delta_m2": 0.0} for s in STATUSES}
    for c in changes:
        out[c.status]["installations"] += 1
        out[c.status]["delta_m2"] += c.delta_m2
    return out


__all__ = ["NEW", "REMOVED", "GROWN", "SHRUNK", "UNCHANGED", "STATUSES", "Change",
           "match", "compare", "counts"]
