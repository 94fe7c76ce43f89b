"""The one detection pipeline: a grid at the model's GSD, detected region by region.

A detection of one extent (``backend.inference.detect.run_detect``) is one region that
covers its whole grid; a batch job (``backend.inference.batch.regions``) is the same
grid cut into regions, run one after the other (or on Ray) and written as they finish.
Both go through :class:`RegionDetector`:

1. the tiles of the *whole grid's* tiling (``backend.inference.tiling.plan_tiling``)
   that meet the region's window (its core grown by a halo) are read in a background
   thread (``backend.inference.raster.read_ahead``), run through the predictor in
   batches (:class:`~backend.inference.backoff.BatchBackoff`) and stitched over the
   window with the whole grid's ramp weights (``tiling.Stitcher``): every window pixel
   gets bit for bit the probability a run over the whole grid gives it. Tiles shared
   with the previous window come from a small LRU cache (:class:`TileCache`); tiles
   without one valid pixel (nodata, gaps of a sparse mosaic) are not run;
2. threshold, clean-up, the exactly-once rule of regions, object filters and polygons
   (``backend.inference.objects``). An owned object that touches an inner edge of the
   window may continue outside it: the region is then done again with the halo doubled
   (up to ``max_halo_px``; cached tiles make this cheap), so an object smaller than the
   halo is always seen whole and cleaned exactly as in the whole grid.

Limits of exactness (documented, not silent): objects larger than ``max_halo_px`` are
cut at the window edge (a warning says how many); hole filling can merge an island
into the object around it, so an island that is itself kept (at least ``min_area``)
inside a fillable hole (below ``max_hole``) could be reported by its own region as
well: impossible when ``max_hole`` is below the ring of pixels around the smallest kept
object (true for the shipped cards); with several classes, a hole's pixels of another
class go to the enclosing object, which a region sees whole only inside its window.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

import protocol as P
from backend.inference.backoff import BatchBackoff
from backend.inference.objects import (candidate_objects, class_maps, merged, owned_objects,
                                       polygons)
from backend.inference.postprocess import Detection
from backend.inference.raster import read_ahead
from backend.inference.tiling import Stitcher, batches, plan_tiling
from backend.models.card import ModelCard
from backend.models.gsd_postprocess import entry_for
from protocol.errors import InputError, JobCancelled, JobError, ModelCorrupt, ModelNotFound
from protocol.params import BatchParams, DetectParams
from protocol.window import Window

Progress = Callable[[float, str], None]

#: Tiles per model call when a request does not say.
DEFAULT_BATCH_SIZE = 4
#: Region side of batch jobs, pixels at the model's GSD (``ORTHOLENS_REGION_PX``).
DEFAULT_REGION_PX = 2048
MIN_REGION_PX = 32
#: The halo is doubled up to this for objects larger than it, pixels.
DEFAULT_MAX_HALO_PX = 4096
#: Most MB of cached tile probabilities (``ORTHOLENS_TILE_CACHE_MB``).
DEFAULT_TILE_CACHE_MB = 256
#: GDAL's block cache while a batch job reads, MB (``ORTHOLENS_GDAL_CACHE_MB``).
DEFAULT_GDAL_CACHE_MB = 64


@contextmanager
def model_errors() -> Iterator[None]:
    """Turn a missing / unreadable model into a job error a client can show.

    Raises:
        JobError: ``not_found`` for :class:`ModelNotFound`, ``invalid_input`` for
            :class:`ModelCorrupt`, with the original message.
    """
    try:
        yield
    except ModelNotFound as exc:
        raise JobError(str(exc), P.E_NOT_FOUND) from None
    except ModelCorrupt as exc:
        raise JobError(str(exc), P.E_INVALID_INPUT) from None


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn unusable input (raster, extent, CRS, bands) into a job error, same code and
    ``field``."""
    try:
        yield
    except InputError as exc:
        raise JobError(exc.message, exc.code, field=exc.field) from None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Options:
    """Everything a detection is run with besides its raster and model: the one
    options type of detections and batch jobs.

    Attributes:
        threshold: probability threshold, 0..1.
        min_area_m2: smallest object kept, m².
        max_hole_m2: holes below this are filled, m².
        simplify_m: polygon simplification tolerance, metres.
        batch_size: tiles per model call.
        orthogonalize: replace near-rectangular polygons by rectangles.
        min_solidity, min_score: object filters
            (:func:`backend.inference.postprocess.filter_objects`; the card's).
        tile_size, overlap: tiling in pixels (None: the card's for the predictor's device,
            ``ModelCard.tile_geometry``; see ``backend.inference.tiling.plan_tiling``). Requests
            never set them; the evaluation of variants does, through ``overrides``.
        region_px: region side of a batch job, pixels at the model's GSD.
        halo_px: first halo around a region, pixels; None: twice the tile overlap, at
            least 64.
        max_halo_px: the halo is doubled up to this for objects larger than it.
        tile_cache_mb: most MB of cached tile probabilities (never more than the tiles
            of two windows, what consecutive regions share).
        gdal_cache_mb: GDAL's block cache while a batch job reads, MB.
    """

    threshold: float
    min_area_m2: float
    max_hole_m2: float
    simplify_m: float
    batch_size: int = DEFAULT_BATCH_SIZE
    orthogonalize: bool = False
    min_solidity: float = 0.0
    min_score: float = 0.0
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    region_px: int = DEFAULT_REGION_PX
    halo_px: Optional[int] = None
    max_halo_px: int = DEFAULT_MAX_HALO_PX
    tile_cache_mb: int = DEFAULT_TILE_CACHE_MB
    gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB

    @classmethod
    def resolve(cls, card: ModelCard, params: Optional[Any] = None,
                layer_gsd_m: Optional[float] = None) -> "Options":
        """The options of a request (a :class:`DetectParams` or a :class:`BatchParams`,
        or None for the card's): each field the request leaves None takes the card's
        value (batch size: :data:`DEFAULT_BATCH_SIZE`), for a layer of ``layer_gsd_m``
        metres per pixel the post-processing of the card's entry for it
        (:func:`backend.models.gsd_postprocess.entry_for`); the region knobs come from the
        environment (``ORTHOLENS_REGION_PX``, ``ORTHOLENS_TILE_CACHE_MB``,
        ``ORTHOLENS_GDAL_CACHE_MB``), then a batch request's ``region_px`` and
        ``halo_px``; the region side is at least :data:`MIN_REGION_PX`."""
        job = params if isinstance(params, BatchParams) else None
        detect: Optional[DetectParams] = job.detect if job is not None else params

        def pick(name: str, default: Any) -> Any:
            value = None if detect is None else getattr(detect, name)
            return default if value is None else value

        region_px = _env_int("ORTHOLENS_REGION_PX", DEFAULT_REGION_PX)
        halo_px = None
        if job is not None and job.region_px is not None:
            region_px = int(job.region_px)
        if job is not None and job.halo_px is not None:
            halo_px = int(job.halo_px)
        pp = entry_for(card.postprocess_by_gsd, layer_gsd_m) or card
        return cls(threshold=float(pick("threshold", pp.threshold)),
                   min_area_m2=float(pick("min_area_m2", pp.min_area_m2)),
                   max_hole_m2=float(pp.max_hole_m2),
                   simplify_m=float(pick("simplify_m", card.simplify_m)),
                   batch_size=int(pick("batch_size", DEFAULT_BATCH_SIZE)),
                   orthogonalize=bool(pick("orthogonalize", card.orthogonalize)),
                   min_solidity=float(pp.min_solidity), min_score=float(pp.min_score),
                   region_px=max(MIN_REGION_PX, region_px), halo_px=halo_px,
                   tile_cache_mb=_env_int("ORTHOLENS_TILE_CACHE_MB", DEFAULT_TILE_CACHE_MB),
                   gdal_cache_mb=_env_int("ORTHOLENS_GDAL_CACHE_MB", DEFAULT_GDAL_CACHE_MB))

    def first_halo(self, card: ModelCard) -> int:
        """The halo a region starts with, pixels (:attr:`halo_px`, else twice the
        card's overlap, at least 64)."""
        return self.halo_px if self.halo_px is not None else max(64, 2 * card.overlap)


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


