"""A detect job: raster window -> tiles -> model -> stitched probabilities -> polygons.

:func:`run_detect` is what the daemon runs for a ``detect`` request
(see ``plugin/protocol.py``). :func:`detect_array`-level helpers are reused by the
evaluation harness so the numbers measured are those of the shipped pipeline.

Pipeline:
1. plan the output grid at the model's GSD over the extent (``backend.raster``);
2. tile it with overlap (``backend.tiling``), read tiles in a background thread
   (I/O overlaps compute), normalise and run them in batches (``backend.engines``);
3. blend tile probabilities with ramp weights (no seams) and zero out nodata;
4. threshold, clean, polygonize, simplify (``backend.postprocess``).
"""

from __future__ import annotations

import queue
from contextlib import contextmanager
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from plugin import protocol as P

from .engines import Engine, get_engine
from .postprocess import Detection, class_map, clean_masks, polygonize
from .raster import Grid, InputError, WindowReader, open_source, plan_grid
from .registry import ModelCard, ModelCorrupt, ModelNotFound, load_card
from .tiling import Stitcher, batches, shifted_tile_grid, tile_grid

Progress = Callable[[float, str], None]


class DetectError(Exception):
    """A detect job that cannot run; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@contextmanager
def model_errors(error: type = DetectError) -> Iterator[None]:
    """Turn a missing / unreadable model into a job error a client can show.

    Raises:
        error: ``(E_NOT_FOUND, ...)`` for :class:`ModelNotFound`,
            ``(E_INVALID_INPUT, ...)`` for :class:`ModelCorrupt`; ``error`` is
            :class:`DetectError` or a subclass taking ``(code, message)``.
    """
    try:
        yield
    except ModelNotFound as exc:
        raise error(P.E_NOT_FOUND, str(exc)) from None
    except ModelCorrupt as exc:
        raise error(P.E_INVALID_INPUT, str(exc)) from None


class JobCancelled(Exception):
    """The job's ``cancelled()`` turned true; it stopped at a batch boundary."""


@dataclass
class Options:
    """Post-processing and batching options (defaults from the model card).

    Attributes:
        threshold: probability threshold, 0..1.
        min_area_m2: smallest object kept, m².
        max_hole_m2: holes below this are filled, m².
        simplify_m: polygon simplification tolerance, metres.
        batch_size: tiles per model call.
        tile_size, overlap: tiling in pixels (None: the card's).
        orthogonalize: replace near-rectangular polygons by rectangles.
    """

    threshold: float
    min_area_m2: float
    max_hole_m2: float
    simplify_m: float
    batch_size: int = 4
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    orthogonalize: bool = False

    @classmethod
    def from_request(cls, card: ModelCard, req: dict) -> "Options":
        return cls(threshold=float(req.get("threshold", card.threshold)),
                   min_area_m2=float(req.get("min_area_m2", card.min_area_m2)),
                   max_hole_m2=float(card.raw.get("max_hole_m2", 0.0)),
                   simplify_m=float(req.get("simplify_m", card.simplify_m)),
                   batch_size=int(req.get("batch_size", 4)),
                   orthogonalize=bool(req.get("orthogonalize",
                                              card.raw.get("orthogonalize", False))))


