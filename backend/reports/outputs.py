"""The files of an inventory: its GeoPackage and its CSV (the report is
``backend.reports.report``).

The GeoPackage (working CRS) holds the layers

* ``installations``: one polygon per installation with :data:`INSTALLATION_COLUMNS`;
* ``buildings`` / ``zones`` (when given): each building / zone with what it holds;
* ``changes`` (with an earlier layer): each installation of either date with its
  status (``backend.reports.change``);
* ``totals``: a table without geometry, one row per class and one for all.

The CSV has one row per installation, the columns of the ``installations`` layer. Both
are written to a temporary file beside the target and then renamed over it, so that a
reader never sees half a file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import shapely

from .change import Change
from .inventory import Installation, Places, Totals

#: ``(column, kind, value of an Installation)`` of the ``installations`` layer and the
#: CSV, in order. Kinds: ``int``, ``float`` (NULL when None), ``str``.
INSTALLATION_COLUMNS: Tuple[Tuple[str, str, Any], ...] = (
    ("inst_id", "int", lambda i: i.inst_id),
    ("source_fid", "int", lambda i: i.fid),
    ("class", "str", lambda i: i.cls),
    ("class_id", "int", lambda i: i.class_id),
    ("score", "float", lambda i: i.score),
    ("agreement", "float", lambda i: i.agreement),
    ("model", "str", lambda i: i.model),
    ("model_version", "str", lambda i: i.model_version),
    ("detected_at", "str", lambda i: i.detected_at),
    ("area_m2", "float", lambda i: i.area_m2),
    ("length_m", "float", lambda i: i.length_m),
    ("width_m", "float", lambda i: i.width_m),
    ("rectangularity", "float", lambda i: i.rectangularity),
    ("azimuth_deg", "float", lambda i: i.azimuth_deg),
    ("shape_flag", "str", lambda i: i.flag),
    ("module_m2", "float", lambda i: i.module_m2),
    ("modules", "int", lambda i: i.modules),
    ("kwp", "float", lambda i: i.kwp),
    ("lon", "float", lambda i: i.lon),
    ("lat", "float", lambda i: i.lat),
    ("building", "str", lambda i: i.building),
    ("zone", "str", lambda i: i.zone),
)

#: Columns of a ``buildings`` / ``zones`` / ``totals`` row after its name.
TOTAL_COLUMNS = (("installations", "int"), ("area_m2", "float"), ("module_m2", "float"),
                 ("modules", "int"), ("kwp", "float"))
#: Columns of the ``changes`` layer.
CHANGE_COLUMNS = (("status", "str"), ("inst_id", "int"), ("earlier_fid", "int"),
                  ("area_before_m2", "float"), ("area_after_m2", "float"),
                  ("delta_m2", "float"), ("overlap", "float"))


def _array(values: Sequence[Any], kind: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A column for pyogrio and its NULL mask (None for float: NaN is NULL)."""
    if kind == "int":
        mask = np.array([v is None for v in values], dtype=bool)
        return np.array([0 if v is None else int(v) for v in values], np.int64), mask
    if kind == "float":
        return np.array([np.nan if v is None else float(v) for v in values], float), None
    return np.array([None if v is None else str(v) for v in values], object), None


class GpkgOut:
    """Writes the layers of one GeoPackage, to be moved into place by :meth:`commit`.

    Args:
        path: the final ``.gpkg``.
        crs_wkt: CRS of every layer.
    """

    def __init__(self, path: Path, crs_wkt: str):
        self.path, self.crs_wkt = Path(path), crs_wkt
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.gpkg")
        self.tmp.unlink(missing_ok=True)

    def layer(self, name: str, geoms: Optional[Sequence[Any]],
              columns: Sequence[Tuple[str, str, Sequence[Any]]]) -> None:
        """Add layer ``name``: MultiPolygons ``geoms`` (None: a table without
        geometry) and ``columns`` ``(name, kind, values)``."""
        from pyogrio.raw import write
        data, masks = zip(*[_array(v, kind) for _, kind, v in columns])
        wkb = None if geoms is None else np.array(
            [shapely.to_wkb(shapely.MultiPolygon(list(shapely.get_parts(g))))
             for g in geoms], dtype=object)
        first = not self.tmp.exists()
        write(str(self.tmp), wkb, list(data), [c[0] for c in columns],
              field_mask=list(masks), layer=name, driver="GPKG",
              geometry_type=None if geoms is None else "MultiPolygon",
              crs=None if geoms is None else self.crs_wkt,
              dataset_options={"VERSION": "1.2"} if first else None)

    def commit(self) -> Path:
        """Move the written file over the target; returns the target."""
        os.replace(self.tmp, self.path)
        return self.path