@dataclass
class Stitched:
    """The probabilities of one window.

    Attributes:
        probs: float32 (channels, h, w); background 1 and the rest 0 on invalid pixels.
        valid: bool (h, w) valid-data mask.
        tiles: tiles meeting the window; run: those run through the predictor; cached:
            those taken from the cache (the rest had no valid pixel).
    """

    probs: np.ndarray
    valid: np.ndarray
    tiles: int
    run: int
    cached: int


@dataclass
class RegionOutput:
    """What one region produced.

    Attributes:
        detections: the objects the region owns, polygons in the grid's CRS.
        window: the window finally used (core + halo), pixels of the grid.
        halo_px: that halo, pixels; truncated: owned objects cut at its edge.
        tiles: tiles meeting the window; tiles_run, tiles_cached: those run through the
            predictor / taken from the cache (summed over halo retries).
        valid_fraction: share of the window's pixels with valid data.
        probs_seconds: seconds until the window's probabilities were stitched.
        candidates: the candidate misses the region owns
            (:func:`~backend.inference.objects.candidate_objects`), when asked for.
        class_maps: uint8 (families, h, w) the window's class maps as its polygons were
            traced; valid: bool (h, w) its valid-data mask.
    """

    detections: List[Detection]
    window: Window
    halo_px: int
    truncated: int
    tiles: int
    tiles_run: int
    tiles_cached: int
    valid_fraction: float
    probs_seconds: float
    candidates: List[Detection] = field(default_factory=list)
    class_maps: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None


