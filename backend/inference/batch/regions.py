"""A batch job's grid cut into regions, and the worker that detects them.

A batch job covers the same model-GSD grid as a detection of the same extent
(``backend.inference.grid.plan_grid``), but never holds more than one *region* of it:
the grid is cut into square regions of ``region_px`` (default 2048) in raster order
(:class:`RegionGrid`), and each is run through the one pipeline
(``backend.inference.pipeline.RegionDetector``) with a halo, keeping the objects whose
first pixel it owns. Every window pixel gets bit for bit the probability of a detection
of the whole grid, and polygons are traced in the whole grid's pixel coordinates, so the
polygons of a batch job are those of one detection of the extent (same WKT, score,
area), not just close.

Writing the results (``backend.inference.batch.gpkg``) and the bookkeeping that makes a
killed job resume exactly once (``backend.daemon.batch_runner``) live elsewhere;
:func:`local_results` and ``backend.inference.batch.distributed.ray_results`` are the
two executors that turn pending region indices into :class:`RegionResult` objects.

Memory is bounded by the options, not by the extent: one window of
``(channels + 1) * (region_px + 2 * halo)^2`` float32, the tile cache, GDAL's block cache
(``gdal_cache_mb``), the model. Region positions and tile offsets are computed, not
listed; what grows with the extent is a few bytes of bookkeeping per region.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from affine import Affine

from backend.inference.coverage import SourceCoverage
from backend.inference.predictors import Predictor, get_predictor
from backend.inference.grid import Grid, plan_grid
from backend.inference.objects import features
from backend.inference.pipeline import (DEFAULT_GDAL_CACHE_MB, DEFAULT_TILE_CACHE_MB,
                                        Options, RegionDetector, input_errors,
                                        model_errors)
from backend.inference.raster import WindowReader, open_source
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from protocol.errors import JobCancelled
from protocol.params import BatchParams
from protocol.window import Window

log = logging.getLogger("ortholens.batch")

#: A batch grid may be far larger than an in-extent one; this only guards absurd sizes.
MAX_BATCH_GRID_PIXELS = 10 ** 13


@dataclass(frozen=True)
class RegionGrid:
    """Regions of ``region_px`` over an ``height`` x ``width`` grid, in raster order."""

    height: int
    width: int
    region_px: int

    @property
    def rows(self) -> int:
        """Region rows."""
        return -(-self.height // self.region_px)

    @property
    def cols(self) -> int:
        """Region columns."""
        return -(-self.width // self.region_px)

    def __len__(self) -> int:
        return self.rows * self.cols

    def core(self, idx: int) -> Window:
        """The pixels region ``idx`` owns (raster order). Raises IndexError."""
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        i, j = divmod(idx, self.cols)
        s = self.region_px
        return Window.from_stops(i * s, j * s, min(self.height, (i + 1) * s),
                                 min(self.width, (j + 1) * s))


# ----------------------------------------------------------------------------- plan

def grid_to_plan(grid: Grid) -> Dict[str, Any]:
    """The JSON-safe description of a grid stored with a job."""
    t = grid.transform
    return {"width": grid.width, "height": grid.height,
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f], "crs_wkt": grid.crs_wkt,
            "source_crs_wkt": grid.source_crs_wkt,
            "bands": list(grid.bands), "src_gsd": grid.src_gsd,
            "warnings": list(grid.warnings),
            "stretch": [list(r) for r in grid.stretch] if grid.stretch else None,
            "stretch_info": grid.stretch_info}


def grid_from_plan(plan: Dict[str, Any]) -> Grid:
    """The grid a plan describes (inverse of :func:`grid_to_plan`)."""
    return Grid(Affine(*plan["transform"]), int(plan["width"]), int(plan["height"]),
                plan["crs_wkt"], list(plan["bands"]), float(plan["src_gsd"]),
                list(plan.get("warnings", [])),
                source_crs_wkt=plan.get("source_crs_wkt"),
                stretch=[tuple(r) for r in plan["stretch"]] if plan.get("stretch") else None,
                stretch_info=plan.get("stretch_info"))


def make_plan(params: BatchParams, card: ModelCard,
              opts: Optional[Options] = None) -> Dict[str, Any]:
    """Plan a batch job: the grid (as ``plan_grid`` for the same extent), regions, halo.

    Returns:
        The JSON-safe plan stored with the job: :func:`grid_to_plan`'s keys plus
        ``region_px``, ``halo_px``, ``max_halo_px``, ``tile_cache_mb``,
        ``gdal_cache_mb``, ``n_regions`` and ``detected_at`` (UTC, ISO 8601).

    Raises:
        JobError: unusable raster or extent.
    """
    opts = opts or Options.resolve(card, params)
    d = params.detect
    with input_errors(), open_source(d.source) as ds:
        grid = plan_grid(ds, d.extent, d.extent_crs, card.gsd_m, card.bands, d.bands,
                         stretch=d.stretch, max_pixels=MAX_BATCH_GRID_PIXELS)
    plan = grid_to_plan(grid)
    halo = opts.first_halo(card)
    plan.update({"region_px": opts.region_px, "halo_px": int(halo),
                 "max_halo_px": max(int(halo), opts.max_halo_px),
                 "tile_cache_mb": opts.tile_cache_mb, "gdal_cache_mb": opts.gdal_cache_mb,
                 "n_regions": len(RegionGrid(grid.height, grid.width, opts.region_px)),
                 "detected_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    return plan


# ----------------------------------------------------------------------------- regions

@dataclass
class RegionResult:
    """What one region produced: protocol ``result`` features.

    ``unreadable`` names the damaged file(s) when GDAL could not read some pixels of
    the region's tiles (a truncated tile of a mosaic): those pixels are no-data, the
    region's other objects are kept, and the job goes on. ``empty`` is True for a
    region whose window holds no data (a gap of a sparse mosaic): it was skipped
    without reading its tiles.
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
    empty: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """Plain data, to travel between processes."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RegionResult":
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def _cache_mb(plan: Dict[str, Any], detector: RegionDetector) -> float:
    """The tile cache's budget: the plan's, but never more than the tiles of two
    windows (what consecutive regions share)."""
    t, g = detector.plan, detector.grid
    rows, cols = t.axes(g.height, g.width)[0]
    side = int(plan["region_px"]) + 2 * int(plan["halo_px"])
    per_rows = min(len(rows), (side + t.height) // max(1, t.height - t.overlap) + 2)
    per_cols = min(len(cols), (side + t.width) // max(1, t.width - t.overlap) + 2)
    tile_mb = (detector.predictor.channels * 4 + 1) * t.height * t.width / float(1 << 20)
    two_windows_mb = 2 * per_rows * per_cols * tile_mb * (2 if t.shifted else 1)
    return min(float(plan.get("tile_cache_mb", DEFAULT_TILE_CACHE_MB)), two_windows_mb)


class RegionWorker:
    """Detects regions of one batch job: holds the predictor, an open reader over the
    whole grid (damaged blocks read as no-data) and the region detector with its tile
    cache. One per thread / Ray actor.

    Args:
        params: the job's parameters.
        plan: from :func:`make_plan`.
        predictor: a predictor (default: ``get_predictor`` for the job's model).

    Raises:
        JobError: unknown or corrupt model, unreadable raster.
    """

    def __init__(self, params: BatchParams, plan: Dict[str, Any],
                 predictor: Optional[Predictor] = None):
        self.params, self.plan = params, plan
        self.grid = grid_from_plan(plan)
        with model_errors():
            self.card = load_card(params.detect.model)
            predictor = predictor or get_predictor(self.card, layer_gsd_m=self.grid.src_gsd)
        opts = dataclasses.replace(
            Options.resolve(self.card, params, self.grid.src_gsd),
            region_px=int(plan["region_px"]), halo_px=int(plan["halo_px"]),
            max_halo_px=int(plan.get("max_halo_px", plan["halo_px"])))
        self.regions = RegionGrid(self.grid.height, self.grid.width, opts.region_px)
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
            self.coverage = SourceCoverage(ds, self.grid)
        except BaseException:
            self._stack.close()
            raise
        self.detector = RegionDetector(self.card, predictor, self.reader, self.grid, opts,
                                       warnings=self.warnings)
        self.detector.cache.max_bytes = int(_cache_mb(plan, self.detector)
                                            * (1 << 20))

    def close(self) -> None:
        """Close the reader and drop the cached tiles."""
        self._stack.close()
        self.detector.cache.clear()

    def __enter__(self) -> "RegionWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def process(self, idx: int, cancelled: Optional[Callable[[], bool]] = None
                ) -> RegionResult:
        """Detect the objects region ``idx`` owns.

        Pixels GDAL cannot read (a damaged tile of a mosaic) are no-data (the reader
        salvages the rest, ``WindowReader(damaged="mask")``); the result then names
        the damaged file in ``unreadable`` and a warning. A region whose core grown by
        the first halo holds no data (``backend.inference.coverage``: a gap of a sparse
        mosaic, nodata) owns no object: it is skipped without reading its tiles
        (``empty``).

        Raises:
            JobCancelled: ``cancelled()`` turned true.
        """
        t0 = time.perf_counter()
        core = self.regions.core(idx)
        halo = self.detector.opts.first_halo(self.card)
        if self.coverage.empty(core.grow(halo, self.grid.height, self.grid.width)):
            return RegionResult(idx, [], seconds=round(time.perf_counter() - t0, 3),
                                empty=True)
        first_note = len(self.warnings)
        lost_before = dict(self.reader.unreadable)
        out = self.detector.detect(core, cancelled=cancelled)
        if out.truncated:
            max_halo = self.detector.opts.max_halo_px
            self.warnings.append(f"region {idx}: {out.truncated} object(s) larger than the "
                                 f"largest halo ({max_halo} px) were cut at its edge")
        res = RegionResult(idx, features(out.detections, self.card, self.grid),
                           out.tiles_run, out.tiles_cached, out.halo_px, out.truncated,
                           round(time.perf_counter() - t0, 3), self.warnings[first_note:])
        lost = {k: v - lost_before.get(k, 0) for k, v in self.reader.unreadable.items()
                if v > lost_before.get(k, 0)}
        if lost:
            res.unreadable = ", ".join(sorted(lost))
            res.warnings.append(
                f"region {idx}: {sum(lost.values())} pixel(s) of its tiles could not be read "
                f"from {res.unreadable} (damaged or truncated) and count as no-data")
        return res


def local_results(params: BatchParams, plan: Dict[str, Any], pending: Sequence[int],
                  cancelled: Optional[Callable[[], bool]] = None,
                  predictor: Optional[Predictor] = None) -> Iterator[RegionResult]:
    """The ``local`` executor: region results computed in this process, in region order.

    Raises:
        JobError: as :class:`RegionWorker`.
        JobCancelled: ``cancelled()`` turned true (checked between regions and batches).
    """
    with RegionWorker(params, plan, predictor) as worker:
        for idx in pending:
            if cancelled and cancelled():
                raise JobCancelled()
            yield worker.process(idx, cancelled)