#: Words of the errors that device allocators raise (CUDA via PyTorch, ONNX Runtime).
_OOM_MARKERS = ("out of memory", "failed to allocate memory", "bad_alloc", "bad allocation",
                "cudaerrormemoryallocation", "cublas_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure of the inference device: ``MemoryError``,
    ``torch.cuda.OutOfMemoryError``, or an ONNX Runtime / CUDA error saying so."""
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
            DetectError: ``busy`` when even a single tile does not fit in memory.
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
                    raise DetectError(P.E_BUSY, f"the inference device ({engine.device}) "
                                                f"ran out of memory even for one tile: "
                                                f"free memory (close other GPU programs) "
                                                f"and try again") from None
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


def _round32(n: int) -> int:
    return max(32, int(np.ceil(n / 32.0)) * 32)


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
        tile_size, overlap: tiling in pixels (default: the card's). A grid smaller
            than a tile runs as one tile rounded up to a multiple of 32.
        warnings: notes for the user are appended here (out-of-memory back-off, see
            :class:`BatchBackoff`).

    Returns:
        ``(probs, valid, n_tiles)``: float32 (engine.channels, H, W) probabilities
        (background = 1 and the rest 0 on invalid pixels), bool (H, W) valid-data mask,
        and the number of tiles run (both tilings when the card asks for shifts).

    Raises:
        JobCancelled: ``cancelled()`` returned True.
    """
    card = engine.card
    tile_size = tile_size or card.tile_size
    overlap = card.overlap if overlap is None else overlap
    tile = min(tile_size, _round32(max(grid.height, grid.width)))
    if max(grid.height, grid.width) <= tile:
        overlap = 0
    offsets = tile_grid(grid.height, grid.width, tile, overlap)
    if card.shifts and max(grid.height, grid.width) > tile:
        # A second tiling offset by half a tile puts its tile borders on the first
        # one's tile centres. On a grid that fits in one tile there are no borders to
        # hide, and the shifted tiles would be half reflection padding: skip it.
        offsets += shifted_tile_grid(grid.height, grid.width, tile, overlap, tile // 2)
    stitch = Stitcher(engine.channels, grid.height, grid.width, tile, overlap)
    valid = np.zeros((grid.height, grid.width), bool)
    groups = list(batches(offsets, batch_size))
    backoff = BatchBackoff(batch_size, warnings)

    # Reader thread: reads batch i+1 while the model runs batch i (bounded queue).
    q: "queue.Queue" = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce():
        try:
            for group in groups:
                if stop.is_set():
                    return
                tiles = [reader.read(r, c, tile) for r, c in group]
                q.put((group, np.stack([t[0] for t in tiles]), [t[1] for t in tiles]))
            q.put(None)
        except BaseException as exc:  # surface read errors in the consumer
            q.put(exc)

    th = threading.Thread(target=produce, name="ortholens-reader", daemon=True)
    th.start()
    done = 0
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if cancelled and cancelled():
                raise JobCancelled()
            group, imgs, masks = item
            probs = backoff.predict(engine, imgs)
            for (r, c), p, m in zip(group, probs, masks):
                stitch.add(r, c, p)
                r0, c0 = max(r, 0), max(c, 0)
                r1, c1 = min(r + tile, grid.height), min(c + tile, grid.width)
                valid[r0:r1, c0:c1] |= m[r0 - r:r1 - r, c0 - c:c1 - c]
            done += len(group)
            if progress:
                progress(done / len(offsets), f"{done}/{len(offsets)} tiles")
    finally:
        stop.set()
        while th.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=0.05)
    probs = stitch.result()
    probs[:, ~valid] = 0.0
    probs[0, ~valid] = 1.0
    return probs, valid, len(offsets)


def detections_from_probs(probs: np.ndarray, valid: np.ndarray, grid: Grid,
                          card: ModelCard, opts: Options) -> Tuple[np.ndarray, List[Detection]]:
    """Cleaned class map (uint8 (H, W)) and polygons (grid CRS) from probabilities.

    Args:
        probs: float32 (channels, H, W) from :func:`predict_grid`: class
            probabilities, then (ensembles) each member's foreground probabilities.
    """
    px_area = grid.transform.a * -grid.transform.e
    c, k = card.num_outputs, len(card.classes)
    class_probs = probs[:c]
    members = probs[c:].reshape(-1, k, *probs.shape[1:]) if probs.shape[0] > c else None
    cmap = class_map(class_probs, opts.threshold)
    cmap[~valid] = 0
    cmap = clean_masks(cmap, k, int(round(opts.min_area_m2 / px_area)),
                       int(round(opts.max_hole_m2 / px_area)))
    dets = polygonize(cmap, class_probs, grid.transform, opts.simplify_m, opts.min_area_m2,
                      member_probs=members, threshold=opts.threshold,
                      ortho=opts.orthogonalize)
    return cmap, dets


def features(dets: List[Detection], card: ModelCard) -> List[Dict]:
    """Protocol ``result`` features for detections (see ``plugin/protocol.py``)."""
    import shapely
    return [{"wkt": shapely.to_wkt(d.geometry, rounding_precision=3), "class": card.class_name(d.class_id),
             "class_id": d.class_id, "score": round(d.score, 4),
             "agreement": round(d.agreement, 4),
             "area_m2": round(d.area_m2, 3), "model": card.id,
             "model_version": card.version} for d in dets]


def run_detect(request: dict, arrays: List[np.ndarray], progress: Optional[Progress] = None,
               cancelled: Optional[Callable[[], bool]] = None,
               engine: Optional[Engine] = None, overrides: Optional[Dict] = None,
               on_probs: Optional[Callable[[np.ndarray, np.ndarray, Grid], None]] = None
               ) -> Dict:
    """Run a validated ``detect`` request.

    Args:
        request: header validated by ``protocol.validate_request`` (type ``detect``).
        arrays: the request's array frames (the pixels for source kind ``pixels``).
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
        DetectError: unknown/corrupt model (``not_found`` / ``invalid_input``), unusable
            raster or extent (``invalid_input``, ``not_found``).
        JobCancelled: cancelled.
    """
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    with model_errors():
        card = load_card(request["model"])
        engine = engine or get_engine(card)
    opts = Options.from_request(card, request)
    for k, v in (overrides or {}).items():
        setattr(opts, k, v)
    progress(0.0, "reading raster")
    try:
        with open_source(request["source"], arrays[0] if arrays else None) as ds:
            grid = plan_grid(ds, request.get("extent"), request.get("extent_crs"),
                             card.gsd_m, card.bands, request.get("bands"))
            reader = WindowReader(ds, grid)
            try:
                probs, valid, n_tiles = predict_grid(reader, grid, engine, opts.batch_size,
                                                     lambda f, m: progress(0.9 * f, m),
                                                     cancelled, opts.tile_size, opts.overlap,
                                                     warnings=grid.warnings)
            finally:
                reader.close()
    except InputError as exc:
        raise DetectError(exc.code, exc.message) from None
    t_model = time.perf_counter() - t0
    if on_probs is not None:
        on_probs(probs, valid, grid)
    progress(0.92, "polygonizing")
    _, dets = detections_from_probs(probs, valid, grid, card, opts)
    feats = features(dets, card)
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
             "warnings": grid.warnings}
    progress(1.0, f"{len(feats)} polygons")
    return {"crs": grid.crs_wkt, "features": feats, "stats": stats}