class RegionDetector:
    """Detects the objects of a grid region by region (see the module docstring).

    Args:
        card: the model card (classes, tiling).
        predictor: the predictor (``backend.inference.predictors``).
        reader: reads tiles of ``grid`` (``backend.inference.raster.WindowReader``);
            used by one background thread at a time.
        grid: the output grid (``backend.inference.grid.Grid``).
        opts: :class:`Options`.
        cache_mb: most MB of cached tiles (0: none, for a single region).
        warnings: notes for the user are appended here (out-of-memory back-off,
            objects cut at the largest halo).

    Attributes:
        model_seconds: seconds spent in the predictor so far.
    """

    def __init__(self, card: ModelCard, predictor, reader, grid, opts: Options,
                 cache_mb: float = 0.0, warnings: Optional[List[str]] = None):
        self.card, self.predictor, self.reader, self.grid, self.opts = (card, predictor, reader,
                                                                     grid, opts)
        size, overlap = card.tile_geometry("cuda" if str(predictor.device).startswith("cuda")
                                           else "cpu")
        self.plan = plan_tiling(card, grid.height, grid.width,
                                opts.tile_size or size,
                                overlap if opts.overlap is None else opts.overlap)
        self.whole = Window(0, 0, grid.height, grid.width)
        self.warnings = warnings if warnings is not None else []
        self.backoff = BatchBackoff(opts.batch_size, self.warnings)
        self.cache = TileCache(cache_mb)
        self.model_seconds = 0.0

    def _run(self, group, imgs: np.ndarray, masks: List[np.ndarray]
             ) -> Tuple[List[np.ndarray], int]:
        """``(probabilities, tiles run)`` of a group of tiles; tiles without a valid
        pixel only cover pixels that end up background anyway (validity is a property of the pixel, the
        same in every tile), so the predictor skips them and they get zeros."""
        live = [i for i, m in enumerate(masks) if m.any()]
        t0 = time.perf_counter()
        out = self.backoff.predict(self.predictor, imgs[live]) if live else None
        self.model_seconds += time.perf_counter() - t0
        probs = [None] * len(group)
        for j, i in enumerate(live):
            probs[i] = np.ascontiguousarray(out[j])
        shape = (self.predictor.channels,) + self.plan.shape
        return [p if p is not None else np.zeros(shape, np.float32)
                for p in probs], len(live)

    def probabilities(self, window: Window, progress: Optional[Progress] = None,
                      cancelled: Optional[Callable[[], bool]] = None) -> Stitched:
        """Stitched probabilities and valid mask over ``window``, identical to the whole
        grid's there.

        Args:
            window: pixels of the grid.
            progress: receives (fraction of the window's tiles done, "i/n tiles").
            cancelled: polled between model batches.

        Raises:
            JobCancelled: ``cancelled()`` returned True.
            JobError: ``busy`` when one tile does not fit in the device's memory.
        """
        g = self.grid
        needed = self.plan.intersecting(window, g.height, g.width)
        have: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for key in needed:
            item = self.cache.get(key)
            if item is None:
                missing.append(key)
            else:
                have[key] = item
        stitch = Stitcher(self.predictor.channels, g.height, g.width, self.plan.shape,
                          self.plan.overlap, window)
        pos = run = 0

        def drain() -> None:
            nonlocal pos
            while pos < len(needed) and needed[pos] in have:
                key = needed[pos]
                p, m = have.pop(key)
                stitch.add(key[0], key[1], p, m)
                pos += 1

        drain()
        groups = list(batches(missing, self.backoff.size))
        with closing(read_ahead(self.reader, groups, self.plan.shape)) as tiles:
            for group, imgs, masks in tiles:
                if cancelled and cancelled():
                    raise JobCancelled()
                probs, n_live = self._run(group, imgs, masks)
                run += n_live
                for key, p, m in zip(group, probs, masks):
                    have[key] = (p, m)
                    self.cache.put(key, (p, m))
                drain()
                if progress:
                    progress(pos / len(needed), f"{pos}/{len(needed)} tiles")
        if pos != len(needed):  # pragma: no cover - a bug, never silent
            raise RuntimeError(f"stitched {pos} of {len(needed)} tiles")
        probs, valid = stitch.masked_result()
        return Stitched(probs, valid, len(needed), run, len(needed) - len(missing))

    def detect(self, core: Window, progress: Optional[Progress] = None,
               cancelled: Optional[Callable[[], bool]] = None,
               on_probs: Optional[Callable[[np.ndarray, np.ndarray, Window], None]] = None,
               candidates_low: Optional[float] = None) -> RegionOutput:
        """The objects ``core`` owns (the exactly-once rule), with their polygons.

        Args:
            core: the region's pixels (the whole grid for a detection of one extent).
            progress, cancelled: as :meth:`probabilities`.
            on_probs: called with the window's stitched ``(probs, valid, window)``
                before post-processing (evaluation: calibration, precision-recall).
            candidates_low: also find the candidate misses down to this probability
                (``protocol.review.CANDIDATE_LOW``); None: none.

        Raises:
            JobCancelled, JobError: as :meth:`probabilities`.
        """
        t0 = time.perf_counter()
        g, opts = self.grid, self.opts
        halo = opts.first_halo(self.card) if core != self.whole else 0
        max_halo = max(halo, opts.max_halo_px)
        run = cached = 0
        while True:
            win = core.grow(halo, g.height, g.width)
            st = self.probabilities(win, progress, cancelled)
            run, cached = run + st.run, cached + st.cached
            raw, cleaned = class_maps(st.probs[:self.card.num_outputs], st.valid,
                                      self.card, opts, g.transform)
            owned, touching = owned_objects(raw, cleaned, win, core, g.height, g.width)
            if not touching or halo >= max_halo:
                break
            halo = min(max_halo, max(1, halo) * 2)
        t_probs = time.perf_counter() - t0
        if on_probs is not None:
            on_probs(st.probs, st.valid, win)
        kept, dets = polygons(owned, st.probs, self.card, opts, g.transform, win, g.height,
                              g.width)
        cands = [] if candidates_low is None else candidate_objects(
            st.probs, st.valid, kept, self.card, opts, g.transform, win, core, g.height,
            g.width, candidates_low)
        return RegionOutput(dets, win, halo, touching, st.tiles, run, cached,
                            float(st.valid.mean()) if st.valid.size else 0.0, t_probs,
                            cands, kept, st.valid)


