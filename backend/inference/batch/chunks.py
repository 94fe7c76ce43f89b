"""Chunked detection over a raster of any size: the chunk machinery of batch jobs.

A batch job covers the same model-GSD grid as an in-extent detection of the same extent
(``backend.inference.raster.plan_grid``), but never holds more than one *chunk* of it:

1. The grid is cut into square **chunks** (``chunk_px``, default 2048) in raster order.
   Chunk ``i`` owns the pixels of its *core*; it is processed on a **window** = core
   grown by a **halo** (default ``2 * overlap`` of the model card) on every side.
2. The window's probabilities are stitched from the **tiles of the whole grid's tiling**
   (``backend.inference.tiling.plan_tiling``, the exact offsets ``predict_grid`` uses on
   the whole grid) that intersect the window, added in the same order with the same
   ramp weights. Every window pixel thus gets bit-for-bit the probability the in-extent
   run computes. Tiles shared with the previous window come from a small LRU cache
   (``tile_cache_mb``).
3. Threshold, clean-up and labelling run on the window as in
   ``detect.detections_from_probs``. **Exactly-once rule**: an object (8-connected
   component of one class) is kept only by the chunk whose core holds its *first pixel
   in raster order* (its top row, leftmost pixel there). Cores partition the grid, so
   every object has exactly one owner. If a component the chunk owns touches an inner
   edge of the window (checked on the class map *before* clean-up, so a component whose
   visible part is too small to survive clean-up is not lost), it may continue outside:
   the chunk is then redone with the halo doubled (up to ``max_halo_px``, cached tiles
   make this cheap), so an object smaller than the halo is always seen whole and
   cleaned exactly as in the whole grid. Polygons are traced in the whole grid's pixel
   coordinates (``postprocess.polygonize(pixel_offset=...)``), so they are identical to
   those of one in-extent run (same WKT, score, area), not just close.

Writing the results (``backend.inference.batch.gpkg``) and the bookkeeping that makes a
killed job resume exactly once (``backend.daemon.batch_runner``) live elsewhere;
:func:`local_results` and ``backend.inference.batch.distributed.ray_results`` are the
two executors that turn pending chunk indices into :class:`ChunkResult` objects.

Memory is bounded by the configuration, not by the extent: one window of
``(channels + 1) * (chunk_px + 2 * halo)^2`` float32, the tile cache, GDAL's block cache
(``gdal_cache_mb``), the model. Chunk positions and tile offsets are computed, not
listed; what grows with the extent is a few bytes of bookkeeping per chunk. Tiles with
no valid pixel (nodata, gaps of a sparse VRT mosaic) are read but not run through the
model.

Limits of exactness (documented, not silent): objects larger than ``max_halo_px`` are
cut at the window edge (a warning says how many); hole filling of ``clean_masks`` can
merge an island into the object around it, so an island that is itself kept (at least
``min_area``) inside a fillable hole (below ``max_hole``) could be reported by its own
chunk as well: impossible when ``max_hole`` is below the ring of pixels around the
smallest kept object (true for the shipped cards: 50 px holes, 200 px objects); with
several classes, a hole's pixels of another class are given to the enclosing object,
which a chunk sees whole only when it is inside the window.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import time
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from scipy import ndimage

from backend.inference.detect import (
    BatchBackoff,
    Options,
    features,
    input_errors,
    min_sizes_px,
    model_errors,
    split_probs,
)
from backend.inference.engines import Engine, get_engine
from backend.inference.postprocess import class_map, clean_masks, filter_objects, polygonize
from backend.inference.raster import Grid, WindowReader, open_source, plan_grid, read_ahead
from backend.inference.tiling import batches, plan_tiling, ramp
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from protocol.errors import JobCancelled
from protocol.params import BatchParams

log = logging.getLogger("ortholens.batch")

DEFAULT_CHUNK_PX = 2048
MIN_CHUNK_PX = 32
DEFAULT_MAX_HALO_PX = 4096
DEFAULT_TILE_CACHE_MB = 256
DEFAULT_GDAL_CACHE_MB = 64
#: A batch grid may be far larger than an in-extent one; this only guards absurd sizes.
MAX_BATCH_GRID_PIXELS = 10 ** 13

_EIGHT = np.ones((3, 3), bool)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class BatchConfig:
    """Memory and chunking knobs of a batch job (request fields override them).

    Attributes:
        chunk_px: chunk side, pixels at the model GSD (``ORTHOLENS_CHUNK_PX``).
        halo_px: halo around a chunk; None: twice the card's tile overlap.
        max_halo_px: the halo is doubled up to this for objects larger than it.
        tile_cache_mb: most MB of the LRU cache of tile probabilities
            (``ORTHOLENS_TILE_CACHE_MB``); the cache never holds more than the tiles of
            two windows (what consecutive chunks share), so small chunks use less.
        gdal_cache_mb: GDAL block cache while the job reads (``ORTHOLENS_GDAL_CACHE_MB``).
    """

    chunk_px: int = DEFAULT_CHUNK_PX
    halo_px: Optional[int] = None
    max_halo_px: int = DEFAULT_MAX_HALO_PX
    tile_cache_mb: int = DEFAULT_TILE_CACHE_MB
    gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB

    @classmethod
    def resolve(cls, params: BatchParams) -> "BatchConfig":
        """The environment's settings, then the job's ``chunk_px`` / ``halo_px`` where
        given; ``chunk_px`` is at least :data:`MIN_CHUNK_PX`."""
        c = cls(chunk_px=_env_int("ORTHOLENS_CHUNK_PX", DEFAULT_CHUNK_PX),
                tile_cache_mb=_env_int("ORTHOLENS_TILE_CACHE_MB", DEFAULT_TILE_CACHE_MB),
                gdal_cache_mb=_env_int("ORTHOLENS_GDAL_CACHE_MB", DEFAULT_GDAL_CACHE_MB))
        if params.chunk_px is not None:
            c.chunk_px = int(params.chunk_px)
        if params.halo_px is not None:
            c.halo_px = int(params.halo_px)
        c.chunk_px = max(MIN_CHUNK_PX, c.chunk_px)
        return c


# ----------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Box:
    """A pixel rectangle ``[r0, r1) x [c0, c1)`` of the grid."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def height(self) -> int:
        """Rows, pixels."""
        return self.r1 - self.r0

    @property
    def width(self) -> int:
        """Columns, pixels."""
        return self.c1 - self.c0

    def grow(self, halo: int, height: int, width: int) -> "Box":
        """The box grown by ``halo`` pixels on every side, clipped to an ``height`` x
        ``width`` grid."""
        return Box(max(0, self.r0 - halo), max(0, self.c0 - halo),
                   min(height, self.r1 + halo), min(width, self.c1 + halo))


