"""The shipped model's files and user versions made from its weights with an area
around real held-out tiles: the outputs are then the shipped model's, and what a test
checks is *which* version ran."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Optional, Sequence

from backend.config import models_dir
from tests.support.common import DEFAULT_MODEL


# ----------------------------------------------------------------------------- versions

def shipped_digest() -> str:
    """SHA-256 of the shipped model's card and weights (they are never written)."""
    h = hashlib.sha256()
    for p in sorted((models_dir() / DEFAULT_MODEL).iterdir()):
        if p.is_file() and p.suffix in (".json", ".safetensors"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def shipped_state():
    """``(card, torch state dict)`` of the shipped model."""
    from safetensors.torch import load_file
    from backend.models.catalog import load_card
    card = load_card(DEFAULT_MODEL)
    return card, load_file(str(card.weights_path))


def tile_bounds(path: Path):
    """``((xmin, ymin, xmax, ymax), CRS WKT)`` of a raster."""
    import rasterio
    with rasterio.open(path) as ds:
        return tuple(ds.bounds), ds.crs.to_wkt()


def make_area_version(tiles: Sequence[Path], margin_m: float = 250.0,
                      use: bool = True, boxes: Optional[Sequence[tuple]] = None) -> str:
    """A user version of the shipped model (its own weights, moved in as a prepared
    candidate) taught on the extents of ``tiles`` plus ``margin_m``; returns its id.
    ``boxes``: the reviewed extents ``(xmin, ymin, xmax, ymax)`` in the first tile's
    CRS instead of the tiles' (an area smaller than a tile).

    Its outputs are the shipped model's, so a test of it checks *which* version ran
    (``stats["model"]`` and every feature's ``model``), inside its area and outside.
    """
    from backend.models import versions as V
    from backend.models.area import build_area
    from backend.models.catalog import load_card
    from backend.models.version_writer import candidate_dir, write_version
    card = load_card(DEFAULT_MODEL)
    prep = candidate_dir(DEFAULT_MODEL)
    for name in ("weights.safetensors", "model.onnx"):
        if (card.path / name).is_file():
            shutil.copy(card.path / name, prep / name)
    boxes = list(boxes) if boxes else [tile_bounds(t)[0] for t in tiles]
    area = build_area(boxes, tile_bounds(tiles[0])[1], margin_m).to_dict()
    new = write_version(card, None, {}, {"scope": area, "decision": "accepted",
                                         "verdict": "accepted", "corrections": 1},
                        prepared=prep)
    shutil.rmtree(prep, ignore_errors=True)
    if use:
        V.activate(new.id)
    return new.id