def predict_grid(reader, grid, predictor, batch_size: int,
                 progress: Optional[Progress] = None,
                 cancelled: Optional[Callable[[], bool]] = None,
                 tile_size: Optional[int] = None, overlap: Optional[int] = None,
                 warnings: Optional[List[str]] = None
                 ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Fused class probabilities over a whole grid (:meth:`RegionDetector.probabilities`
    of the grid's window).

    Returns:
        ``(probs, valid, n_tiles)``: float32 (predictor.channels, H, W) probabilities
        (background = 1 and the rest 0 on invalid pixels), bool (H, W) valid-data mask,
        and the number of tiles of the plan (both tilings when the card asks for
        shifts).

    Raises:
        JobCancelled: ``cancelled()`` returned True.
        JobError: ``busy`` when one tile does not fit in the device's memory.
    """
    opts = Options(threshold=0.5, min_area_m2=0.0, max_hole_m2=0.0, simplify_m=0.0,
                   batch_size=batch_size, tile_size=tile_size, overlap=overlap)
    det = RegionDetector(predictor.card, predictor, reader, grid, opts, warnings=warnings)
    st = det.probabilities(det.whole, progress, cancelled)
    return st.probs, st.valid, st.tiles


def detections_from_probs(probs: np.ndarray, valid: np.ndarray, grid, card: ModelCard,
                          opts: Options) -> Tuple[np.ndarray, List[Detection]]:
    """Cleaned class map (uint8 (H, W); with several class families, the first
    family's class where it has one, :func:`~backend.inference.objects.merged`) and
    polygons (grid CRS) of a whole grid's probabilities (float32 (channels, H, W), from
    :func:`predict_grid`) and valid mask (bool (H, W)): the post-processing of
    :meth:`RegionDetector.detect`."""
    whole = Window(0, 0, grid.height, grid.width)
    _, cleaned = class_maps(probs[:card.num_outputs], valid, card, opts, grid.transform)
    maps, dets = polygons(cleaned, probs, card, opts, grid.transform, whole, grid.height,
                          grid.width)
    return merged(maps), dets
