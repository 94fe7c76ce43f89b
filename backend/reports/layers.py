"""Reading the polygon layers of an inventory (pyogrio, any vector format GDAL opens).

A :class:`PolygonLayer` holds a layer's polygons as shapely geometries in the layer's
CRS, its feature ids and its attributes. Features without an area (points, lines,
empty or null geometries) are left out and counted; invalid polygons are repaired with
``shapely.make_valid`` (only their polygonal parts kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import shapely
from pyproj import CRS

from protocol.errors import E_INVALID_INPUT, E_NOT_FOUND, JobError
from protocol.inventory import VectorLayer


@dataclass
class PolygonLayer:
    """The polygons of one vector layer.

    Attributes:
        name: the layer's name in its file.
        path: the file.
        crs: the layer's CRS.
        geoms: Polygon or MultiPolygon geometries, in ``crs`` (one per kept feature).
        fids: the feature id of each (GeoPackage fids start at 1).
        attrs: attribute name -> the values of the kept features, in order.
        dropped: features left out (no area, or no geometry).
    """

    name: str
    path: str
    crs: CRS
    geoms: List[Any]
    fids: List[int]
    attrs: Dict[str, List[Any]] = field(default_factory=dict)
    dropped: int = 0

    def column(self, name: str, default: Any = None) -> List[Any]:
        """The values of attribute ``name``, or ``default`` for each feature when the
        layer has no such attribute."""
        return self.attrs.get(name, [default] * len(self.geoms))


def polygonal(geom: Any) -> Optional[Any]:
    """The polygonal part of a geometry (repaired when invalid), as a Polygon or
    MultiPolygon; None when it has no area."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom if geom.area > 0 else None
    parts = [p for p in shapely.get_parts(geom)
             if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    if not parts:
        return None
    return shapely.union_all(parts)


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python value; NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def read_polygons(ref: VectorLayer, role: str) -> PolygonLayer:
    """Read the polygons of a vector layer.

    Args:
        ref: the file and, optionally, its layer (default: the first).
        role: the request field it came from (``detections``, ``buildings``, ``zones``,
            ``earlier``): errors name it as their ``field``.

    Raises:
        JobError: ``not_found`` for a missing file; ``invalid_input`` for a file or
            layer GDAL cannot read, a layer without a CRS, or one with features of
            which none has an area.
    """
    from pyogrio.errors import DataLayerError, DataSourceError
    from pyogrio.raw import read

    if not os.path.isfile(ref.path):
        raise JobError(f"the {role} file does not exist: {ref.path}", E_NOT_FOUND,
                       field=role)
    try:
        meta, fids, wkb, data = read(ref.path, layer=ref.layer, return_fids=True,
                                     datetime_as_string=True)
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        raise JobError(f"the {role} layer cannot be read ({exc})", E_INVALID_INPUT,
                       field=role) from None
    if not meta.get("crs"):
        raise JobError(f"the {role} layer has no CRS: set one in QGIS (Layer Properties "
                       f"> Source) and save it", E_INVALID_INPUT, field=role)
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.full(len(fids), None)
    keep = [i for i, g in enumerate(geoms) if polygonal(g) is not None]
    if len(fids) and not keep:
        raise JobError(f"the {role} layer has no polygons (its {len(fids)} features "
                       f"have no area)", E_INVALID_INPUT, field=role)
    names = [str(n) for n in meta["fields"]]
    return PolygonLayer(
        name=ref.layer or _first_layer(ref.path), path=ref.path, crs=CRS(meta["crs"]),
        geoms=[polygonal(geoms[i]) for i in keep], fids=[int(fids[i]) for i in keep],
        attrs={n: [_plain(col[i]) for i in keep] for n, col in zip(names, data)},
        dropped=len(fids) - len(keep))


def _first_layer(path: str) -> str:
    """The name of the first layer of a vector file."""
    import pyogrio
    layers = pyogrio.list_layers(path)
    return str(layers[0][0]) if len(layers) else ""


__all__ = ["PolygonLayer", "polygonal", "read_polygons"]
