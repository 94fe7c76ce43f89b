"""A ``region`` request: the object under a click, grown on the model's probabilities.

:func:`run_region` reads a square window (``protocol.review.REGION_WINDOW_PX`` pixels
at the model's GSD by default) centred on the click, runs the one pipeline's
probabilities on it (:meth:`backend.inference.pipeline.RegionDetector.probabilities`)
and keeps the 8-connected pixels whose best class probability reaches the relaxed
threshold around the core that holds the click (:func:`grow`: hysteresis region growing
on the probabilities; a click within ``protocol.review.REGION_SNAP_PX`` pixels of the
object grows from it).
Its small holes are filled as a detection's are, and it is polygonized by the same code
(``backend.inference.postprocess.polygonize``), so a clicked object looks like a
detected one. On a CPU a click takes about 0.3 s with the shipped model (one tile; the
measurement: ``docs/review.md``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from scipy import ndimage

from backend.inference.grid import plan_grid
from backend.inference.objects import features, min_sizes_px, output_crs
from backend.inference.pipeline import Options, RegionDetector, input_errors, model_errors
from backend.inference.postprocess import clean_masks, polygonize
from backend.inference.predictors import Predictor, get_predictor
from backend.inference.raster import WindowReader, open_source
from backend.models.catalog import load_card
from protocol.review import REGION_SNAP_PX, REGION_THRESHOLD, REGION_WINDOW_PX, RegionParams

_EIGHT = np.ones((3, 3), bool)
#: The core of a clicked object: pixels at this share of the peak probability or more.
CORE = 0.95
#: How far the core grows back to the object's edge, pixels at the model's GSD.
GROW_PX = 6
#: Nothing is found where no probability near the click reaches this.
MIN_PEAK = 0.05


def grow(class_probs: np.ndarray, valid: np.ndarray, row: int, col: int,
         threshold: float, snap_px: int = REGION_SNAP_PX
         ) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """The class map of the object grown from pixel ``(row, col)``: hysteresis region
    growing on the best foreground probability ``p``.

    1. ``peak``: the highest ``p`` within ``snap_px`` of the click (valid pixels);
       nothing is found below :data:`MIN_PEAK`;
    2. the *core*: the 8-connected pixels with ``p >= CORE * peak`` (:data:`CORE`)
       holding the nearest such pixel to the click. Panel arrays side by side merge at
       the detection's threshold but keep a valley of probability between them, so the
       core is the array clicked;
    3. the core grown back by up to :data:`GROW_PX` pixels (8-connected steps) over
       pixels with ``p >= min(threshold, CORE * peak / 2)`` outside every other core:
       the array's edge, where the probability falls off, not its neighbour.

    On the pv01 reference panels (held-out and out of fold) this outlines 96 % of the
    panels the model finds and 6 of 10 it misses at IoU >= 0.7, where a fixed
    threshold of 0.3 gives 91 % and 1 of 10 (``docs/review.md``).

    Args:
        class_probs: float32 (1 + classes, H, W) fused class probabilities.
        valid: bool (H, W) valid-data mask.
        row, col: the click, pixels of the window (may lie outside it).
        threshold: the relaxed threshold, 0..1: the lowest probability grown over.
        snap_px: how far from the click the object may start, pixels (Euclidean).

    Returns:
        ``(uint8 (H, W) class map, seed)``: the object labelled with the class of
        highest mean probability over it; ``seed`` the ``(row, col)`` its core holds,
        or ``(all zeros, None)`` when nothing reaches :data:`MIN_PEAK` near the click.
    """
    fg = np.where(valid, class_probs[1:].max(axis=0), 0.0)
    out = np.zeros(fg.shape, np.uint8)
    near = _near(fg.shape, row, col, snap_px)
    peak = float(fg[near].max()) if near.any() else 0.0
    if peak < MIN_PEAK:
        return out, None
    core_t = CORE * peak
    seed = _seed(fg >= core_t, near, row, col)
    lab, _ = ndimage.label(fg >= core_t, structure=_EIGHT)
    obj = lab == lab[seed]
    # the edge, not another core: a neighbouring array stays out
    low = (fg >= min(threshold, core_t / 2.0)) & ((lab == 0) | obj)
    for _ in range(GROW_PX):
        obj = ndimage.binary_dilation(obj, _EIGHT) & low
    k = int(np.argmax([class_probs[c][obj].mean() for c in range(1, class_probs.shape[0])]))
    out[obj] = k + 1
    return out, seed


def _near(shape: Tuple[int, int], row: int, col: int, snap_px: int) -> np.ndarray:
    """bool (H, W): the pixels within ``snap_px`` (Euclidean) of ``(row, col)``."""
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= snap_px ** 2


def _seed(mask: np.ndarray, near: np.ndarray, row: int, col: int) -> Tuple[int, int]:
    """The pixel of ``mask & near`` nearest ``(row, col)`` (ties: the first in raster
    order); the caller knows there is one."""
    rr, cc = np.nonzero(mask & near)
    i = int(np.argmin((rr - row) ** 2 + (cc - col) ** 2))
    return int(rr[i]), int(cc[i])


def _window_extent(ds, params: RegionParams, gsd_m: float, side_px: int
                   ) -> Tuple[Tuple[float, float, float, float], Tuple[float, float]]:
    """``(extent, click)`` in the raster's CRS: the square of ``side_px`` model pixels
    centred on the click (metres turned into degrees for a geographic raster), and the
    click itself."""
    from rasterio.crs import CRS
    from rasterio.warp import transform
    crs = CRS.from_user_input(params.crs)
    x, y = float(params.x), float(params.y)
    if crs != ds.crs:
        xs, ys = transform(crs, ds.crs, [x], [y])
        x, y = xs[0], ys[0]
    half = side_px * gsd_m / 2.0
    if ds.crs.is_geographic:
        half /= 111_320.0
    return (x - half, y - half, x + half, y + half), (x, y)


def run_region(request: Union[RegionParams, Mapping[str, Any]], arrays: List[np.ndarray],
               progress=None, cancelled=None,
               predictor: Optional[Predictor] = None) -> Dict[str, Any]:
    """Run a ``region`` request (the daemon's job function).

    Args:
        request: the validated header (type ``region``) or its
            :class:`~protocol.review.RegionParams`.
        arrays: the request's array frames (the pixels of a ``pixels`` source).
        progress: receives (fraction 0..1, message); cancelled: polled between tiles.
        predictor: a predictor to use instead of the cached one (tests).

    Returns:
        ``{"crs": WKT, "features": [0 or 1 feature], "stats": {...}}``: the grown
        polygon in the raster's CRS with the result fields (its ``score`` the mean
        probability over it); ``stats``: ``seconds``, ``threshold``, ``window_px``,
        ``seed`` (window pixel grown from, or None), ``touches_edge`` (the object
        reaches the window's edge: it may be cut), ``found``.

    Raises:
        JobError: unknown model, unusable raster or a click outside it
            (``invalid_input`` / ``not_found``).
    """
    t0 = time.perf_counter()
    params = request if isinstance(request, RegionParams) else RegionParams.from_header(request)
    threshold = params.threshold if params.threshold is not None else REGION_THRESHOLD
    side = params.window_px or REGION_WINDOW_PX
    with model_errors():
        card = load_card(params.model)
    with input_errors(), open_source(params.source, arrays[0] if arrays else None) as ds:
        extent, click = _window_extent(ds, params, card.gsd_m, side)
        ds_wkt = ds.crs.to_wkt()
        grid = plan_grid(ds, list(extent), None, card.gsd_m, card.bands, params.bands)
        with model_errors():  # the graph detect runs on this layer
            predictor = predictor or get_predictor(card, layer_gsd_m=grid.src_gsd)
        reader = WindowReader(ds, grid)
        try:
            opts = Options.resolve(card)
            det = RegionDetector(card, predictor, reader, grid, opts)
            st = det.probabilities(det.whole, progress, cancelled)
        finally:
            reader.close()
    row, col = _click_pixel(grid, ds_wkt, click)
    cmap, seed = grow(st.probs[:card.num_outputs], st.valid, row, col, threshold)
    dets = []
    if seed is not None:
        _, max_hole = min_sizes_px(opts, grid.transform)
        cmap = clean_masks(cmap, len(card.classes), 1, max_hole)
        class_probs = st.probs[:card.num_outputs]
        dets = polygonize(cmap, class_probs, grid.transform, opts.simplify_m, 0.0,
                          threshold=opts.threshold, ortho=opts.orthogonalize)
    edge = bool(cmap[0].any() or cmap[-1].any() or cmap[:, 0].any() or cmap[:, -1].any())
    stats = {"seconds": round(time.perf_counter() - t0, 3), "threshold": threshold,
             "window_px": side, "seed": list(seed) if seed else None,
             "touches_edge": edge, "found": bool(dets), "model": card.id}
    return {"crs": output_crs(grid), "features": features(dets, card, grid),
            "stats": stats}


def _click_pixel(grid, ds_crs_wkt: str, click: Tuple[float, float]) -> Tuple[int, int]:
    """The click (raster CRS) as ``(row, col)`` of the grid (whose CRS may differ)."""
    from rasterio.warp import transform
    x, y = click
    if grid.crs_wkt != ds_crs_wkt:
        xs, ys = transform(ds_crs_wkt, grid.crs_wkt, [x], [y])
        x, y = xs[0], ys[0]
    col, row = (~grid.transform) @ (x, y)
    return int(np.floor(row)), int(np.floor(col))
