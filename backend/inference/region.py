"""A ``region`` request: the object under a click, grown on the model's probabilities.

:func:`run_region` reads a square window (``protocol.review.REGION_WINDOW_PX`` pixels
at the model's GSD by default) centred on the click, runs the one pipeline's
probabilities on it (:meth:`backend.inference.pipeline.RegionDetector.probabilities`)
and keeps the 8-connected pixels whose best class probability reaches the relaxed
threshold and that hold the click (:func:`grow`; a click within
``protocol.review.REGION_SNAP_PX`` pixels of such a pixel grows from the nearest one).
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


def grow(class_probs: np.ndarray, valid: np.ndarray, row: int, col: int,
         threshold: float, snap_px: int = REGION_SNAP_PX
         ) -> Tuple[np.ndarray, Optional[Tuple[int, int]]]:
    """The class map of the object grown from pixel ``(row, col)``.

    Args:
        class_probs: float32 (1 + classes, H, W) fused class probabilities.
        valid: bool (H, W) valid-data mask.
        row, col: the click, pixels of the window (may lie outside it).
        threshold: the relaxed threshold, 0..1.
        snap_px: a click off the object grows from the nearest pixel at the
            threshold within this many pixels (Euclidean).

    Returns:
        ``(uint8 (H, W) class map, seed)``: the 8-connected component of pixels whose
        best foreground probability reaches ``threshold`` and that holds the seed,
        labelled with the class of highest mean probability over it; ``seed`` the
        ``(row, col)`` grown from, or ``(all zeros, None)`` when no such pixel lies
        within ``snap_px``.
    """
    fg = class_probs[1:].max(axis=0)
    mask = (fg >= threshold) & valid
    out = np.zeros(mask.shape, np.uint8)
    seed = _seed(mask, row, col, snap_px)
    if seed is None:
        return out, None
    lab, _ = ndimage.label(mask, structure=_EIGHT)
    obj = lab == lab[seed]
    k = int(np.argmax([class_probs[c][obj].mean() for c in range(1, class_probs.shape[0])]))
    out[obj] = k + 1
    return out, seed


def _seed(mask: np.ndarray, row: int, col: int, snap_px: int
          ) -> Optional[Tuple[int, int]]:
    """The pixel of ``mask`` at ``(row, col)``, else the nearest one within ``snap_px``
    (ties: the first in raster order), else None."""
    h, w = mask.shape
    if 0 <= row < h and 0 <= col < w and mask[row, col]:
        return row, col
    r0, r1 = max(0, row - snap_px), min(h, row + snap_px + 1)
    c0, c1 = max(0, col - snap_px), min(w, col + snap_px + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    rr, cc = np.nonzero(mask[r0:r1, c0:c1])
    if not len(rr):
        return None
    d2 = (rr + r0 - row) ** 2 + (cc + c0 - col) ** 2
    i = int(np.argmin(d2))
    if d2[i] > snap_px ** 2:
        return None
    return int(rr[i] + r0), int(cc[i] + c0)


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
        predictor = predictor or get_predictor(card)
    with input_errors(), open_source(params.source, arrays[0] if arrays else None) as ds:
        extent, click = _window_extent(ds, params, card.gsd_m, side)
        ds_wkt = ds.crs.to_wkt()
        grid = plan_grid(ds, list(extent), None, card.gsd_m, card.bands, params.bands)
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
