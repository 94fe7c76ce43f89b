"""The output of a batch job: one GeoPackage layer that region results are appended to.

Columns: the geometry (MultiPolygon, the raster's CRS), the result attributes of
``protocol.results.RESULT_FIELDS`` (the schema the plugin's result layers use too), and
a private ``region`` column: the index of the region that wrote the row, so that a resumed
job can delete the rows of regions the job store never recorded as finished
(``backend.daemon.batch_runner.reconcile_output``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Sequence, Tuple

import numpy as np

from backend.inference.batch.regions import RegionResult
from protocol.results import RESULT_FIELDS

# pyogrio logs "Created N records" at INFO for every region appended
logging.getLogger("pyogrio._io").setLevel(logging.WARNING)

#: Layer name when a job does not choose one.
DEFAULT_LAYER = "detections"

_DTYPES = {"str": object, "int": np.int32, "float": np.float64}

#: ``(name, numpy dtype)`` of the layer's attribute columns, after the geometry.
COLUMNS: Tuple[Tuple[str, Any], ...] = tuple(
    (name, _DTYPES[kind]) for name, kind in RESULT_FIELDS) + (("region", np.int32),)

#: Values of attributes a feature may leave out (a single model's polygons have no
#: ensemble vote to report, hence full agreement).
_FEATURE_DEFAULTS = {"agreement": 1.0}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class GpkgWriter:
    """Appends region results to one GeoPackage layer (MultiPolygon, pyogrio).

    Args:
        path: the ``.gpkg`` file.
        layer: the layer (table) name.
        crs_wkt: CRS of the geometries, WKT.
        detected_at: the ``detected_at`` value of every row (UTC, ISO 8601).
    """

    def __init__(self, path: str, layer: str, crs_wkt: str, detected_at: str = ""):
        self.path, self.layer, self.crs_wkt = str(path), layer, crs_wkt
        self.detected_at = detected_at

    def exists(self) -> bool:
        """True when the file exists and holds the layer."""
        if not os.path.isfile(self.path):
            return False
        import pyogrio
        try:
            return self.layer in [row[0] for row in pyogrio.list_layers(self.path)]
        except Exception:  # not a GeoPackage pyogrio can list: treat as absent
            return False

    def create(self) -> None:
        """(Re)create the file with an empty layer."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)
        self._write([], append=False)

    def append(self, result: RegionResult) -> int:
        """Append a region's polygons (one transaction); returns how many."""
        if result.features:
            self._write(result.features, append=True, region=result.index)
        return len(result.features)

    def _write(self, feats: Sequence[Dict[str, Any]], append: bool, region: int = -1) -> None:
        import shapely
        from pyogrio.raw import write

        geoms = []
        for f in feats:
            g = shapely.from_wkt(f["wkt"])
            if g.geom_type == "Polygon":
                g = shapely.MultiPolygon([g])
            geoms.append(shapely.to_wkb(g))

        def value(f: Dict[str, Any], name: str) -> Any:
            if name == "detected_at":
                return self.detected_at
            if name == "region":
                return region
            return f[name] if name in f else _FEATURE_DEFAULTS[name]

        data = [np.array([value(f, name) for f in feats], dtype=dt) for name, dt in COLUMNS]
        # GeoPackage 1.2: read without warnings by older GDALs (QGIS 3.22 has GDAL 3.6)
        write(self.path, np.array(geoms, dtype=object), data, [n for n, _ in COLUMNS],
              layer=self.layer, driver="GPKG", geometry_type="MultiPolygon",
              crs=self.crs_wkt, append=append,
              dataset_options=None if append else {"VERSION": "1.2"})

    def region_counts(self) -> Dict[int, int]:
        """``{region: rows}`` present in the layer."""
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            return {int(c): int(n) for c, n in db.execute(
                f"SELECT region, COUNT(*) FROM {_quote(self.layer)} GROUP BY region")}
        finally:
            db.close()

    def delete_regions(self, regions: Iterable[int]) -> int:
        """Delete the rows of these regions (one transaction); returns rows deleted."""
        regions = sorted(set(int(c) for c in regions))
        if not regions:
            return 0
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:
                n = 0
                for c in regions:
                    n += db.execute(f"DELETE FROM {_quote(self.layer)} WHERE region = ?",
                                    (c,)).rowcount
            return n
        finally:
            db.close()

    def count(self) -> int:
        """Rows in the layer."""
        return sum(self.region_counts().values())


__all__ = ["GpkgWriter", "COLUMNS", "DEFAULT_LAYER"]
