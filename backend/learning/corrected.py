"""Corrected features as the retrain reads them: polygons with a class, the reviewed
area they belong to and their review state (:func:`parse_features`)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import protocol as P
from protocol.errors import CorrectionsError

#: A corrected feature: ``(polygonal shapely geometry, class id, area index or None,
#: review state or None)``.
Feature = Tuple[Any, int, Optional[int], Optional[str]]


def parse_features(features: Sequence[Dict[str, Any]], class_ids: Dict[str, int],
                   invalid: str = "repair") -> Tuple[List[Feature], List[str], int]:
    """Parse corrected features.

    Args:
        features: ``[{"wkt": str, "class": str, "class_id": int?, "area": int?,
            "review": str?}]``.
        class_ids: class name -> id of the model card.
        invalid: ``"repair"`` (``shapely.make_valid``, with a warning) or ``"refuse"``.

    Returns:
        ``([(polygonal geometry, class id, area index or None, review state or None)],
        warnings, n_repaired)``;
        empty geometries and non-polygon parts are dropped (with a warning).

    Raises:
        CorrectionsError: unreadable WKT, an unknown class, or (``refuse``) an invalid
            geometry; the message names the feature.
    """
    import shapely
    from shapely.validation import explain_validity, make_valid

    ids = set(class_ids.values())
    out: List[Feature] = []
    warnings: List[str] = []
    repaired = 0
    for i, f in enumerate(features):
        if not isinstance(f, dict) or not isinstance(f.get("wkt"), str):
            raise CorrectionsError(f"feature {i} has no 'wkt' string", P.E_BAD_REQUEST)
        try:
            g = shapely.from_wkt(f["wkt"])
        except Exception as exc:  # shapely.errors.GEOSException and friends
            raise CorrectionsError(f"feature {i}: unreadable WKT ({exc})",
                                   P.E_BAD_REQUEST) from None
        name = f.get("class")
        if isinstance(name, str) and name in class_ids:
            cid = class_ids[name]
        elif isinstance(f.get("class_id"), int) and f["class_id"] in ids and not name:
            cid = int(f["class_id"])
        else:
            raise CorrectionsError(
                f"feature {i} has class {name!r}, which the model does not know "
                f"(classes: {', '.join(sorted(class_ids))}); fix the 'class' attribute")
        if g is None or g.is_empty:
            warnings.append(f"feature {i} has an empty geometry; ignored")
            continue
        if not g.is_valid:
            why = explain_validity(g)
            if invalid == "refuse":
                raise CorrectionsError(
                    f"feature {i} has an invalid geometry ({why}); fix it (e.g. QGIS "
                    f"Vector > Geometry Tools > Fix Geometries) or let Ortholens repair it")
            g = make_valid(g)
            repaired += 1
            warnings.append(f"feature {i}: invalid geometry ({why}) repaired with "
                            f"make_valid")
        g = _polygonal(g)
        if g is None:
            warnings.append(f"feature {i} is not a polygon; ignored")
            continue
        area = f.get("area")
        out.append((g, cid, int(area) if isinstance(area, int) else None, f.get("review")))
    return out, warnings, repaired


def _polygonal(g):
    """The polygonal part of a geometry (None when it has none)."""
    from shapely.geometry import MultiPolygon, Polygon
    if isinstance(g, (Polygon, MultiPolygon)):
        return g if not g.is_empty else None
    parts = [p for p in getattr(g, "geoms", []) if isinstance(p, (Polygon, MultiPolygon))]
    polys = []
    for p in parts:
        polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    polys = [p for p in polys if not p.is_empty and p.area > 0]
    return MultiPolygon(polys) if polys else None
