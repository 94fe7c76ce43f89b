"""Shared by the inventory tests: the pv01 held-out detections as a result layer, an
earlier date of the same tiles with known changes (``tools.pv01_inventory``), the
hand-digitised roofs of ``tests/fixtures`` and a writer of small polygon layers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import shapely

from tools.pv01_inventory import detect_to_gpkg, earlier_copies, heldout_tiles

REPO = Path(__file__).resolve().parents[3]
ROOFS = REPO / "tests" / "fixtures" / "pv01_roofs.geojson"


def write_polygons(path: Path, geoms: Sequence[Any], crs: str,
                   attrs: Optional[Dict[str, List[Any]]] = None,
                   layer: str = "polygons") -> Path:
    """Write shapely polygons (and text or number attributes) as a GeoPackage layer."""
    from pyogrio.raw import write
    attrs = attrs or {}
    data = [np.array(v, dtype=object if isinstance(v[0], str) else float)
            for v in attrs.values()]
    write(str(path), np.array([shapely.to_wkb(g) for g in geoms], dtype=object), data,
          list(attrs), layer=layer, driver="GPKG", crs=crs,
          geometry_type="Unknown")
    return path


def _detected(tiles, path) -> SimpleNamespace:
    per_tile = detect_to_gpkg(tiles, path)
    return SimpleNamespace(path=path, tiles=list(tiles),
                           features=[f for fs in per_tile for f in fs],
                           tile_of=[t.stem for t, fs in zip(tiles, per_tile) for _ in fs])


@pytest.fixture(scope="session")
def heldout(tmp_path_factory):
    """The shipped model's detections on the 12 held-out tiles as one result layer:
    ``path`` (GeoPackage), ``features`` (the ``result`` features, EPSG:32651, in the
    layer's order), ``tile_of`` (the tile of each), ``tiles``."""
    tiles = heldout_tiles()
    assert len(tiles) == 12, "the pv01 held-out tiles are needed (ORTHOLENS_DATA)"
    return _detected(tiles, tmp_path_factory.mktemp("heldout") / "heldout.gpkg")


@pytest.fixture(scope="session")
def earlier(tmp_path_factory, heldout):
    """The detections on the shifted and edited copies of the held-out tiles (the
    earlier date), as :func:`heldout`."""
    folder = tmp_path_factory.mktemp("earlier")
    return _detected(earlier_copies(heldout.tiles, folder / "tiles"),
                     folder / "earlier.gpkg")
