"""Real-data inputs of the solar inventory: the pv01 held-out detections as a result
layer, and an "earlier date" of the same tiles whose changes are known.

The earlier date is made from copies of the 12 held-out tiles, all shifted by
:data:`EARLIER_SHIFT_M` in their georeference (two orthophoto years never register
exactly), three of them edited (:data:`EDITS`):

* ``PV01_325173_1203753``: its array covered with the roof's colour, so it is **new**
  in the later (original) tiles;
* ``PV01_325239_1203816``: the lower half of its array covered, so it has **grown**;
* ``PV01_325173_1203750``: a copy of its array pasted onto the empty roof of the
  building in the tile's top left, so that one is **removed** later.

The shipped model detects on both sets (``backend.inference.detect.run_detect``) and
the results are written as the engine writes result GeoPackages
(``backend.inference.batch.gpkg.GpkgWriter``: the attributes of
``protocol.results.RESULT_FIELDS``, one ``region`` per tile). Used by
``tests/backend/reports`` and ``tools/report_shot.py``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from backend.config import pv01_dir

#: The model the detections are made with.
MODEL = "pv-unet-efl0"
#: Shift of the earlier copies' georeference, metres (east, north): 2 and 1 pixels of
#: 0.1 m. (At 0.3 m the thinnest detection, a sliver 1.4 m wide, would keep less than
#: half its area in common with itself and count as removed and new.)
EARLIER_SHIFT_M = (0.2, -0.1)
#: The layer name of the result GeoPackages.
LAYER = "detections"

Box = Tuple[int, int, int, int]  # row0, row1, col0, col1 (pixels, end excluded)


def heldout_tiles() -> List[Path]:
    """The 12 held-out tiles (RGB GeoTIFFs, 0.1 m, EPSG:32651), sorted."""
    return sorted(p for p in (pv01_dir() / "heldout").glob("PV01_*.tif")
                  if not p.name.endswith("_mask.tif"))


def _cover(img: np.ndarray, box: Box, sample: Box, seed: int) -> None:
    """Cover ``box`` of ``img`` (bands, H, W) with the median colour of ``sample`` and
    half its texture's spread as noise."""
    r0, r1, c0, c1 = box
    s = img[:, sample[0]:sample[1], sample[2]:sample[3]].reshape(img.shape[0], -1)
    med, sd = np.median(s, axis=1), s.std(axis=1)
    noise = np.random.default_rng(seed).normal(0.0, 0.5, (img.shape[0], r1 - r0, c1 - c0))
    img[:, r0:r1, c0:c1] = np.clip(med[:, None, None] + noise * sd[:, None, None], 0,
                                   255).astype(img.dtype)


def _paste(img: np.ndarray, source: Box, row: int, col: int) -> None:
    """Copy the pixels of ``source`` to the top-left corner ``row, col``."""
    r0, r1, c0, c1 = source
    img[:, row:row + r1 - r0, col:col + c1 - c0] = img[:, r0:r1, c0:c1].copy()


#: tile -> (what the later date shows there, the edited pixels (row0, row1, col0, col1),
#: the edit applied to the earlier copy's pixels).
EDITS: Dict[str, Tuple[str, Box, Callable[[np.ndarray], None]]] = {
    "PV01_325173_1203753": ("new", (198, 246, 0, 40),
                            lambda a: _cover(a, (198, 246, 0, 40), (145, 172, 2, 28), 1)),
    "PV01_325239_1203816": ("grown", (218, 256, 36, 118),
                            lambda a: _cover(a, (218, 256, 36, 118), (200, 256, 0, 30), 2)),
    "PV01_325173_1203750": ("removed", (40, 88, 27, 107),
                            lambda a: _paste(a, (197, 245, 165, 245), 40, 27)),
}


def edit_box_map(tile: Path) -> Tuple[float, float, float, float]:
    """The edited pixels of ``tile`` (a key of :data:`EDITS`) as a map box
    ``(xmin, ymin, xmax, ymax)`` in the later (original) tile's georeference."""
    import rasterio
    _, (r0, r1, c0, c1), _ = EDITS[tile.stem]
    with rasterio.open(tile) as ds:
        t = ds.transform
    return (t.c + c0 * t.a, t.f + r1 * t.e, t.c + c1 * t.a, t.f + r0 * t.e)


def earlier_copies(tiles: Sequence[Path], out_dir: Path) -> List[Path]:
    """Copies of ``tiles`` in ``out_dir``, shifted and edited (see the module)."""
    import rasterio
    from rasterio.transform import Affine
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for tile in tiles:
        with rasterio.open(tile) as ds:
            img, profile, t = ds.read(), ds.profile, ds.transform
        if tile.stem in EDITS:
            EDITS[tile.stem][2](img)
        profile.update(transform=Affine(t.a, t.b, t.c + EARLIER_SHIFT_M[0], t.d, t.e,
                                        t.f + EARLIER_SHIFT_M[1]))
        path = out_dir / tile.name
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(img)
        out.append(path)
    return out


def detect_to_gpkg(tiles: Sequence[Path], out_path: Path,
                   model: str = MODEL) -> List[List[Dict]]:
    """Detect on each tile and write every polygon into the result GeoPackage
    ``out_path`` (layer :data:`LAYER`, the tiles' CRS, the features in tile order);
    returns each tile's features (dicts of a ``result`` reply, ``wkt`` in the tiles'
    CRS)."""
    from backend.inference.batch.gpkg import GpkgWriter
    from backend.inference.batch.regions import RegionResult
    from backend.inference.detect import run_detect
    from protocol.params import DetectParams, FileSource
    results = [run_detect(DetectParams(FileSource(str(t)), model), []) for t in tiles]
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    writer = GpkgWriter(str(out_path), LAYER, results[0]["crs"], stamp)
    writer.create()
    for i, r in enumerate(results):
        writer.append(RegionResult(i, r["features"]))
    return [r["features"] for r in results]


__all__ = ["MODEL", "EARLIER_SHIFT_M", "LAYER", "EDITS", "heldout_tiles", "edit_box_map",
           "earlier_copies", "detect_to_gpkg"]
