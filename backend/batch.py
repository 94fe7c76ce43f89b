"""Streaming batch detection over a raster of any size, written incrementally to a
GeoPackage, resumable after a crash.

A batch job covers the same model-GSD grid as an in-extent detection of the same extent
(``backend.raster.plan_grid``), but never holds more than one *chunk* of it:

1. The grid is cut into square **chunks** (``chunk_px``, default 2048) in raster order.
   Chunk ``i`` owns the pixels of its *core*; it is processed on a **window** = core
   grown by a **halo** (default ``2 * overlap`` of the model card) on every side.
2. The window's probabilities are stitched from the **tiles of the whole grid's tiling**
   (the exact offsets ``predict_grid`` would use on the whole grid) that intersect the
   window, added in the same order with the same ramp weights. Every window pixel thus
   gets bit-for-bit the probability the in-extent run computes. Tiles shared with the
   previous window come from a small LRU cache (``tile_cache_mb``).
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
4. Each chunk's polygons are appended to the output GeoPackage (pyogrio, one
   transaction; every row carries its ``chunk``), then the chunk is recorded as done in
   the :class:`~backend.jobstore.JobStore`. On (re)start, rows of chunks the store does
   not list as done are deleted (:func:`reconcile_output`) and those chunks run again:
   no polygon is lost or written twice, whenever the daemon was killed.

Memory is bounded by the configuration, not by the extent: one window of
``(channels + 1) * (chunk_px + 2 * halo)^2`` float32, the tile cache, GDAL's block cache
(``gdal_cache_mb``), the model. Chunk positions and tile offsets are computed, not
listed; what grows with the extent is a few bytes of bookkeeping per chunk. Tiles with
no valid pixel (nodata, gaps of a sparse VRT mosaic) are read but not run through the
model.

Chunks are independent, so they can also run elsewhere: ``backend.distributed`` runs
:class:`ChunkWorker` in Ray actors and feeds the results to the same writer.

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
import math
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from scipy import ndimage

from plugin import protocol as P

from .detect import DetectError, JobCancelled, Options, features, model_errors
from .engines import Engine, get_engine
from .jobstore import CANCELLED, DONE, ERROR, RUNNING, JobStore
from .postprocess import class_map, clean_masks, polygonize
from .raster import Grid, InputError, WindowReader, open_source, plan_grid
from .registry import ModelCard, load_card
from .tiling import batches, positions, ramp

log = logging.getLogger("ortholens.batch")
logging.getLogger("pyogrio._io").setLevel(logging.WARNING)  # "Created N records" per chunk

Progress = Callable[[float, str], None]

DEFAULT_CHUNK_PX = 2048
MIN_CHUNK_PX = 32
DEFAULT_MAX_HALO_PX = 4096
DEFAULT_TILE_CACHE_MB = 256
DEFAULT_GDAL_CACHE_MB = 64
#: A batch grid may be far larger than an in-extent one; this only guards absurd sizes.
MAX_BATCH_GRID_PIXELS = 10 ** 13
DEFAULT_LAYER = "detections"

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
    def from_request(cls, req: Dict[str, Any]) -> "BatchConfig":
        c = cls(chunk_px=_env_int("ORTHOLENS_CHUNK_PX", DEFAULT_CHUNK_PX),
                tile_cache_mb=_env_int("ORTHOLENS_TILE_CACHE_MB", DEFAULT_TILE_CACHE_MB),
                gdal_cache_mb=_env_int("ORTHOLENS_GDAL_CACHE_MB", DEFAULT_GDAL_CACHE_MB))
        if req.get("chunk_px") is not None:
            c.chunk_px = int(req["chunk_px"])
        if req.get("halo_px") is not None:
            c.halo_px = int(req["halo_px"])
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
        return self.r1 - self.r0

    @property
    def width(self) -> int:
        return self.c1 - self.c0

    def grow(self, halo: int, height: int, width: int) -> "Box":
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
        return -(-self.height // self.chunk_px)

    @property
    def cols(self) -> int:
        return -(-self.width // self.chunk_px)

    def __len__(self) -> int:
        return self.rows * self.cols

    def core(self, idx: int) -> Box:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        i, j = divmod(idx, self.cols)
        s = self.chunk_px
        return Box(i * s, j * s, min(self.height, (i + 1) * s), min(self.width, (j + 1) * s))


def _round32(n: int) -> int:
    return max(32, int(math.ceil(n / 32.0)) * 32)


@dataclass
class Tiling:
    """The tiling ``detect.predict_grid`` uses over a whole grid, queried by window.

    Attributes:
        tile, overlap: tile side and overlap, pixels (as predict_grid derives them).
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
        tile_size = tile_size or card.tile_size
        overlap = card.overlap if overlap is None else overlap
        tile = min(tile_size, _round32(max(height, width)))
        if max(height, width) <= tile:
            overlap = 0
        rows = np.asarray(positions(height, tile, overlap), np.int64)
        cols = np.asarray(positions(width, tile, overlap), np.int64)
        srows = scols = np.zeros(0, np.int64)
        if card.shifts and max(height, width) > tile:  # as predict_grid: no borders to hide
            shift = tile // 2
            srows = np.asarray(positions(height + shift, tile, overlap), np.int64) - shift
            scols = np.asarray(positions(width + shift, tile, overlap), np.int64) - shift
        return cls(height, width, tile, overlap, rows, cols, srows, scols)

    @property
    def n_tiles(self) -> int:
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
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key, item) -> None:
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
            "warnings": list(grid.warnings)}


