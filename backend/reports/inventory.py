"""Installations and their totals: per-installation attributes, modules and capacity,
and aggregation per building, zone and class.

Every figure is computed in the working CRS (``backend.reports.crs.working_crs``:
projected, metres). Modules and capacity follow ``protocol.inventory.Assumptions``:

    module area (m²) = outline area × packing factor / cos(tilt)
    modules          = module area / area of one module, rounded half up
    capacity (kWp)   = module area × power per m² (W/m², STC) / 1000

An installation belongs to the building (or zone) its outline overlaps most, by area of
intersection (ties: the polygon that comes first in its layer); one that overlaps no
building (or zone) belongs to none and is listed apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import shapely

from protocol.inventory import Assumptions, InventoryParams

from .crs import convergence_deg, to_lonlat
from .layers import PolygonLayer
from .shape import shape_of


@dataclass
class Installation:
    """One installation: a feature of the result layer and its figures.

    Attributes:
        inst_id: 1.. in the order of the result layer.
        fid: its feature id in the result layer.
        geom: the outline in the working CRS.
        cls, class_id, score, agreement, model, model_version, detected_at: the result
            layer's attributes (``protocol.results.RESULT_FIELDS``; None when absent).
        area_m2, length_m, width_m, rectangularity, azimuth_deg, flag: see
            ``backend.reports.shape.Shape``.
        module_m2: estimated module area, m²; modules: estimated module count;
        kwp: estimated nominal capacity, kWp (see the module's docstring).
        lon, lat: centroid, degrees (WGS 84).
        building, zone: the name of the building / zone it belongs to, or None.
    """

    inst_id: int
    fid: int
    geom: Any
    cls: str
    class_id: Optional[int]
    score: Optional[float]
    agreement: Optional[float]
    model: Optional[str]
    model_version: Optional[str]
    detected_at: Optional[str]
    area_m2: float
    length_m: float
    width_m: float
    rectangularity: float
    azimuth_deg: Optional[float]
    flag: str
    module_m2: float
    modules: int
    kwp: float
    lon: float
    lat: float
    building: Optional[str] = None
    zone: Optional[str] = None


def capacity(area_m2: float, a: Assumptions) -> tuple:
    """``(module_m2, modules, kwp)`` of an outline of ``area_m2`` (horizontal m²) under
    assumptions ``a`` (the module's docstring gives the formulas)."""
    module_m2 = area_m2 * a.packing_factor / math.cos(math.radians(a.tilt_deg))
    modules = int(math.floor(module_m2 / a.module_area_m2 + 0.5))
    return module_m2, modules, module_m2 * a.power_w_m2 / 1000.0


def _text(v: Any) -> Optional[str]:
    return None if v is None or v == "" else str(v)


def _number(v: Any, kind: Callable = float) -> Optional[Any]:
    try:
        return None if v is None else kind(v)
    except (TypeError, ValueError):
        return None


def make_installations(layer: PolygonLayer, geoms: Sequence, crs: Any,
                       params: InventoryParams) -> List[Installation]:
    """The installations of a result layer.

    Args:
        layer: the result layer as read (attributes, feature ids).
        geoms: its outlines in the working CRS ``crs`` (same order).
        crs: the working CRS (pyproj).
        params: the request (assumptions and shape limits).
    """
    if not len(geoms):
        return []
    cent = shapely.centroid(np.asarray(geoms, dtype=object))
    lon, lat = to_lonlat(crs, shapely.get_x(cent), shapely.get_y(cent))
    conv = convergence_deg(crs, lon, lat)
    col = {n: layer.column(n) for n in ("class", "class_id", "score", "agreement",
                                         "model", "model_version", "detected_at")}
    out = []
    for i, g in enumerate(geoms):
        s = shape_of(g, float(conv[i]), params.min_rectangularity, params.min_aspect)
        module_m2, modules, kwp = capacity(s.area_m2, params.assumptions)
        out.append(Installation(
            inst_id=i + 1, fid=layer.fids[i], geom=g, cls=_text(col["class"][i]) or "",
            class_id=_number(col["class_id"][i], int), score=_number(col["score"][i]),
            agreement=_number(col["agreement"][i]), model=_text(col["model"][i]),
            model_version=_text(col["model_version"][i]),
            detected_at=_text(col["detected_at"][i]), area_m2=s.area_m2,
            length_m=s.length_m, width_m=s.width_m, rectangularity=s.rectangularity,
            azimuth_deg=s.azimuth_deg, flag=s.flag, module_m2=module_m2, modules=modules,
            kwp=kwp, lon=float(lon[i]), lat=float(lat[i])))
    return out


def largest_overlap(geoms: Sequence, polygons: Sequence) -> List[Optional[int]]:
    """For each geometry, the index of the polygon it overlaps most (by intersection
    area; ties: the lower index), or None when it overlaps none (touching is not
    overlapping)."""
    if not len(geoms) or not len(polygons):
        return [None] * len(geoms)
    g = np.asarray(geoms, dtype=object)
    p = np.asarray(polygons, dtype=object)
    gi, pi = shapely.STRtree(p).query(g, predicate="intersects")
    areas = shapely.area(shapely.intersection(g[gi], p[pi]))
    best: List[Optional[int]] = [None] * len(geoms)
    best_area = [0.0] * len(geoms)
    for a, i, j in sorted(zip(areas, gi, pi), key=lambda t: (t[1], -t[0], t[2])):
        if a > 0 and best[i] is None:
            best[i], best_area[i] = int(j), float(a)
    return best


def polygon_names(layer: PolygonLayer, attribute: Optional[str], role: str) -> List[str]:
    """The name of each polygon of a building or zone layer: its ``attribute`` (text),
    else its feature id.

    Raises:
        JobError: ``invalid_input`` when the layer has no such attribute.
    """
    if attribute is None:
        return [str(f) for f in layer.fids]
    if attribute not in layer.attrs:
        from protocol.errors import E_INVALID_INPUT, JobError
        raise JobError(f"the {role} layer has no attribute '{attribute}' (it has "
                       f"{', '.join(sorted(layer.attrs)) or 'none'})", E_INVALID_INPUT,
                       field=role)
    return [str(f) if v is None else str(v)
            for v, f in zip(layer.attrs[attribute], layer.fids)]


@dataclass
class Totals:
    """What a group of installations adds up to.

    Attributes:
        key: the group (a class, a building's or zone's name; "" for all).
        installations: how many; area_m2: their outline area, m²; module_m2: module
            area, m²; modules: module count; kwp: capacity, kWp.
    """

    key: str = ""
    installations: int = 0
    area_m2: float = 0.0
    module_m2: float = 0.0
    modules: int = 0
    kwp: float = 0.0

    def add(self, inst: Installation) -> None:
        """Count ``inst`` in."""
        self.installations += 1
        self.area_m2 += inst.area_m2
        self.module_m2 += inst.module_m2
        self.modules += inst.modules
        self.kwp += inst.kwp


def totals_by(insts: Iterable[Installation], key: Callable[[Installation], Any],
              keys: Sequence[str] = ()) -> Dict[str, Totals]:
    """``{key: Totals}`` of installations grouped by ``key(inst)`` (installations whose
    key is None are left out); ``keys`` are listed first, even when empty, in order."""
    out: Dict[str, Totals] = {k: Totals(k) for k in keys}
    for inst in insts:
        k = key(inst)
        if k is not None:
            out.setdefault(k, Totals(k)).add(inst)
    return out


def overall(insts: Iterable[Installation]) -> Totals:
    """The totals of every installation."""
    t = Totals("all")
    for inst in insts:
        t.add(inst)
    return t


@dataclass
class Places:
    """Buildings or zones, with what they hold.

    Attributes:
        role: ``buildings`` or ``zones``.
        names: each polygon's name; geoms: the polygons in the working CRS.
        totals: name -> :class:`Totals` of its installations (every polygon listed).
        outside: the installations on none of them.
    """

    role: str
    names: List[str]
    geoms: List[Any]
    totals: Dict[str, Totals] = field(default_factory=dict)
    outside: List[Installation] = field(default_factory=list)


def place(insts: List[Installation], role: str, names: List[str],
          geoms: List[Any]) -> Places:
    """Give each installation its building or zone (``role``: the attribute
    ``building`` or ``zone`` is set) by :func:`largest_overlap`, and add them up."""
    which = largest_overlap([i.geom for i in insts], geoms)
    attr = "building" if role == "buildings" else "zone"
    for inst, j in zip(insts, which):
        setattr(inst, attr, None if j is None else names[j])
    return Places(role, names, geoms,
                  totals_by(insts, lambda i: getattr(i, attr), list(dict.fromkeys(names))),
                  [i for i, j in zip(insts, which) if j is None])


__all__ = ["Installation", "capacity", "make_installations", "largest_overlap",
           "polygon_names", "Totals", "totals_by", "overall", "Places", "place"]
