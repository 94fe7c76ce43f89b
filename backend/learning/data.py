"""The real pv01 tiles (Jiang et al. 2021, doi:10.5281/zenodo.5171712, CC BY 4.0).

Tiles are 256 x 256 RGB uint8 GeoTIFFs at 0.1 m GSD with a ``*_mask.tif`` beside each
(uint8, 1 = photovoltaic panel), in ``<ORTHOLENS_DATA>/pv01/{train,heldout}``
(:func:`backend.config.pv01_dir`). The ``train`` split is further divided into
``fit`` and ``val`` by spatial cluster (:func:`split_train`) so that thresholds are
chosen on data the held-out split never touches.

A retrain uses two sets of a model's train split (named by its card's
``training.val_names``): the :class:`GuardSet`, the validation tiles on which a
candidate must not lose accuracy, and the :class:`ReplaySet`, the other (fit) tiles,
mixed into the fine-tuning batches so that the model does not forget them. The held-out
split is never part of either: it stays for measuring.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from backend.config import pv01_dir

_NAME = re.compile(r"PV01_(\d+)_(\d+)$")

log = logging.getLogger("ortholens.data")

T = TypeVar("T")


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


def single_link_groups(items: Sequence[T], near: Callable[[T, T], bool]) -> List[List[T]]:
    """Groups of ``items`` joined by chains of ``near`` pairs (single-link clustering).

    Items are taken in order; an item joins (and merges) every group holding an item
    near it. A group lists its newest item first, then the groups it merged, in their
    order; groups are listed in the order they were last formed.
    """
    groups: List[List[T]] = []
    for x in items:
        hit = [g for g in groups if any(near(x, y) for y in g)]
        merged = [x]
        for g in hit:
            merged += g
            groups.remove(g)
        groups.append(merged)
    return groups


def clusters(tiles: Sequence[Tile], radius_deg: float = 0.0008) -> List[List[Tile]]:
    """Group tiles whose centres lie within ``radius_deg`` of each other (single link)."""
    return single_link_groups(
        sorted(tiles, key=lambda t: (t.lat, t.lon)),
        lambda t, u: abs(t.lat - u.lat) <= radius_deg and abs(t.lon - u.lon) <= radius_deg)


def site_of(name: str, tiles: Sequence[Tile]) -> List[Tile]:
    """The site cluster (:func:`clusters`) of ``tiles`` that holds the tile ``name``,
    sorted by name.

    Raises:
        ValueError: no tile of ``tiles`` is called ``name``.
    """
    for g in clusters(tiles):
        if any(t.name == name for t in g):
            return sorted(g, key=lambda t: t.name)
    raise ValueError(f"no pv01 tile named {name!r} in the {len(tiles)} tiles given")


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


def cv_folds(tiles: Sequence[Tile], k: int = 3) -> List[Tuple[List[Tile], List[Tile]]]:
    """Leave-cluster-out cross-validation folds of the train split: ``[(fit, val)] * k``.

    Tiles are grouped into site clusters (:func:`clusters`). The largest cluster (in pv01
    the solar-roof site: 29 of 56 tiles, nearly all panel) stays in *fit* of every fold,
    since a model trained without it sees too few panels to measure anything; the other
    clusters are dealt to ``k`` folds, largest first, each to the fold with the fewest
    tiles so far (ties: the lower fold). Every other tile is *val* in exactly one fold and
    no site is ever split between fit and val.

    Raises:
        ValueError: fewer than ``k`` clusters besides the largest.
    """
    groups = sorted(clusters(tiles), key=lambda g: (-len(g), min(t.name for t in g)))
    rest = groups[1:]
    if len(rest) < k:
        raise ValueError(f"{len(rest)} site clusters besides the largest: too few for "
                         f"{k} folds")
    folds: List[List[Tile]] = [[] for _ in range(k)]
    for g in rest:
        min(folds, key=len).extend(g)
    out = []
    for val in folds:
        names = {t.name for t in val}
        out.append((sorted((t for t in tiles if t.name not in names), key=lambda t: t.name),
                    sorted(val, key=lambda t: t.name)))
    return out


#: The pv01 tiles' ground sampling distance, metres.
NATIVE_GSD_M = 0.1


def average_down(image: np.ndarray, mask: np.ndarray, gsd_m: float,
                 native_gsd_m: float = NATIVE_GSD_M) -> Tuple[np.ndarray, np.ndarray]:
    """A tile as an orthophoto of ``gsd_m`` shows it: each pixel of exactly ``gsd_m``
    the mean of the finer pixels under it (GDAL's warper with ``average`` resampling,
    the pixels of ``gdal_translate -tr G G -r average``), and the reference a panel
    where at least half of the finer pixels were.

    Args:
        image: uint8 (B, H, W) at ``native_gsd_m``.
        mask: uint8/bool (H, W), 1 = panel.
        gsd_m: the coarser GSD, metres (>= ``native_gsd_m``).

    Returns:
        ``(image uint8 (B, h, w), mask uint8 (h, w))`` with ``h = round(H *
        native_gsd_m / gsd_m)``; the grid starts at the tile's top-left corner.
    """
    from rasterio import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    if abs(gsd_m - native_gsd_m) < 1e-9:
        return image, (mask > 0).astype(np.uint8)
    b, hh, ww = image.shape
    h = max(1, int(round(hh * native_gsd_m / gsd_m)))
    w = max(1, int(round(ww * native_gsd_m / gsd_m)))
    src = Affine(native_gsd_m, 0.0, 0.0, 0.0, -native_gsd_m, 0.0)
    dst = Affine(gsd_m, 0.0, 0.0, 0.0, -gsd_m, 0.0)
    common = dict(src_transform=src, src_crs="EPSG:3857", dst_transform=dst,
                  dst_crs="EPSG:3857", resampling=Resampling.average)
    out = np.zeros((b, h, w), np.uint8)
    reproject(image, out, **common)
    share = np.zeros((h, w), np.float32)
    reproject((mask > 0).astype(np.float32), share, **common)
    return out, (share >= 0.5).astype(np.uint8)


def load_arrays(tiles: Sequence[Tile], gsd_m: Optional[float] = None
                ) -> Dict[str, np.ndarray]:
    """Stack tiles: ``{"images": uint8 (N, 3, H, W), "masks": uint8 (N, H, W)}``, at
    their own 0.1 m or, with ``gsd_m``, averaged down to it (:func:`average_down`)."""
    pairs = [t.read() for t in tiles]
    if gsd_m is not None:
        pairs = [average_down(im, m, gsd_m) for im, m in pairs]
    imgs, masks = zip(*pairs)
    return {"images": np.stack(imgs), "masks": np.stack(masks)}


def tile_sampling_weights(masks: np.ndarray) -> np.ndarray:
    """Probabilities of drawing each tile: ``sqrt(panel fraction) + 0.1``, normalised,
    so that tiles with a few panels are not drowned by a big solar roof and empty
    tiles still come up.

    Args:
        masks: uint8 (N, H, W), 1 = panel.

    Returns:
        float64 (N,) summing to 1.
    """
    frac = masks.reshape(len(masks), -1).mean(1)
    w = np.sqrt(frac) + 0.1
    return w / w.sum()


@dataclass
class GuardSet:
    """The forgetting guard of a retrain: a model's pv01 *validation* tiles (train-split
    tiles it was not fitted on, where its post-processing was chosen).

    Attributes:
        tiles: the tiles, sorted by name; empty when the card names none.
    """

    tiles: List[Tile]

    @classmethod
    def of(cls, val_names: Sequence[str], exclude_paths: Sequence[str] = (),
           root: Optional[Path] = None) -> "GuardSet":
        """The train-split tiles named in ``val_names`` (a card's
        ``training.val_names``), minus those whose image files are in ``exclude_paths``
        (the corrected rasters: a guard must not be trained on).

        Raises:
            FileNotFoundError: the pv01 data is missing.
        """
        names = set(val_names)
        ex = {os.path.realpath(p) for p in exclude_paths}
        return cls([t for t in list_tiles("train", root)
                    if t.name in names and os.path.realpath(t.image_path) not in ex])

    def __len__(self) -> int:
        return len(self.tiles)


@dataclass
class ReplaySet:
    """Tiles a model was fitted on, replayed while it is fine-tuned so that it does not
    forget them: the pv01 train split minus the guard's validation tiles.

    Attributes:
        arrays: ``{"images": uint8 (N, 3, H, W), "masks": uint8 (N, H, W)}``, or None
            when the data is missing.
        n: number of tiles (0 without data).
    """

    arrays: Optional[Dict[str, np.ndarray]]
    n: int

    @classmethod
    def without(cls, val_names: Sequence[str]) -> "ReplaySet":
        """The train split minus the tiles named in ``val_names``; the data is read
        once per distinct ``val_names`` (the last one is cached); empty, with a logged
        warning, when the pv01 data is missing."""
        key = tuple(sorted(val_names))
        if _REPLAY.get("key") != key:
            try:
                tiles = [t for t in list_tiles("train") if t.name not in key]
                _REPLAY["set"] = cls(load_arrays(tiles) if tiles else None, len(tiles))
            except (FileNotFoundError, OSError) as exc:
                log.warning("no replay data: %s", exc)
                _REPLAY["set"] = cls(None, 0)
            _REPLAY["key"] = key
        return _REPLAY["set"]


_REPLAY: Dict[str, object] = {}
