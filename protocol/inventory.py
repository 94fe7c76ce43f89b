"""Typed parameters of an ``inventory`` request: a solar inventory of a result layer.

The engine reads the detections (and, when given, building footprints, zones and an
earlier result layer of the same area) from vector files, computes each installation's
attributes, aggregates them per building, zone and class, compares the two dates, and
writes a GeoPackage, a CSV and an HTML report into an output folder
(``backend.reports``; the attributes, assumptions and rules: ``docs/inventory.md``).

Like the classes of :mod:`protocol.params`, each field declares its checker
(:func:`protocol.rules.rule`), from which ``protocol.schema`` derives the request's
schema. Needs only the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Union

from .checks import (check_assumptions, check_boolean, check_layer_field,
                     check_optional_vector_layer, check_path, check_vector_layer, num_range,
                     string)
from .errors import ProtocolError
from .rules import RequestParams, rule


@dataclass(frozen=True)
class VectorLayer:
    """A layer of a vector file on the engine's machine.

    Attributes:
        path: the file (GeoPackage, GeoJSON, Shapefile... anything GDAL's OGR opens).
        layer: its layer, for a file that holds several; None: the first one.
    """

    path: str
    layer: Optional[str] = None

    def to_wire(self) -> Dict[str, Any]:
        """``{"path", "layer"?}``."""
        return {"path": self.path, **({"layer": self.layer} if self.layer else {})}

    @classmethod
    def from_wire(cls, d: Union["VectorLayer", Mapping[str, Any], None]
                  ) -> Optional["VectorLayer"]:
        """A :class:`VectorLayer` from its wire form (None and typed values pass).

        Raises:
            ProtocolError: ``bad_request`` for an invalid layer.
        """
        if d is None or isinstance(d, VectorLayer):
            return d
        err = check_vector_layer(d)
        if err:
            raise ProtocolError(f"layer {err}")
        return cls(d["path"], d.get("layer"))


@dataclass(frozen=True)
class Assumptions:
    """How an installation's outline becomes modules and capacity (``docs/inventory.md``
    gives each default's source).

    Attributes:
        module_area_m2: area of one module, m². Default 2.0: the 108-half-cell
            format of about 1.72-1.80 m x 1.13 m (1.95-2.04 m²) and the 72-cell format
            of 1.96 m x 0.99 m (1.94 m²) of current module datasheets, rounded.
        power_w_m2: nominal (STC) power per m² of module area, W/m². Default 200: a
            module efficiency of 20 % times the 1000 W/m² of the standard test
            conditions (IEC 60904-3); 20 % is the efficiency the Swiss Federal Office
            of Energy's sonnendach.ch method has assumed since 1 January 2023.
        packing_factor: share of an outline covered by modules, (0, 1]. Default 1.0:
            the outline is taken as module area (the gaps between modules of one
            array are a few centimetres, under the imagery's pixel); an assumption.
        tilt_deg: tilt of the modules from the horizontal, degrees [0, 75]. An
            orthophoto shows the horizontal projection, so the module area is the
            outline's area / cos(tilt). Default 0 (modules lying flat); an assumption:
            set the typical roof pitch of the area for pitched roofs.
    """

    module_area_m2: float = 2.0
    power_w_m2: float = 200.0
    packing_factor: float = 1.0
    tilt_deg: float = 0.0

    def to_wire(self) -> Dict[str, float]:
        """``{"module_area_m2", "power_w_m2", "packing_factor", "tilt_deg"}``."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_wire(cls, d: Union["Assumptions", Mapping[str, Any], None]) -> "Assumptions":
        """Assumptions from their wire form (a field left out, or None, takes its
        default; typed values pass).

        Raises:
            ProtocolError: ``bad_request`` for a value outside its range.
        """
        if isinstance(d, Assumptions):
            return d
        d = d or {}
        err = check_assumptions(d)
        if err:
            raise ProtocolError(f"assumptions {err}")
        return cls(**{f.name: float(d[f.name]) for f in fields(cls) if f.name in d})


#: Where each default of :class:`Assumptions` comes from, as the report prints it.
ASSUMPTION_SOURCES: Dict[str, str] = {
    "module_area_m2": (
        "rounded from module datasheets: 108-half-cell modules of 1800 x 1134 mm "
        "(2.04 m², e.g. Sunpro SPDG450-N108RL10) and 72-cell modules of 1956 x 992 mm "
        "(1.94 m²); an assumption for any given area"),
    "power_w_m2": (
        "20 % module efficiency x 1000 W/m² (standard test conditions, IEC 60904-3); "
        "20 % is the module efficiency of the sonnendach.ch solar potential of the "
        "Swiss Federal Office of Energy since 1 January 2023 (17 % before)"),
    "packing_factor": (
        "assumption: the outline is taken as module area (gaps between the modules of "
        "one array are a few cm, below the imagery's pixel)"),
    "tilt_deg": (
        "assumption: modules lying flat; an orthophoto shows the horizontal projection, "
        "so tilted modules have area / cos(tilt)"),
}

#: Defaults of the rules of an inventory (see :class:`InventoryParams`).
MIN_RECTANGULARITY, MIN_ASPECT = 0.8, 1.1
MATCH_OVERLAP, AREA_TOLERANCE, AREA_TOLERANCE_M2 = 0.5, 0.1, 1.0


@dataclass(frozen=True)
class InventoryParams(RequestParams):
    """An ``inventory`` request: the solar inventory of a result layer.

    Attributes:
        detections: the result layer (polygons; ``protocol.results.RESULT_FIELDS``
            are read when present).
        out_dir: the folder the engine writes ``solar_inventory.gpkg``,
            ``solar_inventory.csv`` and ``solar_inventory.html`` into (created; those
            files are replaced).
        buildings: building footprints (polygons): each installation is counted on the
            building it overlaps most; None: no per-building table.
        building_id: the buildings' attribute that names them; None: their feature id.
        zones: zones (districts, municipalities; polygons), the same rule; None: none.
        zone_name: the zones' attribute that names them; None: their feature id.
        earlier: a result layer of the same area at an earlier date: installations
            new, removed, grown or shrunk since; None: no change table.
        title: the report's title; None: ``Solar inventory``.
        assumptions: modules and capacity (:class:`Assumptions`).
        min_rectangularity: an outline's area / its minimum rotated rectangle's area
            below which it gets no azimuth (flag ``irregular``), 0..1.
        min_aspect: the rectangle's length / width below which its long axis is too
            uncertain for an azimuth (flag ``square``), >= 1.
        match_overlap: two installations of the two dates match when their
            intersection covers at least this share of the smaller one, (0, 1].
        area_tolerance, area_tolerance_m2: a matched installation is unchanged while
            its area changed by at most the larger of this share of its earlier area
            and this many m², else grown or shrunk.
        overwrite: False: refuse to replace existing output files; None/True: replace.
    """

    TYPE = "inventory"

    detections: VectorLayer = rule(check_vector_layer, required=True)
    out_dir: str = rule(check_path, required=True)
    buildings: Optional[VectorLayer] = rule(check_optional_vector_layer, default=None)
    building_id: Optional[str] = rule(check_layer_field, default=None)
    zones: Optional[VectorLayer] = rule(check_optional_vector_layer, default=None)
    zone_name: Optional[str] = rule(check_layer_field, default=None)
    earlier: Optional[VectorLayer] = rule(check_optional_vector_layer, default=None)
    title: Optional[str] = rule(string(200), default=None)
    assumptions: Assumptions = rule(check_assumptions, default=Assumptions())
    min_rectangularity: float = rule(num_range(0.0, 1.0), default=MIN_RECTANGULARITY)
    min_aspect: float = rule(num_range(1.0, 10.0), default=MIN_ASPECT)
    match_overlap: float = rule(num_range(0.0, 1.0, lo_open=True), default=MATCH_OVERLAP)
    area_tolerance: float = rule(num_range(0.0, 10.0), default=AREA_TOLERANCE)
    area_tolerance_m2: float = rule(num_range(0.0, 1e6), default=AREA_TOLERANCE_M2)
    overwrite: Optional[bool] = rule(check_boolean, default=None)

    def __post_init__(self) -> None:
        for name in ("detections", "buildings", "zones", "earlier"):
            object.__setattr__(self, name, VectorLayer.from_wire(getattr(self, name)))
        object.__setattr__(self, "assumptions", Assumptions.from_wire(self.assumptions))


__all__ = ["VectorLayer", "Assumptions", "ASSUMPTION_SOURCES", "InventoryParams",
           "MIN_RECTANGULARITY", "MIN_ASPECT", "MATCH_OVERLAP", "AREA_TOLERANCE",
           "AREA_TOLERANCE_M2"]