@dataclass(frozen=True)
class ChunkGrid:
    """Chunks of ``chunk_px`` over an ``height`` x ``width`` grid, in raster order."""

    height: int
    width: int
    chunk_px: int

    @property
    def rows(self) -> int:
        """Chunk rows."""
        return -(-self.height // self.chunk_px)

    @property
    def cols(self) -> int:
        """Chunk columns."""
        return -(-self.width // self.chunk_px)

    def __len__(self) -> int:
        return self.rows * self.cols

    def core(self, idx: int) -> Box:
        """The pixels chunk ``idx`` owns (raster order). Raises IndexError."""
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        i, j = divmod(idx, self.cols)
        s = self.chunk_px
        return Box(i * s, j * s, min(self.height, (i + 1) * s), min(self.width, (j + 1) * s))


@dataclass
class Tiling:
    """The tiling ``detect.predict_grid`` uses over a whole grid, queried by window.

    Attributes:
        height, width: the whole grid, pixels.
        tile, overlap: tile side and overlap, pixels (``tiling.plan_tiling``).
        rows, cols: tile start offsets along each axis; shifted_rows/cols the second,
            half-tile shifted tiling when the card asks for it (else empty).
    """

    height: int
    width: int
    tile: int
    overlap: int
    rows: np.ndarray
    cols: np.ndarray
    shifted_rows: np.ndarray
    shifted_cols: np.ndarray

    @classmethod
    def for_grid(cls, height: int, width: int, card: ModelCard,
                 tile_size: Optional[int] = None, overlap: Optional[int] = None) -> "Tiling":
        """The tiling of an ``height`` x ``width`` grid (``card``, ``tile_size`` and
        ``overlap`` as for ``backend.inference.tiling.plan_tiling``)."""
        plan = plan_tiling(card, height, width, tile_size, overlap)
        empty: Tuple[List[int], List[int]] = ([], [])
        plain, shifted = (plan.axes(height, width) + [empty])[:2]
        rows, cols, srows, scols = (np.asarray(a, np.int64) for a in plain + shifted)
        return cls(height, width, plan.tile, plan.overlap, rows, cols, srows, scols)

    @property
    def n_tiles(self) -> int:
        """Tiles of the whole grid, both tilings."""
        return len(self.rows) * len(self.cols) + len(self.shifted_rows) * len(self.shifted_cols)

    def intersecting(self, box: Box) -> List[Tuple[int, int]]:
        """Tiles meeting ``box``, in the whole-grid order (row-major, then shifted)."""
        out: List[Tuple[int, int]] = []
        for rs, cs in ((self.rows, self.cols), (self.shifted_rows, self.shifted_cols)):
            rr = rs[(rs < box.r1) & (rs + self.tile > box.r0)]
            cc = cs[(cs < box.c1) & (cs + self.tile > box.c0)]
            out.extend((int(r), int(c)) for r in rr for c in cc)
        return out


class TileCache:
    """LRU cache of tile results ``(probs, valid)`` keyed by tile offset, bounded in bytes."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max(0.0, float(max_mb)) * (1 << 20))
        self._items: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key):
        """The cached ``(probs, valid)`` of tile ``key``, or None."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key, item) -> None:
        """Cache ``item``, evicting the least recently used tiles over the budget (an
        item larger than the whole budget is not cached)."""
        size = item[0].nbytes + item[1].nbytes
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[0].nbytes + old[1].nbytes
        self._items[key] = item
        self.nbytes += size
        while self.nbytes > self.max_bytes and self._items:
            _, (p, m) = self._items.popitem(last=False)
            self.nbytes -= p.nbytes + m.nbytes

    def clear(self) -> None:
        """Drop every cached tile."""
        self._items.clear()
        self.nbytes = 0


class WindowStitcher:
    """``tiling.Stitcher`` restricted to a window of the grid: same weights (grid-border
    flags of the *whole* grid), same per-pixel operations, so the result on the window
    equals the whole-grid stitch bit for bit when the same tiles are added in the same
    order."""

    def __init__(self, channels: int, win: Box, height: int, width: int, tile: int,
                 overlap: int):
        self.win, self.height, self.width = win, height, width
        self.tile, self.overlap = tile, overlap
        self.acc = np.zeros((channels, win.height, win.width), np.float32)
        self.wsum = np.zeros((win.height, win.width), np.float32)
        self.valid = np.zeros((win.height, win.width), bool)

    def add(self, row: int, col: int, probs: np.ndarray, valid: np.ndarray) -> None:
        """Blend tile ``(row, col)`` (whole-grid offsets): probs float32 (C, tile,
        tile), valid bool (tile, tile); the part outside the window is ignored."""
        w, t = self.win, self.tile
        r0, c0 = max(row, 0, w.r0), max(col, 0, w.c0)
        r1, c1 = min(row + t, self.height, w.r1), min(col + t, self.width, w.c1)
        if r1 <= r0 or c1 <= c0:
            return
        wy = ramp(t, self.overlap, row <= 0, row + t >= self.height)
        wx = ramp(t, self.overlap, col <= 0, col + t >= self.width)
        weight = wy[r0 - row:r1 - row, None] * wx[None, c0 - col:c1 - col]
        dst = (slice(r0 - w.r0, r1 - w.r0), slice(c0 - w.c0, c1 - w.c0))
        src = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        self.acc[(slice(None),) + dst] += probs[(slice(None),) + src] * weight
        self.wsum[dst] += weight
        self.valid[dst] |= valid[src]

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(probs, valid)`` over the window, as ``predict_grid`` returns them."""
        probs = self.acc / np.maximum(self.wsum, 1e-12)
        probs[:, ~self.valid] = 0.0
        probs[0, ~self.valid] = 1.0
        return probs, self.valid


# ----------------------------------------------------------------------------- plan

def grid_to_plan(grid: Grid) -> Dict[str, Any]:
    """The JSON-safe description of a grid stored with a job."""
    t = grid.transform
    return {"width": grid.width, "height": grid.height,
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f], "crs_wkt": grid.crs_wkt,
            "bands": list(grid.bands), "src_gsd": grid.src_gsd,
            "warnings": list(grid.warnings),
            "stretch": [list(r) for r in grid.stretch] if grid.stretch else None,
            "stretch_info": grid.stretch_info}


def grid_from_plan(plan: Dict[str, Any]) -> Grid:
    """The grid a plan describes (inverse of :func:`grid_to_plan`)."""
    return Grid(Affine(*plan["transform"]), int(plan["width"]), int(plan["height"]),
                plan["crs_wkt"], list(plan["bands"]), float(plan["src_gsd"]),
                list(plan.get("warnings", [])),
                stretch=[tuple(r) for r in plan["stretch"]] if plan.get("stretch") else None,
                stretch_info=plan.get("stretch_info"))


def make_plan(params: BatchParams, card: ModelCard,
              config: Optional[BatchConfig] = None) -> Dict[str, Any]:
    """Plan a batch job: the grid (as ``plan_grid`` for the same extent), chunks, halo.

    Returns:
        The JSON-safe plan stored with the job: :func:`grid_to_plan`'s keys plus
        ``chunk_px``, ``halo_px``, ``max_halo_px``, ``tile_cache_mb``,
        ``gdal_cache_mb``, ``n_chunks`` and ``detected_at`` (UTC, ISO 8601).

    Raises:
        JobError: unusable raster or extent.
    """
    config = config or BatchConfig.resolve(params)
    d = params.detect
    with input_errors(), open_source(d.source) as ds:
        grid = plan_grid(ds, d.extent, d.extent_crs, card.gsd_m, card.bands, d.bands,
                         stretch=d.stretch,
                         max_pixels=MAX_BATCH_GRID_PIXELS)
    plan = grid_to_plan(grid)
    halo = config.halo_px if config.halo_px is not None else max(64, 2 * card.overlap)
    chunks = ChunkGrid(grid.height, grid.width, config.chunk_px)
    plan.update({"chunk_px": config.chunk_px, "halo_px": int(halo),
                 "max_halo_px": max(int(halo), config.max_halo_px),
                 "tile_cache_mb": config.tile_cache_mb, "gdal_cache_mb": config.gdal_cache_mb,
                 "n_chunks": len(chunks),
                 "detected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return plan


# ----------------------------------------------------------------------------- chunks

@dataclass
class ChunkResult:
    """What one chunk produced: protocol ``result`` features (plus ``chunk``).

    ``unreadable`` names the damaged file(s) when GDAL could not read some pixels of
    the chunk's tiles (a truncated tile of a mosaic): those pixels are no-data, the
    chunk's other objects are kept, and the job goes on.
    """

    index: int
    features: List[Dict[str, Any]]
    tiles_run: int = 0
    tiles_cached: int = 0
    halo_px: int = 0
    truncated: int = 0
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)
    unreadable: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """Plain data, to travel between processes."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ChunkResult":
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


class ChunkWorker:
    """Processes chunks of one batch job: holds the engine, an open reader over the
    whole grid and the tile cache. One per thread / Ray actor.

    Args:
        params: the job's parameters.
        plan: from :func:`make_plan`.
        engine: an engine (default: ``get_engine`` for the job's model).

    Raises:
        JobError: unknown or corrupt model, unreadable raster.
    """

    def __init__(self, params: BatchParams, plan: Dict[str, Any],
                 engine: Optional[Engine] = None):
        self.params, self.plan = params, plan
        with model_errors():
            self.card = load_card(params.detect.model)
            self.engine = engine or get_engine(self.card)
        self.opts = Options.resolve(self.card, params.detect)
        self.grid = grid_from_plan(plan)
        self.chunks = ChunkGrid(self.grid.height, self.grid.width, int(plan["chunk_px"]))
        self.tiling = Tiling.for_grid(self.grid.height, self.grid.width, self.card,
                                      self.opts.tile_size, self.opts.overlap)
        t = self.tiling
        win = int(plan["chunk_px"]) + 2 * int(plan["halo_px"]) + t.tile
        per_axis = min(max(len(t.rows), len(t.cols)), win // max(1, t.tile - t.overlap) + 2)
        tile_mb = (self.engine.channels * 4 + 1) * t.tile * t.tile / float(1 << 20)
        two_windows_mb = 2 * per_axis * per_axis * tile_mb * (2 if self.card.shifts else 1)
        self.cache = TileCache(min(float(plan.get("tile_cache_mb", DEFAULT_TILE_CACHE_MB)),
                                   two_windows_mb))
        self.warnings: List[str] = []
        self._stack = contextlib.ExitStack()
        try:
            import rasterio
            self._stack.enter_context(rasterio.Env(
                GDAL_CACHEMAX=int(plan.get("gdal_cache_mb", DEFAULT_GDAL_CACHE_MB))))
            with input_errors():
                ds = self._stack.enter_context(open_source(params.detect.source))
            self.reader = WindowReader(ds, self.grid, damaged="mask")
            self._stack.callback(self.reader.close)
        except BaseException:
            self._stack.close()
            raise
        self.backoff = BatchBackoff(self.opts.batch_size, self.warnings)

    def close(self) -> None:
        """Close the reader and drop the cached tiles."""
        self._stack.close()
        self.cache.clear()

    def __enter__(self) -> "ChunkWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- probabilities

    def predict_window(self, win: Box, cancelled: Optional[Callable[[], bool]] = None
                       ) -> Tuple[np.ndarray, np.ndarray, int, int]:
        """Stitched probabilities and valid mask over ``win``, identical to the whole
        grid's; returns ``(probs, valid, tiles run, tiles from the cache)``."""
        t = self.tiling
        needed = t.intersecting(win)
        have: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for key in needed:
            item = self.cache.get(key)
            if item is None:
                missing.append(key)
            else:
                have[key] = item
        stitch = WindowStitcher(self.engine.channels, win, t.height, t.width, t.tile,
                                t.overlap)
        pos = 0
        n_skipped = 0

        def drain() -> None:
            nonlocal pos
            while pos < len(needed) and needed[pos] in have:
                key = needed[pos]
                p, m = have.pop(key)
                stitch.add(key[0], key[1], p, m)
                pos += 1

        drain()
        groups = list(batches(missing, self.backoff.size))
        with closing(read_ahead(self.reader, groups, t.tile)) as tiles:
            for group, imgs, masks in tiles:
                if cancelled and cancelled():
                    raise JobCancelled()
                # A tile without one valid pixel only covers pixels that end up as
                # background anyway (validity is a property of the pixel, the same in every
                # tile): skip the model there (sparse mosaics, nodata margins).
                live = [i for i, m in enumerate(masks) if m.any()]
                out = self.backoff.predict(self.engine, imgs[live]) if live else None
                probs = [None] * len(group)
                for j, i in enumerate(live):
                    probs[i] = out[j]
                for i, p in enumerate(probs):
                    if p is None:
                        probs[i] = np.zeros((self.engine.channels, t.tile, t.tile), np.float32)
                n_skipped += len(group) - len(live)
                for key, p, m in zip(group, probs, masks):
                    item = (np.ascontiguousarray(p), m)
                    have[key] = item
                    self.cache.put(key, item)
                drain()
        if pos != len(needed):  # pragma: no cover - a bug, never silent
            raise RuntimeError(f"stitched {pos} of {len(needed)} tiles")
        probs, valid = stitch.result()
        return probs, valid, len(missing) - n_skipped, len(needed) - len(missing)

    # -------------------------------------------------------------- objects

    def _first_pixels(self, mask: np.ndarray, win: Box, core: Box):
        """Labels of ``mask``'s 8-connected components and, for each, whether the
        chunk owns it (first pixel in raster order inside ``core``) and whether it
        touches an inner edge of the window (may continue outside it)."""
        g = self.grid
        lab, n = ndimage.label(mask, structure=_EIGHT)
        owned = np.zeros(n + 1, bool)
        touches = np.zeros(n + 1, bool)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            rs, cs = sl
            row = rs.start
            col = cs.start + int(np.argmax(lab[row, cs] == i))
            gr, gc = win.r0 + row, win.c0 + col
            owned[i] = core.r0 <= gr < core.r1 and core.c0 <= gc < core.c1
            touches[i] = ((rs.start == 0 and win.r0 > 0) or (cs.start == 0 and win.c0 > 0)
                          or (rs.stop == win.height and win.r1 < g.height)
                          or (cs.stop == win.width and win.c1 < g.width))
        return lab, owned, touches

    def _owned(self, raw: np.ndarray, cmap: np.ndarray, win: Box, core: Box
               ) -> Tuple[np.ndarray, int]:
        """``cmap`` (cleaned class map) with only the objects this chunk owns, and the
        number of owned components of ``raw`` (the class map before clean-up) that touch
        an inner edge of the window.

        The check runs on ``raw`` because clean-up decides on whole components: a
        component cut by the window could lose its small visible part (minimum area)
        and vanish from ``cmap`` although the chunk owns it. A cleaned object has the
        first pixel (and bounding box) of its raw component, as filled holes are
        enclosed by it.
        """
        out = np.zeros_like(cmap)
        touching = 0
        for k in np.unique(raw):
            if k == 0:
                continue
            _, owned, touches = self._first_pixels(raw == k, win, core)
            touching += int((owned & touches).sum())
        for k in np.unique(cmap):
            if k == 0:
                continue
            lab, owned, _ = self._first_pixels(cmap == k, win, core)
            out[owned[lab]] = k
        return out, touching

    def process(self, idx: int, cancelled: Optional[Callable[[], bool]] = None
                ) -> ChunkResult:
        """Detect the objects chunk ``idx`` owns.

        Pixels GDAL cannot read (a damaged tile of a mosaic) are no-data (the reader
        salvages the rest, ``WindowReader(damaged="mask")``); the result then names
        the damaged file in ``unreadable`` and a warning.

        Raises:
            JobCancelled: ``cancelled()`` turned true.
        """
        t0 = time.perf_counter()
        lost_before = dict(self.reader.unreadable)
        res = self._process(idx, t0, cancelled)
        lost = {k: v - lost_before.get(k, 0) for k, v in self.reader.unreadable.items()
                if v > lost_before.get(k, 0)}
        if lost:
            res.unreadable = ", ".join(sorted(lost))
            res.warnings.append(
                f"chunk {idx}: {sum(lost.values())} pixel(s) of its tiles could not be read "
                f"from {res.unreadable} (damaged or truncated) and count as no-data")
        return res

    def _process(self, idx: int, t0: float, cancelled: Optional[Callable[[], bool]]
                 ) -> ChunkResult:
        first_note = len(self.warnings)
        core = self.chunks.core(idx)
        card, opts, g = self.card, self.opts, self.grid
        halo = int(self.plan["halo_px"])
        max_halo = int(self.plan.get("max_halo_px", halo))
        min_area_px, max_hole_px = min_sizes_px(opts, g.transform)
        run = cached = 0
        while True:
            win = core.grow(halo, g.height, g.width)
            probs, valid, n_run, n_cached = self.predict_window(win, cancelled)
            run, cached = run + n_run, cached + n_cached
            class_probs, members = split_probs(probs, card)
            raw = class_map(class_probs, opts.threshold)
            raw[~valid] = 0
            cmap = clean_masks(raw, len(card.classes), min_area_px, max_hole_px)
            owned, touching = self._owned(raw, cmap, win, core)
            if not touching or halo >= max_halo:
                break
            halo = min(max_halo, max(1, halo) * 2)
            log.debug("chunk %d: %d object(s) reach the halo; retrying with %d px",
                      idx, touching, halo)
        if touching:
            self.warnings.append(f"chunk {idx}: {touching} object(s) larger than the "
                                 f"largest halo ({max_halo} px) were cut at its edge")
        owned = filter_objects(owned, class_probs, len(card.classes), opts.min_solidity,
                               opts.min_score)
        dets = polygonize(owned, class_probs, g.transform, opts.simplify_m, opts.min_area_m2,
                          member_probs=members, threshold=opts.threshold,
                          ortho=opts.orthogonalize, pixel_offset=(win.r0, win.c0))
        feats = features(dets, card)
        return ChunkResult(idx, feats, run, cached, halo, touching,
                           round(time.perf_counter() - t0, 3), self.warnings[first_note:])


def local_results(params: BatchParams, plan: Dict[str, Any], pending: Sequence[int],
                  cancelled: Optional[Callable[[], bool]] = None,
                  engine: Optional[Engine] = None) -> Iterator[ChunkResult]:
    """The ``local`` executor: chunk results computed in this process, in chunk order.

    Raises:
        JobError: as :class:`ChunkWorker`.
        JobCancelled: ``cancelled()`` turned true (checked between chunks and batches).
    """
    with ChunkWorker(params, plan, engine) as worker:
        for idx in pending:
            if cancelled and cancelled():
                raise JobCancelled()
            yield worker.process(idx, cancelled)
