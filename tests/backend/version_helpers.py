"""Helpers of the version and retrain tests (not a test module): the shipped model,
the real data they need, and area versions made from the shipped weights.

An area version here is a copy of the shipped model's weights written as a user version
with an area around one pv01 held-out site (PV01_325228_*): the outputs are then the
shipped model's, and what the tests check is *which* version ran (``stats["model"]``
and every feature's ``model``), inside the area and outside it (another held-out site,
PV01_325173_*, about 1 km away).
"""

from __future__ import annotations

import hashlib
import shutil

import pytest

from backend.config import data_dir, models_dir

MODEL = "pv-unet-efl0"
HAVE_MODEL = (models_dir() / MODEL / "weights.safetensors").is_file()
HAVE_DATA = (data_dir() / "pv01" / "heldout").is_dir() and \
    (data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif").is_file()
#: pv01 held-out data, the Vienna scene and the shipped model.
needs_real = pytest.mark.skipif(not (HAVE_DATA and HAVE_MODEL),
                                reason="real data (ORTHOLENS_DATA) or shipped model missing")

HELDOUT = data_dir() / "pv01" / "heldout"
INSIDE = HELDOUT / "PV01_325228_1203845.tif"
INSIDE_2 = HELDOUT / "PV01_325228_1203843.tif"
OUTSIDE = HELDOUT / "PV01_325173_1203750.tif"
HAVE_TILES = INSIDE.is_file() and OUTSIDE.is_file() and HAVE_MODEL
#: The held-out tiles of the area versions and the shipped model.
needs_tiles = pytest.mark.skipif(not HAVE_TILES, reason="pv01 held-out tiles "
                                 "(ORTHOLENS_DATA) or the shipped model missing")


def shipped_digest() -> str:
    """SHA-256 of the shipped model's card and weights (they are never written)."""
    h = hashlib.sha256()
    for p in sorted((models_dir() / MODEL).iterdir()):
        if p.is_file() and p.suffix in (".json", ".safetensors"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def shipped_state():
    """``(card, torch state dict)`` of the shipped model."""
    from safetensors.torch import load_file
    from backend.models.catalog import load_card
    card = load_card(MODEL)
    return card, load_file(str(card.weights_path))


def tile_bounds(path):
    """``((xmin, ymin, xmax, ymax), CRS WKT)`` of a raster."""
    import rasterio
    with rasterio.open(path) as ds:
        return tuple(ds.bounds), ds.crs.to_wkt()


def make_area_version(tiles, margin_m: float = 250.0, use: bool = True) -> str:
    """A user version of the shipped model (its own weights, moved in as a prepared
    candidate) taught on the extents of ``tiles``; returns its id."""
    from backend.models import versions as V
    from backend.models.area import build_area
    from backend.models.catalog import load_card
    from backend.models.version_writer import candidate_dir, write_version
    card = load_card(MODEL)
    prep = candidate_dir(MODEL)
    for name in ("weights.safetensors", "model.onnx"):
        if (card.path / name).is_file():
            shutil.copy(card.path / name, prep / name)
    boxes = [tile_bounds(t)[0] for t in tiles]
    area = build_area(boxes, tile_bounds(tiles[0])[1], margin_m).to_dict()
    new = write_version(card, None, {}, {"scope": area, "decision": "accepted",
                                         "verdict": "accepted", "corrections": 1},
                        prepared=prep)
    shutil.rmtree(prep, ignore_errors=True)
    if use:
        V.activate(new.id)
    return new.id
