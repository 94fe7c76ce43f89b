"""Fixtures of the solar inventory's tests: the pv01 held-out detections as a result
layer, and an earlier date of the same tiles with known changes
(``tools.pv01_inventory``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tools.pv01_inventory import detect_to_gpkg, earlier_copies, heldout_tiles


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
