"""A detect job: raster window -> tiles -> model -> stitched probabilities -> polygons.

:func:`run_detect` is what the daemon runs for a ``detect`` request (see
``protocol.wire``). Its building blocks (:func:`predict_grid`,
:func:`detections_from_probs`, :func:`features`) also serve batch chunks
(``backend.inference.batch.chunks``), fine-tuning (``backend.learning``) and the
evaluation tools, so that every number measured is one of the shipped pipeline.

Pipeline:
1. plan the output grid at the model's GSD over the extent (``backend.inference.raster``);
2. tile it with overlap (``backend.inference.tiling``), read tiles in a background thread
   (I/O overlaps compute), normalise and run them in batches (``backend.inference.engines``);
3. blend tile probabilities with ramp weights (no seams) and zero out nodata;
4. threshold, clean, polygonize, simplify (``backend.inference.postprocess``).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

import protocol as P
from backend.inference.engines import Engine, get_engine
from backend.inference.postprocess import (Detection, class_map, clean_masks, filter_objects,
                                          polygonize)
from backend.inference.raster import Grid, WindowReader, open_source, plan_grid, read_ahead
from backend.inference.tiling import Stitcher, batches, plan_tiling
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from protocol.errors import InputError, JobCancelled, JobError, ModelCorrupt, ModelNotFound
from protocol.params import DetectParams

Progress = Callable[[float, str], None]

#: Tiles per model call when a request does not say.
DEFAULT_BATCH_SIZE = 4


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


@dataclass(frozen=True)
class Options:
    """Post-processing, batching and tiling options of one detection.

    Attributes:
        threshold: probability threshold, 0..1.
        min_area_m2: smallest object kept, m².
        max_hole_m2: holes below this are filled, m².
        simplify_m: polygon simplification tolerance, metres.
        batch_size: tiles per model call.
        orthogonalize: replace near-rectangular polygons by rectangles.
        min_solidity, min_score: object filters
            (:func:`backend.inference.postprocess.filter_objects`; the card's).
        tile_size, overlap: tiling in pixels (None: the card's; see
            ``backend.inference.tiling.plan_tiling``). Requests never set them; the
            evaluation of variants does, through ``run_detect``'s ``overrides``.
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

    @classmethod
    def resolve(cls, card: ModelCard, params: Optional[DetectParams] = None) -> "Options":
        """The options of a request: each field the request leaves None (or all, without
        ``params``) takes the card's value (batch size: :data:`DEFAULT_BATCH_SIZE`)."""
        def pick(name: str, default: Any) -> Any:
            value = None if params is None else getattr(params, name)
            return default if value is None else value

        return cls(threshold=float(pick("threshold", card.threshold)),
                   min_area_m2=float(pick("min_area_m2", card.min_area_m2)),
                   max_hole_m2=float(card.max_hole_m2),
                   simplify_m=float(pick("simplify_m", card.simplify_m)),
                   batch_size=int(pick("batch_size", DEFAULT_BATCH_SIZE)),
                   orthogonalize=bool(pick("orthogonalize", card.orthogonalize)),
                   min_solidity=float(card.min_solidity), min_score=float(card.min_score))


#: Words of the errors that device allocators raise (CUDA via PyTorch, ONNX Runtime).
_OOM_MARKERS = ("out of memory", "failed to allocate memory", "bad_alloc", "bad allocation",
                "cudaerrormemoryallocation", "cublas_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure of the inference device: ``MemoryError``,
    ``torch.cuda.OutOfMemoryError``, or an ONNX Runtime / CUDA error saying so."""
    # torch's class is matched by name: this module must not import torch (ONNX-only
    # installs), and an engine that raises it has torch loaded anyway.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, Exception) and any(m in str(exc).lower() for m in _OOM_MARKERS)


class BatchBackoff:
    """Runs model batches; on out-of-memory halves the batch size and retries the same
    tiles (down to one tile a batch), noting it in ``warnings``.

    Args:
        batch_size: tiles per model call to start with.
        warnings: list the notes are appended to (the job's ``stats["warnings"]``).
    """

    def __init__(self, batch_size: int, warnings: Optional[List[str]] = None):
        self.size = max(1, int(batch_size))
        self.warnings = warnings if warnings is not None else []

    def predict(self, engine: Engine, tiles: np.ndarray) -> np.ndarray:
        """``engine.predict_raw(tiles)``, in chunks of at most :attr:`size` tiles.

        Raises:
            JobError: ``busy`` when even a single tile does not fit in memory.
        """
        out, i = [], 0
        while i < len(tiles):
            chunk = tiles[i:i + self.size]
            try:
                out.append(engine.predict_raw(chunk))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                _free_device_memory()
                if len(chunk) <= 1:
                    raise JobError(f"the inference device ({engine.device}) ran out of "
                                   f"memory even for one tile: free memory (close other "
                                   f"GPU programs) and try again", P.E_BUSY) from None
                self.size = max(1, len(chunk) // 2)
                self.warnings.append(f"the inference device ({engine.device}) ran out of "
                                     f"memory at {len(chunk)} tiles per batch; continued "
                                     f"with {self.size} (slower)")
                continue
            i += len(chunk)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=0)


def _free_device_memory() -> None:
    """Return cached CUDA blocks after an out-of-memory (when torch is in use)."""
    import sys
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort only
        pass


def predict_grid(reader: WindowReader, grid: Grid, engine: Engine, batch_size: int,
                 progress: Optional[Progress] = None,
                 cancelled: Optional[Callable[[], bool]] = None,
                 tile_size: Optional[int] = None, overlap: Optional[int] = None,
                 warnings: Optional[List[str]] = None
                 ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Fused class probabilities over a grid.

    Args:
        reader: tile reader over the grid.
        grid: the output grid.
        engine: inference engine.
        batch_size: tiles per model call.
        progress: called with (fraction 0..1, message) after each batch.
        cancelled: polled between batches.
        tile_size, overlap: tiling in pixels (default: the card's; see
            ``backend.inference.tiling.plan_tiling``).
        warnings: notes for the user are appended here (out-of-memory back-off, see
            :class:`BatchBackoff`).

    Returns:
        ``(probs, valid, n_tiles)``: float32 (engine.channels, H, W) probabilities
        (background = 1 and the rest 0 on invalid pixels), bool (H, W) valid-data mask,
        and the number of tiles run (both tilings when the card asks for shifts).

    Raises:
        JobCancelled: ``cancelled()`` returned True.
        JobError: ``busy`` when one tile does not fit in the device's memory.
    """
    plan = plan_tiling(engine.card, grid.height, grid.width, tile_size, overlap)
    tile = plan.tile
    offsets = plan.offsets(grid.height, grid.width)
    stitch = Stitcher(engine.channels, grid.height, grid.width, tile, plan.overlap)
    valid = np.zeros((grid.height, grid.width), bool)
    backoff = BatchBackoff(batch_size, warnings)
    done = 0
    with closing(read_ahead(reader, list(batches(offsets, batch_size)), tile)) as groups:
        for group, imgs, masks in groups:
            if cancelled and cancelled():
                raise JobCancelled()
            probs = backoff.predict(engine, imgs)
            for (r, c), p, m in zip(group, probs, masks):
                stitch.add(r, c, p)
                r0, c0 = max(r, 0), max(c, 0)
                r1, c1 = min(r + tile, grid.height), min(c + tile, grid.width)
                valid[r0:r1, c0:c1] |= m[r0 - r:r1 - r, c0 - c:c1 - c]
            done += len(group)
            if progress:
                progress(done / len(offsets), f"{done}/{len(offsets)} tiles")
    probs = stitch.result()
    probs[:, ~valid] = 0.0
    probs[0, ~valid] = 1.0
    return probs, valid, len(offsets)


def split_probs(probs: np.ndarray, card: ModelCard
                ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(class_probs, member_probs)`` of stitched probabilities.

    Args:
        probs: float32 (channels, H, W) from :func:`predict_grid`: the
            ``1 + classes`` class probabilities, then (ensembles) each member's
            foreground probabilities.

    Returns:
        float32 (1 + classes, H, W), and float32 (members, classes, H, W) or None
        for a single model.
    """
    c, k = card.num_outputs, len(card.classes)
    members = probs[c:].reshape(-1, k, *probs.shape[1:]) if probs.shape[0] > c else None
    return probs[:c], members


def min_sizes_px(opts: Options, transform) -> Tuple[int, int]:
    """``(min_area_px, max_hole_px)`` of ``opts`` on a grid with this affine transform."""
    px_area = transform.a * -transform.e
    return (int(round(opts.min_area_m2 / px_area)), int(round(opts.max_hole_m2 / px_area)))


def detections_from_probs(probs: np.ndarray, valid: np.ndarray, grid: Grid,
                          card: ModelCard, opts: Options) -> Tuple[np.ndarray, List[Detection]]:
    """Cleaned class map (uint8 (H, W)) and polygons (grid CRS) from probabilities.

    Args:
        probs: float32 (channels, H, W) from :func:`predict_grid` (see
            :func:`split_probs`).
        valid: bool (H, W) valid-data mask.
    """
    class_probs, members = split_probs(probs, card)
    cmap = class_map(class_probs, opts.threshold)
    cmap[~valid] = 0
    cmap = clean_masks(cmap, len(card.classes), *min_sizes_px(opts, grid.transform))
    cmap = filter_objects(cmap, class_probs, len(card.classes), opts.min_solidity,
                          opts.min_score)
    dets = polygonize(cmap, class_probs, grid.transform, opts.simplify_m, opts.min_area_m2,
                      member_probs=members, threshold=opts.threshold,
                      ortho=opts.orthogonalize)
    return cmap, dets


def to_source_crs(dets: List[Detection], grid: Grid) -> List[Detection]:
    """The detections with their geometries in the raster's own CRS when the grid was
    reprojected (``grid.source_crs_wkt``; see ``raster.grid_crs``), else unchanged.

    ``area_m2`` stays the grid's (ground square metres). Geometries are transformed
    vertex by vertex by GDAL (``rasterio.warp.transform_geom``).
    """
    if not grid.source_crs_wkt:
        return dets
    import shapely.geometry
    from rasterio.warp import transform_geom

    return [dataclasses.replace(d, geometry=shapely.geometry.shape(transform_geom(
        grid.crs_wkt, grid.source_crs_wkt, shapely.geometry.mapping(d.geometry),
        precision=-1))) for d in dets]


def wkt_precision(crs_wkt: str) -> int:
    """Decimals kept in result WKT: 3 (millimetres) for a projected CRS, 9 (about
    0.1 mm) for degrees."""
    from rasterio.crs import CRS
    return 3 if CRS.from_wkt(crs_wkt).is_projected else 9


def features(dets: List[Detection], card: ModelCard, precision: int = 3) -> List[Dict]:
    """Protocol ``result`` features for detections: ``wkt`` (``precision`` decimals)
    plus the attributes of ``protocol.results.RESULT_FIELDS`` except ``detected_at``."""
    import shapely
    return [{"wkt": shapely.to_wkt(d.geometry, rounding_precision=precision),
             "class": card.class_name(d.class_id), "class_id": d.class_id,
             "score": round(d.score, 4), "agreement": round(d.agreement, 4),
             "area_m2": round(d.area_m2, 3), "model": card.id,
             "model_version": card.version} for d in dets]


def run_detect(request: Union[DetectParams, Mapping[str, Any]], arrays: List[np.ndarray],
               progress: Optional[Progress] = None,
               cancelled: Optional[Callable[[], bool]] = None,
               engine: Optional[Engine] = None, overrides: Optional[Dict[str, Any]] = None,
               on_probs: Optional[Callable[[np.ndarray, np.ndarray, Grid], None]] = None
               ) -> Dict:
    """Run a ``detect`` request.

    Args:
        request: the header validated by ``protocol.wire.validate_request`` (type
            ``detect``; the daemon's job contract), or its :class:`DetectParams`.
        arrays: the request's array frames (the pixels for a ``PixelSource``).
        progress: receives (fraction 0..1, message).
        cancelled: polled between batches.
        engine: an engine to use instead of the cached default (tests, benchmarks).
        overrides: :class:`Options` fields to force (evaluation of variants).
        on_probs: called with the stitched ``(probs, valid, grid)`` before
            post-processing (evaluation: calibration, precision-recall curves).

    Returns:
        ``{"crs": WKT, "features": [...], "stats": {...}}`` with geometries in the
        raster's CRS.

    Raises:
        JobError: unknown/corrupt model (``not_found`` / ``invalid_input``), unusable
            raster or extent (``invalid_input``, ``not_found``), a device out of memory
            for a single tile (``busy``).
        JobCancelled: cancelled.
    """
    params = request if isinstance(request, DetectParams) else DetectParams.from_header(request)
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    with model_errors():
        card = load_card(params.model)
        engine = engine or get_engine(card)
    progress(0.0, "reading raster")
    choice = None
    with input_errors(), open_source(params.source, arrays[0] if arrays else None) as ds:
        grid = plan_grid(ds, params.extent, params.extent_crs, card.gsd_m, card.bands,
                         params.bands, stretch=params.stretch)
        if params.by_area:
            card, engine, choice = _area_version(card, grid, engine)
        opts = dataclasses.replace(Options.resolve(card, params), **(overrides or {}))
        reader = WindowReader(ds, grid)
        try:
            probs, valid, n_tiles = predict_grid(reader, grid, engine, opts.batch_size,
                                                 lambda f, m: progress(0.9 * f, m),
                                                 cancelled, opts.tile_size, opts.overlap,
                                                 warnings=grid.warnings)
        finally:
            reader.close()
    t_model = time.perf_counter() - t0
    if on_probs is not None:
        on_probs(probs, valid, grid)
    progress(0.92, "polygonizing")
    _, dets = detections_from_probs(probs, valid, grid, card, opts)
    out_crs = grid.source_crs_wkt or grid.crs_wkt
    feats = features(to_source_crs(dets, grid), card, wkt_precision(out_crs))
    per_class: Dict[str, int] = {}
    for f in feats:
        per_class[f["class"]] = per_class.get(f["class"], 0) + 1
    elapsed = time.perf_counter() - t0
    area_km2 = grid.width * grid.height * (card.gsd_m ** 2) / 1e6
    stats = {"tiles": n_tiles, "width": grid.width, "height": grid.height,
             "gsd_m": card.gsd_m, "source_gsd_m": round(grid.src_gsd, 4),
             "area_km2": round(area_km2, 6), "valid_fraction": round(float(valid.mean()), 4),
             "seconds": round(elapsed, 3), "model_seconds": round(t_model, 3),
             "mpx_per_s": round(grid.width * grid.height / 1e6 / max(elapsed, 1e-9), 3),
             "engine": engine.kind, "device": engine.device, "per_class": per_class,
             "threshold": opts.threshold, "min_area_m2": opts.min_area_m2,
             "bands": list(grid.bands), "stretch": grid.stretch_info,
             "warnings": grid.warnings, "model": card.id, "model_version": card.version}
    if choice is not None:
        stats["model_choice"] = choice
    progress(1.0, f"{len(feats)} polygons")
    return {"crs": out_crs, "features": feats, "stats": stats}


def _area_version(card, grid: Grid, engine: Optional[Engine]):
    """``(card, engine, why)`` of a ``by_area`` detection: the version of ``card``'s
    lineage taught on the grid's area when one in use covers it
    (``backend.models.versions.version_for_extent``), else ``card`` itself; ``engine``
    (a caller's) is kept only when the card is."""
    from backend.models.versions import version_for_extent
    t = grid.transform
    bounds = (t.c, t.f + grid.height * t.e, t.c + grid.width * t.a, t.f)
    chosen, why = version_for_extent(card.id, bounds, grid.crs_wkt)
    if chosen is None or chosen.id == card.id:
        return card, engine, why
    with model_errors():
        return chosen, get_engine(chosen), why
