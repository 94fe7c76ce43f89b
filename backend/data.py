"""Loading the real pv01 tiles (Jiang et al. 2021, doi:10.5281/zenodo.5171712, CC BY 4.0).

Tiles are 256 x 256 RGB uint8 GeoTIFFs at 0.1 m GSD with a ``*_mask.tif`` beside each
(uint8, 1 = photovoltaic panel). The ``train`` split is further divided into
``fit`` and ``val`` by spatial cluster (:func:`split_train`) so that thresholds are
chosen on data the held-out split never touches.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .config import pv01_dir

_NAME = re.compile(r"PV01_(\d+)_(\d+)$")


@dataclass
class Tile:
    """One image tile and its reference mask.

    Attributes:
        name: file stem, e.g. ``PV01_325173_1203750``.
        image_path, mask_path: GeoTIFF paths.
        lat, lon: degrees, parsed from the name (x 1e-4).
    """

    name: str
    image_path: Path
    mask_path: Path
    lat: float
    lon: float

    def read(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (3, H, W), mask uint8 (H, W))``."""
        import rasterio
        with rasterio.open(self.image_path) as src:
            img = src.read()
        with rasterio.open(self.mask_path) as src:
            mask = src.read(1)
        return img, (mask > 0).astype(np.uint8)


def list_tiles(split: str, root: Path = None) -> List[Tile]:
    """Tiles of ``split`` (``train`` or ``heldout``) of pv01, sorted by name.

    Raises:
        FileNotFoundError: the folder is missing (data path wrong: set ORTHOLENS_DATA).
    """
    root = Path(root) if root else pv01_dir()
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"pv01 split folder {folder} not found; set ORTHOLENS_DATA "
                                f"to the folder that holds pv01/")
    tiles = []
    for p in sorted(folder.glob("PV01_*.tif")):
        if p.stem.endswith("_mask"):
            continue
        m = _NAME.match(p.stem)
        if not m:
            continue
        tiles.append(Tile(p.stem, p, p.with_name(p.stem + "_mask.tif"),
                          int(m.group(1)) / 1e4, int(m.group(2)) / 1e4))
    return tiles


def clusters(tiles: Sequence[Tile], radius_deg: float = 0.0008) -> List[List[Tile]]:
    """Group tiles whose centres lie within ``radius_deg`` of each other (single link)."""
    groups: List[List[Tile]] = []
    for t in sorted(tiles, key=lambda t: (t.lat, t.lon)):
        hit = [g for g in groups
               if any(abs(t.lat - u.lat) <= radius_deg and abs(t.lon - u.lon) <= radius_deg
                      for u in g)]
        merged = [t]
        for g in hit:
            merged += g
            groups.remove(g)
        groups.append(merged)
    return groups


def split_train(tiles: Sequence[Tile], val_fraction: float, seed: int
                ) -> Tuple[List[Tile], List[Tile]]:
    """Split train tiles into ``(fit, val)`` by whole spatial clusters.

    Clusters are shuffled with ``seed`` and moved to ``val`` until it holds at least
    ``val_fraction`` of the tiles; the largest cluster always stays in ``fit``.
    """
    groups = sorted(clusters(tiles), key=lambda g: (-len(g), g[0].name))
    rest = groups[1:]
    random.Random(seed).shuffle(rest)
    val: List[Tile] = []
    for g in rest:
        if len(val) >= val_fraction * len(tiles):
            break
        val += g
    names = {t.name for t in val}
    fit = [t for t in tiles if t.name not in names]
    return sorted(fit, key=lambda t: t.name), sorted(val, key=lambda t: t.name)


def load_arrays(tiles: Sequence[Tile]) -> Dict[str, np.ndarray]:
    """Stack tiles: ``{"images": uint8 (N, 3, H, W), "masks": uint8 (N, H, W)}``."""
    imgs, masks = zip(*(t.read() for t in tiles))
    return {"images": np.stack(imgs), "masks": np.stack(masks)}
