"""Post-processing for coarser imagery: a card's ``postprocess_by_gsd`` entries.

A 0.3 m orthophoto read at a 0.1 m model's GSD gives softer probabilities than 0.1 m
imagery, so a card may hold its own threshold, minimum area and object filters for
coarser layers, each chosen and checked by nested cross-validation (``tools.cv_gsd``).
An entry serves layers from its ``from_gsd_m`` up to the next entry's; layers finer
than every entry use the card's own post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from backend.models.record import Record, as_dict, as_float, doc_field, typed_field


@dataclass
class GsdPostprocess(Record):
    """The post-processing of layers from ``from_gsd_m`` (metres per pixel) up.

    Attributes:
        from_gsd_m: the finest layer GSD served, metres per pixel.
        threshold: probability threshold, 0..1.
        min_area_m2, max_hole_m2: smallest object kept, largest hole filled, m².
        min_solidity, min_score: object filters
            (:func:`backend.inference.postprocess.filter_objects`); 0 keeps all.
        cross_validation: its nested out-of-fold figures (``tools.cv_gsd``).
    """

    from_gsd_m: float = typed_field(as_float)
    threshold: float = typed_field(as_float)
    min_area_m2: float = typed_field(as_float)
    max_hole_m2: float = typed_field(as_float, 0.0)
    min_solidity: float = typed_field(as_float, 0.0)
    min_score: float = typed_field(as_float, 0.0)
    cross_validation: Optional[Dict[str, Any]] = typed_field(as_dict, None)
    _doc: Dict[str, Any] = doc_field()


#: The fields an entry overrides in a detection's options.
FIELDS = ("threshold", "min_area_m2", "max_hole_m2", "min_solidity", "min_score")


def entry_for(entries: Sequence[GsdPostprocess], layer_gsd_m: Optional[float]
              ) -> Optional[GsdPostprocess]:
    """The entry serving a layer of ``layer_gsd_m`` metres per pixel: the one with the
    largest ``from_gsd_m`` not above it; None for an unknown GSD or a layer finer than
    every entry (the card's own post-processing then applies)."""
    if layer_gsd_m is None:
        return None
    served = [e for e in entries if e.from_gsd_m <= float(layer_gsd_m) + 1e-9]
    return max(served, key=lambda e: e.from_gsd_m) if served else None
