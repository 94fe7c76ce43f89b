"""Small rasters (in memory, written, VRT mosaics) and the polygons of a result or of a
batch GeoPackage."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .common import REPO


# ----------------------------------------------------------------------------- rasters

@contextlib.contextmanager
def open_raster(crs, transform, width: int, height: int, count: int = 3,
                dtype: str = "uint8", colorinterp=None, data=None):
    """An open in-memory GeoTIFF (rasterio) of ``data`` (count, height, width), or
    zeros, with this CRS and affine transform."""
    import numpy as np
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=width, height=height, count=count,
                      dtype=dtype, crs=crs, transform=transform) as w:
            w.write(np.zeros((count, height, width), dtype) if data is None else data)
            if colorinterp:
                w.colorinterp = colorinterp
        with mem.open() as ds:
            yield ds


def small_grid():
    """``(crs, transform, width, height)`` of a small raster: 100 x 50 pixels of 0.3 m in
    MGI / Austria GK East (the Vienna scene's CRS), x -1700..-1670, y 338545..338560."""
    from affine import Affine
    return "EPSG:31256", Affine(0.3, 0, -1700, 0, -0.3, 338560), 100, 50


#: The warning of a raster of :func:`small_grid` (0.3 m) for a 0.1 m model.
FAR_GSD = ("the raster's GSD (0.300 m) is far from the model's (0.1 m); it is resampled, "
           "expect lower accuracy")


def write_raster(path: Path, data, profile: Dict[str, Any], colorinterp=None,
                 **kw: Any) -> Path:
    """Write ``data`` (bands, H, W) as a GeoTIFF with the georeferencing of
    ``profile`` (a rasterio profile), its band count and dtype taken from ``data``;
    ``kw`` overrides profile entries. Returns ``path``."""
    import rasterio

    prof = dict(profile, count=data.shape[0], dtype=str(data.dtype), **kw)
    prof.pop("photometric", None)
    with rasterio.open(path, "w", **prof) as w:
        w.write(data)
        if colorinterp is not None:
            w.colorinterp = colorinterp
    return path


def build_vrt(path: Path, tiles: Sequence[Path], *options: str) -> Path:
    """A VRT mosaic of ``tiles`` written by ``gdalbuildvrt`` (``options`` before the
    output name). Skips the test without gdalbuildvrt or a tile. Returns ``path``."""
    import pytest

    exe = shutil.which("gdalbuildvrt")
    if exe is None or not all(Path(t).is_file() for t in tiles):
        pytest.skip("needs gdalbuildvrt (gdal-bin) and the pv01 held-out tiles")
    subprocess.run([exe, "-q", *options, str(path)] + [str(t) for t in tiles], check=True)
    return path


# ----------------------------------------------------------------------------- polygons

def against_mask(features: Sequence[Dict[str, Any]], image: Path) -> Tuple[float, int]:
    """``(pixel IoU, reference objects)`` of a result on a pv01 tile, computed apart from
    the engine: the features' polygons burnt by ``rasterio.features.rasterize`` onto the
    tile's ``<name>_mask.tif`` grid and compared with it by numpy; the reference
    objects are the mask's 8-connected components (scipy)."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.features import rasterize
    from scipy import ndimage
    with rasterio.open(Path(image).with_name(Path(image).stem + "_mask.tif")) as m:
        ref, t = m.read(1) > 0, m.transform
    geoms = [shapely.from_wkt(f["wkt"]) for f in features]
    pred = (rasterize(geoms, out_shape=ref.shape, transform=t, fill=0, default_value=1,
                      dtype="uint8") > 0) if geoms else np.zeros(ref.shape, bool)
    n = ndimage.label(ref, structure=np.ones((3, 3), bool))[1]
    return float((pred & ref).sum() / max(int((pred | ref).sum()), 1)), int(n)



def polygon_set(features: Sequence[Dict[str, Any]]) -> list:
    """``sorted((class, wkb, score, area))`` of protocol features (single polygons)."""
    import shapely
    return sorted((f["class"], shapely.from_wkt(f["wkt"]).wkb, f["score"], f["area_m2"])
                  for f in features)


def gpkg_rows(path: Path, layer: str = "detections") -> Tuple[list, List[int]]:
    """``(rows, regions)`` of a batch GeoPackage in file order: the tuples of
    :func:`polygon_set` (one-part multipolygons as polygons) and each row's region."""
    import shapely
    from pyogrio.raw import read
    meta, _, geoms, fields = read(str(path), layer=layer)[:4]
    col = {n: fields[i] for i, n in enumerate(meta["fields"])}
    rows = []
    for i, g in enumerate(geoms):
        mp = shapely.from_wkb(g)
        poly = mp.geoms[0] if len(mp.geoms) == 1 else mp
        rows.append((str(col["class"][i]), poly.wkb, float(col["score"][i]),
                     float(col["area_m2"][i])))
    return rows, [int(c) for c in col["region"]]


def gpkg_set(path: Path, layer: str = "detections") -> Tuple[list, List[int]]:
    """:func:`gpkg_rows` with the rows sorted, comparable with :func:`polygon_set`."""
    rows, regions = gpkg_rows(path, layer)
    return sorted(rows), regions


#: Roof outlines digitised over three held-out tiles (see tests/fixtures/README.md).
ROOFS = REPO / "tests" / "fixtures" / "pv01_roofs.geojson"


def write_polygons(path: Path, geoms: Sequence[Any], crs: str,
                   attrs: Optional[Dict[str, List[Any]]] = None,
                   layer: str = "polygons") -> Path:
    """Write shapely polygons (and text or number attributes) as a GeoPackage layer."""
    import numpy as np
    import shapely
    from pyogrio.raw import write
    attrs = attrs or {}
    data = [np.array(v, dtype=object if isinstance(v[0], str) else float)
            for v in attrs.values()]
    write(str(path), np.array([shapely.to_wkb(g) for g in geoms], dtype=object), data,
          list(attrs), layer=layer, driver="GPKG", crs=crs,
          geometry_type="Unknown")
    return path