def grid_from_plan(plan: Dict[str, Any]) -> Grid:
    return Grid(Affine(*plan["transform"]), int(plan["width"]), int(plan["height"]),
                plan["crs_wkt"], list(plan["bands"]), float(plan["src_gsd"]),
                list(plan.get("warnings", [])))


def make_plan(request: Dict[str, Any], card: ModelCard,
              config: Optional[BatchConfig] = None) -> Dict[str, Any]:
    """Plan a batch job: the grid (as ``plan_grid`` for the same extent), chunks, halo.

    Raises:
        DetectError: unusable raster or extent.
    """
    config = config or BatchConfig.from_request(request)
    try:
        with open_source(request["source"]) as ds:
            grid = plan_grid(ds, request.get("extent"), request.get("extent_crs"),
                             card.gsd_m, card.bands, request.get("bands"),
                             max_pixels=MAX_BATCH_GRID_PIXELS)
    except InputError as exc:
        raise DetectError(exc.code, exc.message) from None
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
    """What one chunk produced: protocol ``result`` features (plus ``chunk``)."""

    index: int
    features: List[Dict[str, Any]]
    tiles_run: int = 0
    tiles_cached: int = 0
    halo_px: int = 0
    truncated: int = 0
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ChunkResult":
        return cls(**d)


def _load(request: Dict[str, Any]) -> Tuple[ModelCard, Options]:
    with model_errors():
        card = load_card(request["model"])
    return card, Options.from_request(card, request)


