"""Where a retrained version may be used: its *area*, the ground it was taught on.

A retrain on the user's corrections teaches a model what *that* ground looks like; the
version is then good there and unproven elsewhere. Its card's lineage therefore
records an :class:`Area`: the reviewed extents, and the area's outline around them
(the reviewed extents grown by :data:`AREA_MARGIN_M` metres in their own metric CRS,
merged and closed by their convex hull), both stored in longitude/latitude
(EPSG:4326) so that a raster in any CRS can be tested against them.

Detection with ``by_area`` (``protocol.params.DetectParams``) runs the newest version
in use whose area covers the whole extent (:func:`covers`,
:mod:`backend.models.area_choice`), and the model it was asked for elsewhere. A
version made with ``scope: "general"`` has no area: it is used wherever it is chosen.

The JSON form keeps the keys it was first written with (``lineage["scope"]``, whose
outline is ``footprint_wkt``), so versions written before read the same.

Needs shapely and rasterio (the engine's environment), imported when an area is built
or tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Metres an area reaches beyond the reviewed extents: about a neighbourhood, so that
#: the rest of the pv01 site the user reviewed part of is covered (pv01's sites span
#: 50-250 m) and the next site, a few hundred metres away, is not.
AREA_MARGIN_M = 250.0
#: The CRS areas are stored in.
AREA_CRS = "EPSG:4326"

Box = Tuple[float, float, float, float]


@dataclass
class Area:
    """The area a version was taught on.

    Attributes:
        outline_wkt: the area's outline, a polygon in EPSG:4326 (lon, lat) as WKT.
        reviewed: the reviewed extents, ``(lon_min, lat_min, lon_max, lat_max)`` each.
        margin_m: how far the outline reaches beyond them, metres.
        area_km2: the outline's surface, km² (measured in the reviewed extents' CRS).
        reviewed_km2: the reviewed surface, km².
        centre: ``(lon, lat)`` of the outline's centroid, degrees.
    """

    outline_wkt: str
    reviewed: List[Box] = field(default_factory=list)
    margin_m: float = AREA_MARGIN_M
    area_km2: float = 0.0
    reviewed_km2: float = 0.0
    centre: Tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form kept in a version's lineage (``lineage["scope"]``)."""
        return {"crs": AREA_CRS, "footprint_wkt": self.outline_wkt,
                "reviewed": [[round(v, 7) for v in b] for b in self.reviewed],
                "margin_m": self.margin_m, "area_km2": round(self.area_km2, 4),
                "reviewed_km2": round(self.reviewed_km2, 6),
                "centre": [round(self.centre[0], 6), round(self.centre[1], 6)]}

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> Optional["Area"]:
        """The area of a lineage's ``scope`` entry; None when there is none or it
        cannot be read (such a version is treated as general)."""
        if not isinstance(d, dict) or not isinstance(d.get("footprint_wkt"), str):
            return None
        try:
            return cls(d["footprint_wkt"], [tuple(map(float, b)) for b in d.get("reviewed") or []],
                       float(d.get("margin_m", AREA_MARGIN_M)), float(d.get("area_km2", 0.0)),
                       float(d.get("reviewed_km2", 0.0)),
                       tuple(map(float, d.get("centre") or (0.0, 0.0))))
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        """``"0.27 km² around 32.5129° N, 120.4246° E (2 reviewed extents + 250 m)"``."""
        lon, lat = self.centre
        ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        n = len(self.reviewed)
        return (f"{self.area_km2:.2f} km² around {abs(lat):.4f}° {ns}, {abs(lon):.4f}° {ew} "
                f"({n} reviewed extent{'s' if n != 1 else ''} + {self.margin_m:g} m)")


def build_area(boxes: Sequence[Box], crs_wkt: str, margin_m: float = AREA_MARGIN_M
               ) -> Area:
    """The area of reviewed extents given in one metric CRS.

    Args:
        boxes: ``(xmin, ymin, xmax, ymax)`` of each reviewed extent, in ``crs_wkt``.
        crs_wkt: their CRS (a projected CRS in metres: the retrain's grid CRS).
        margin_m: the outline's reach beyond them, metres (>= 0).

    Raises:
        ValueError: no extents, or a negative margin.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    from shapely.ops import unary_union

    if not boxes:
        raise ValueError("a scope needs at least one reviewed extent")
    if margin_m < 0:
        raise ValueError(f"the site margin must be >= 0 m, not {margin_m}")
    src = CRS.from_user_input(crs_wkt)
    dst = CRS.from_user_input(AREA_CRS)
    rects = [box(*b) for b in boxes]
    reviewed = unary_union(rects)
    outline = unary_union([r.buffer(margin_m, join_style=2) for r in rects]).convex_hull
    outline = (outline.segmentize(max(1.0, margin_m / 4.0)) if hasattr(outline, "segmentize")
               else outline)
    outline_ll = shape(transform_geom(src, dst, mapping(outline)))
    c = outline_ll.centroid
    boxes_ll = [shape(transform_geom(src, dst, mapping(r))).bounds for r in rects]
    return Area(outline_ll.wkt, [tuple(b) for b in boxes_ll], float(margin_m),
                outline.area / 1e6, reviewed.area / 1e6, (c.x, c.y))


def area_of_extents(extents: Sequence[Tuple[Box, str]], margin_m: float = AREA_MARGIN_M
                    ) -> Area:
    """The area of reviewed extents each given in its own metric CRS: computed
    (:func:`build_area`) in the first one's CRS, the others brought into it.

    Args:
        extents: ``((xmin, ymin, xmax, ymax), CRS WKT)`` of each reviewed extent.
        margin_m: the outline's reach beyond them, metres (>= 0).

    Raises:
        ValueError: no extents, or a negative margin.
    """
    from rasterio.warp import transform_bounds
    if not extents:
        return build_area([], "", margin_m)
    crs = extents[0][1]
    boxes = []
    for b, b_crs in extents:
        if b_crs != crs:
            b = transform_bounds(b_crs, crs, *b, densify_pts=21)
        boxes.append(tuple(b))
    return build_area(boxes, crs, margin_m)


def extent_lonlat(bounds: Box, crs_wkt: str):
    """The extent ``bounds`` (in ``crs_wkt``) as a shapely polygon in EPSG:4326 (its
    edges densified, so a curved image of a straight edge is followed)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    g = box(*bounds)
    span = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    g = g.segmentize(span / 16.0) if span > 0 and hasattr(g, "segmentize") else g
    return shape(transform_geom(CRS.from_user_input(crs_wkt),
                                CRS.from_user_input(AREA_CRS), mapping(g)))


def covers(area: Area, bounds: Box, crs_wkt: str) -> bool:
    """Whether ``area``'s outline covers the whole extent ``bounds`` (in ``crs_wkt``);
    a tolerance of about 1 cm absorbs rounding of the stored WKT."""
    import shapely
    outline = shapely.from_wkt(area.outline_wkt)
    return bool(outline.buffer(1e-7).covers(extent_lonlat(bounds, crs_wkt)))


__all__ = ["AREA_MARGIN_M", "AREA_CRS", "Area", "build_area", "area_of_extents",
           "extent_lonlat", "covers"]
