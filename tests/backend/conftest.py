"""Shared fixtures of the backend tests: repo root on ``sys.path``, free ports; the pv01
held-out detections as a result layer, an earlier date of the same tiles with known
changes (``tools.pv01_inventory``), the hand-digitised roofs of ``tests/fixtures`` and a
writer of small polygon layers (the solar inventory's tests, ``tests/backend/reports``).

One ``conftest`` for the whole tree: test modules import its helpers as ``conftest``,
which must name this module whichever folders a run collects."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import shapely

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.pv01_inventory import detect_to_gpkg, earlier_copies, heldout_tiles  # noqa: E402

#: Roof outlines digitised over three held-out tiles (see tests/fixtures/README.md).
ROOFS = REPO / "tests" / "fixtures" / "pv01_roofs.geojson"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture(scope="session")
def get_free_port():
    """The :func:`free_port` function, for tests that need several ports."""
    return free_port


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