def installation_columns(insts: Sequence[Installation]) -> List[Tuple[str, str, List]]:
    """``(name, kind, values)`` of :data:`INSTALLATION_COLUMNS`."""
    return [(n, k, [get(i) for i in insts]) for n, k, get in INSTALLATION_COLUMNS]


def totals_columns(label: str, rows: Sequence[Totals],
                   extra: Sequence[Tuple[str, str, List]] = ()) -> List[Tuple[str, str, List]]:
    """``(name, kind, values)`` of totals rows: ``label`` (their key), ``extra``
    columns, then :data:`TOTAL_COLUMNS`."""
    return ([(label, "str", [t.key for t in rows])] + list(extra)
            + [(n, k, [getattr(t, n) for t in rows]) for n, k in TOTAL_COLUMNS])


def places_layer(out: GpkgOut, places: Places) -> None:
    """Write a ``buildings`` or ``zones`` layer: one row per name (its polygons
    united), its area and what it holds (``coverage``: panel area / its area)."""
    label = "building" if places.role == "buildings" else "zone"
    shapes: Dict[str, List[Any]] = {}
    for name, g in zip(places.names, places.geoms):
        shapes.setdefault(name, []).append(g)
    geoms = [shapely.union_all(gs) if len(gs) > 1 else gs[0] for gs in shapes.values()]
    rows = [places.totals[name] for name in shapes]
    own = [g.area for g in geoms]
    extra = [(f"{label}_m2", "float", own),
             ("coverage", "float", [t.area_m2 / a if a > 0 else None
                                    for t, a in zip(rows, own)])]
    out.layer(places.role, geoms, totals_columns(label, rows, extra))


def changes_layer(out: GpkgOut, changes: Sequence[Change], after: Sequence[Installation],
                  before_geoms: Sequence[Any], before_fids: Sequence[int]) -> None:
    """Write the ``changes`` layer: a removed installation with its earlier outline,
    every other with its later one."""
    geoms = [after[c.after].geom if c.after is not None else before_geoms[c.before]
             for c in changes]
    values = [
        [c.status for c in changes],
        [None if c.after is None else after[c.after].inst_id for c in changes],
        [None if c.before is None else before_fids[c.before] for c in changes],
        [c.area_before_m2 for c in changes], [c.area_after_m2 for c in changes],
        [c.delta_m2 for c in changes], [c.overlap for c in changes]]
    out.layer("changes", geoms, [(n, k, v) for (n, k), v in zip(CHANGE_COLUMNS, values)])


def write_csv(path: Path, insts: Sequence[Installation]) -> Path:
    """Write the installations as CSV (UTF-8, comma-separated, a header row; NULL as
    an empty cell; floats with up to 6 decimals); returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([n for n, _, _ in INSTALLATION_COLUMNS])
        for inst in insts:
            row = []
            for _, kind, get in INSTALLATION_COLUMNS:
                v = get(inst)
                row.append("" if v is None else
                           f"{v:.6f}".rstrip("0").rstrip(".") if kind == "float" else v)
            w.writerow(row)
    os.replace(tmp, path)
    return path


__all__ = ["INSTALLATION_COLUMNS", "TOTAL_COLUMNS", "CHANGE_COLUMNS", "GpkgOut",
           "installation_columns", "totals_columns", "places_layer", "changes_layer",
           "write_csv"]