class ChunkWorker:
    """Processes chunks of one batch job: holds the engine, an open reader over the
    whole grid and the tile cache. One per thread / Ray actor.

    Args:
        request: the job's validated ``batch`` request.
        plan: from :func:`make_plan`.
        engine: an engine (default: ``get_engine`` for the request's model).
    """

    def __init__(self, request: Dict[str, Any], plan: Dict[str, Any],
                 engine: Optional[Engine] = None):
        self.request, self.plan = request, plan
        self.card, self.opts = _load(request)
        with model_errors():
            self.engine = engine or get_engine(self.card)
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
            ds = self._stack.enter_context(open_source(request["source"]))
            self.reader = WindowReader(ds, self.grid)
            self._stack.callback(self.reader.close)
        except InputError as exc:
            self._stack.close()
            raise DetectError(exc.code, exc.message) from None
        except BaseException:
            self._stack.close()
            raise
        from .detect import BatchBackoff
        self.backoff = BatchBackoff(self.opts.batch_size, self.warnings)

    def close(self) -> None:
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
        for group, imgs, masks in self._read_batches(missing):
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

    def _read_batches(self, keys: List[Tuple[int, int]]) -> Iterator[tuple]:
        """``(group, images, masks)`` per model batch; a thread reads ahead."""
        if not keys:
            return
        groups = list(batches(keys, self.backoff.size))
        q: "queue.Queue" = queue.Queue(maxsize=2)
        stop = threading.Event()
        tile = self.tiling.tile

        def produce():
            try:
                for group in groups:
                    if stop.is_set():
                        return
                    tiles = [self.reader.read(r, c, tile) for r, c in group]
                    q.put((group, np.stack([x[0] for x in tiles]), [x[1] for x in tiles]))
                q.put(None)
            except BaseException as exc:  # surface read errors in the consumer
                q.put(exc)

        th = threading.Thread(target=produce, name="ortholens-batch-reader", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while th.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                th.join(timeout=0.05)

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

        Raises:
            JobCancelled: ``cancelled()`` turned true.
        """
        t0 = time.perf_counter()
        first_note = len(self.warnings)
        core = self.chunks.core(idx)
        card, opts, g = self.card, self.opts, self.grid
        halo = int(self.plan["halo_px"])
        max_halo = int(self.plan.get("max_halo_px", halo))
        px_area = g.transform.a * -g.transform.e
        c, k = card.num_outputs, len(card.classes)
        run = cached = 0
        while True:
            win = core.grow(halo, g.height, g.width)
            probs, valid, n_run, n_cached = self.predict_window(win, cancelled)
            run, cached = run + n_run, cached + n_cached
            class_probs = probs[:c]
            members = (probs[c:].reshape(-1, k, *probs.shape[1:])
                       if probs.shape[0] > c else None)
            raw = class_map(class_probs, opts.threshold)
            raw[~valid] = 0
            cmap = clean_masks(raw, k, int(round(opts.min_area_m2 / px_area)),
                               int(round(opts.max_hole_m2 / px_area)))
            owned, touching = self._owned(raw, cmap, win, core)
            if not touching or halo >= max_halo:
                break
            halo = min(max_halo, max(1, halo) * 2)
            log.debug("chunk %d: %d object(s) reach the halo; retrying with %d px",
                      idx, touching, halo)
        if touching:
            self.warnings.append(f"chunk {idx}: {touching} object(s) larger than the "
                                 f"largest halo ({max_halo} px) were cut at its edge")
        dets = polygonize(owned, class_probs, g.transform, opts.simplify_m, opts.min_area_m2,
                          member_probs=members, threshold=opts.threshold,
                          ortho=opts.orthogonalize, pixel_offset=(win.r0, win.c0))
        feats = features(dets, card)
        return ChunkResult(idx, feats, run, cached, halo, touching,
                           round(time.perf_counter() - t0, 3), self.warnings[first_note:])


# ----------------------------------------------------------------------------- output

#: (name, numpy dtype) of the output table's attributes, after the geometry. The first
#: eight follow ``plugin/layers.py``'s result layer (plus ``agreement``); ``chunk`` is
#: the batch chunk that wrote the row (used to resume exactly once).
FIELDS = (("class", object), ("class_id", np.int32), ("score", np.float64),
          ("agreement", np.float64), ("area_m2", np.float64), ("model", object),
          ("model_version", object), ("detected_at", object), ("chunk", np.int32))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class GpkgWriter:
    """Appends chunk results to one GeoPackage layer (MultiPolygon, pyogrio)."""

    def __init__(self, path: str, layer: str, crs_wkt: str, detected_at: str = ""):
        self.path, self.layer, self.crs_wkt = str(path), layer, crs_wkt
        self.detected_at = detected_at

    def exists(self) -> bool:
        if not os.path.isfile(self.path):
            return False
        import pyogrio
        try:
            return self.layer in [row[0] for row in pyogrio.list_layers(self.path)]
        except Exception:
            return False

    def create(self) -> None:
        """(Re)create the file with an empty layer."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)
        self._write([], append=False)

    def append(self, result: ChunkResult) -> int:
        if result.features:
            self._write(result.features, append=True, chunk=result.index)
        return len(result.features)

    def _write(self, feats: Sequence[Dict[str, Any]], append: bool, chunk: int = -1) -> None:
        import shapely
        from pyogrio.raw import write

        geoms = []
        for f in feats:
            g = shapely.from_wkt(f["wkt"])
            if g.geom_type == "Polygon":
                g = shapely.MultiPolygon([g])
            geoms.append(shapely.to_wkb(g))
        cols = {"class": [f["class"] for f in feats],
                "class_id": [f["class_id"] for f in feats],
                "score": [f["score"] for f in feats],
                "agreement": [f.get("agreement", 1.0) for f in feats],
                "area_m2": [f["area_m2"] for f in feats],
                "model": [f["model"] for f in feats],
                "model_version": [f["model_version"] for f in feats],
                "detected_at": [self.detected_at] * len(feats),
                "chunk": [chunk] * len(feats)}
        data = [np.array(cols[name], dtype=dt) for name, dt in FIELDS]
        # GeoPackage 1.2: read without warnings by older GDALs (QGIS 3.22 has GDAL 3.6)
        write(self.path, np.array(geoms, dtype=object), data, [n for n, _ in FIELDS],
              layer=self.layer, driver="GPKG", geometry_type="MultiPolygon",
              crs=self.crs_wkt, append=append,
              dataset_options=None if append else {"VERSION": "1.2"})

    def chunk_counts(self) -> Dict[int, int]:
        """``{chunk: rows}`` present in the layer."""
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            return {int(c): int(n) for c, n in db.execute(
                f"SELECT chunk, COUNT(*) FROM {_quote(self.layer)} GROUP BY chunk")}
        finally:
            db.close()

    def delete_chunks(self, chunks: Iterable[int]) -> int:
        """Delete the rows of these chunks (one transaction); returns rows deleted."""
        chunks = sorted(set(int(c) for c in chunks))
        if not chunks:
            return 0
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:
                n = 0
                for c in chunks:
                    n += db.execute(f"DELETE FROM {_quote(self.layer)} WHERE chunk = ?",
                                    (c,)).rowcount
            return n
        finally:
            db.close()

    def count(self) -> int:
        return sum(self.chunk_counts().values())


def reconcile_output(writer: GpkgWriter, store: JobStore, job_id: str) -> Dict[int, int]:
    """Make the output agree with the store before (re)starting; returns the done chunks.

    * no output yet: create it (and forget any chunk the store lists: it must rerun);
    * rows of chunks the store does not list as done (a crash after the write, before
      the record) or whose row count differs: deleted, and those chunks rerun.
    """
    done = store.done_chunks(job_id)
    if not writer.exists():
        if done:
            log.warning("job %s: output %s is missing; restarting all chunks", job_id,
                        writer.path)
            store.clear_chunks(job_id)
        writer.create()
        return {}
    present = writer.chunk_counts()
    bad = {c for c, n in present.items() if done.get(c) != n}
    bad |= {c for c, n in done.items() if n and present.get(c, 0) != n}
    if bad:
        removed = writer.delete_chunks(bad)
        log.info("job %s: removed %d row(s) of %d unfinished chunk(s)", job_id, removed,
                 len(bad))
        keep = {c for c in done if c not in bad}
        store.clear_chunks(job_id, keep)
        done = {c: n for c, n in done.items() if c in keep}
    return done


# ----------------------------------------------------------------------------- jobs

def submit(store: JobStore, request: Dict[str, Any], job_id: Optional[str] = None) -> str:
    """Record a batch request as a new job and return its id (does not run it).

    Raises:
        DetectError: ``invalid_input`` for an output path that is not a ``.gpkg`` or
            already exists (unless ``overwrite``).
    """
    import uuid
    out = request.get("out_path")
    if not isinstance(out, str) or not out.lower().endswith(".gpkg"):
        raise DetectError(P.E_INVALID_INPUT, "out_path must be a .gpkg file")
    if os.path.exists(out) and not request.get("overwrite"):
        raise DetectError(P.E_INVALID_INPUT, f"{out} exists; choose another file or set "
                                             f"overwrite")
    job_id = job_id or uuid.uuid4().hex
    store.create(job_id, {k: v for k, v in request.items()
                          if k not in ("token", "id", "v", "type", "arrays")})
    return job_id


def local_results(request: Dict[str, Any], plan: Dict[str, Any], pending: Sequence[int],
                  cancelled: Optional[Callable[[], bool]] = None,
                  engine: Optional[Engine] = None) -> Iterator[ChunkResult]:
    """Chunk results computed in this process, in chunk order."""
    with ChunkWorker(request, plan, engine) as worker:
        for idx in pending:
            if cancelled and cancelled():
                raise JobCancelled()
            yield worker.process(idx, cancelled)


def run_batch(store: JobStore, job_id: str, progress: Optional[Progress] = None,
              cancelled: Optional[Callable[[], bool]] = None,
              engine: Optional[Engine] = None,
              executor: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) a stored batch job to completion.

    Args:
        store: the job store holding ``job_id``.
        progress: receives (fraction 0..1, message) after every chunk.
        cancelled: polled between model batches and chunks; the job then stops and
            stays resumable (state ``cancelled``).
        engine: engine for the local executor (tests, benchmarks).
        executor: ``"local"`` (default: the request's ``executor`` or local) or ``"ray"``
            (``backend.distributed``; ``RAY_ADDRESS`` picks the cluster).

    Returns:
        ``{"crs", "features": [], "stats"}`` (the polygons are in the GeoPackage;
        ``stats`` holds ``out_path``, ``layer``, ``count``, ``chunks``...).

    Raises:
        DetectError, JobCancelled.
    """
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    job = store.get(job_id)
    if job is None:
        raise DetectError(P.E_NOT_FOUND, f"no batch job {job_id}")
    request = job["request"]
    executor = executor or request.get("executor") or "local"
    store.set_state(job_id, RUNNING, "starting")
    try:
        card, _ = _load(request)
        plan = job["plan"]
        if plan is None:
            progress(0.0, "planning")
            plan = make_plan(request, card)
            store.set_plan(job_id, plan, plan["n_chunks"])
        n = int(plan["n_chunks"])
        writer = GpkgWriter(request["out_path"], request.get("layer") or DEFAULT_LAYER,
                            plan["crs_wkt"], plan.get("detected_at", ""))
        done = reconcile_output(writer, store, job_id)
        resumed = len(done)
        pending = [i for i in range(n) if i not in done]
        written = sum(done.values())
        progress(len(done) / max(n, 1), f"{len(done)}/{n} chunks done")
        warnings: List[str] = list(plan.get("warnings", []))
        if executor == "ray":
            from .distributed import ray_results
            results = ray_results(request, plan, pending, cancelled=cancelled)
        elif executor == "local":
            results = local_results(request, plan, pending, cancelled, engine)
        else:
            raise DetectError(P.E_BAD_REQUEST, f"unknown executor {executor!r}")
        tiles_run = tiles_cached = grown = truncated = 0
        try:
            for res in results:
                written += writer.append(res)
                store.mark_done(job_id, res.index, len(res.features))
                done[res.index] = len(res.features)
                tiles_run += res.tiles_run
                tiles_cached += res.tiles_cached
                grown += int(res.halo_px > int(plan["halo_px"]))
                truncated += res.truncated
                warnings.extend(w for w in res.warnings if w not in warnings)
                progress(len(done) / max(n, 1), f"{len(done)}/{n} chunks, {written} polygons")
                if cancelled and cancelled() and len(done) < n:
                    raise JobCancelled()
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        count = writer.count()
        if count != written or len(done) != n:  # pragma: no cover - a bug, never silent
            raise DetectError(P.E_INTERNAL, f"output holds {count} polygons, chunks "
                                            f"recorded {written} ({len(done)}/{n} chunks)")
    except JobCancelled:
        store.set_state(job_id, CANCELLED, "cancelled; resumable")
        raise
    except DetectError as exc:
        store.set_state(job_id, ERROR, exc.message)
        raise
    except BaseException as exc:
        store.set_state(job_id, ERROR, f"{type(exc).__name__}: {exc}")
        raise
    store.set_state(job_id, DONE, f"{count} polygons")
    g = grid_from_plan(plan)
    elapsed = time.perf_counter() - t0
    stats = {"out_path": writer.path, "layer": writer.layer, "count": count,
             "chunks": n, "chunks_resumed": resumed, "chunk_px": plan["chunk_px"],
             "halo_px": plan["halo_px"], "chunks_halo_grown": grown,
             "objects_cut": truncated, "tiles_run": tiles_run, "tiles_cached": tiles_cached,
             "width": g.width, "height": g.height, "gsd_m": card.gsd_m,
             "area_km2": round(g.width * g.height * card.gsd_m ** 2 / 1e6, 6),
             "seconds": round(elapsed, 3), "executor": executor,
             "warnings": warnings}
    progress(1.0, f"{count} polygons in {writer.path}")
    return {"crs": plan["crs_wkt"], "features": [], "stats": stats}


def job_summary(job: Dict[str, Any], live: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A ``jobs`` reply entry for a stored job (``live``: the running job's state)."""
    req = job["request"]
    n = job["n_chunks"]
    state = job["state"]
    running = live is not None
    if state in (RUNNING, "queued") and not running:
        state = "interrupted"
    return {"job_id": job["job_id"], "state": state, "running": running,
            "resumable": state != DONE and not running,
            "chunks_done": job["chunks_done"], "chunks_total": n,
            "fraction": round(job["chunks_done"] / n, 4) if n else 0.0,
            "polygons": job["n_features"], "out_path": req.get("out_path"),
            "layer": req.get("layer") or DEFAULT_LAYER, "model": req.get("model"),
            "source": (req.get("source") or {}).get("path"),
            "executor": req.get("executor") or "local",
            "created": job["created"], "updated": job["updated"],
            "message": (live or {}).get("message") or job["message"]}
