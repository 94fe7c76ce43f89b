"""A detect job: the objects of one extent, as the daemon runs a ``detect`` request.

:func:`run_detect` plans the grid at the model's GSD over the extent
(``backend.inference.grid``), opens a reader on it (``backend.inference.raster``) and runs
the one pipeline (``backend.inference.pipeline.RegionDetector``) over a single region
that covers the whole grid: tiles, predictor, seamless stitching, post-processing and
polygons, exactly as every region of a batch job. It adds what a single detection has
and a batch job has not: the choice of a version by area (``by_area``) and the stats of
the reply.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from backend.inference import recent
from backend.inference.predictors import Predictor, get_predictor
from backend.inference.grid import Grid, layer_gsd, plan_grid
from backend.inference.objects import features, merged, output_crs
from backend.inference.pipeline import (Options, Progress, RegionDetector, RegionOutput,
                                        input_errors, model_errors)
from backend.inference.raster import WindowReader, open_source
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from protocol.choice import GsdChoice
from protocol.params import DetectParams
from protocol.review import CANDIDATE_LOW


def run_detect(request: Union[DetectParams, Mapping[str, Any]], arrays: List[np.ndarray],
               progress: Optional[Progress] = None,
               cancelled: Optional[Callable[[], bool]] = None,
               predictor: Optional[Predictor] = None, overrides: Optional[Dict[str, Any]] = None,
               on_probs: Optional[Callable[[np.ndarray, np.ndarray, Grid], None]] = None
               ) -> Dict:
    """Run a ``detect`` request.

    Args:
        request: the header validated by ``protocol`` (type ``detect``; the daemon's job
            contract), or its :class:`DetectParams`.
        arrays: the request's array frames (the pixels for a ``PixelSource``).
        progress: receives (fraction 0..1, message).
        cancelled: polled between batches.
        predictor: a predictor to use instead of the cached default (tests, benchmarks).
        overrides: :class:`~backend.inference.pipeline.Options` fields to force
            (evaluation of variants).
        on_probs: called with the stitched ``(probs, valid, grid)`` before
            post-processing (evaluation: calibration, precision-recall curves).

    Returns:
        ``{"crs": WKT, "features": [...], "candidates": [...], "stats": {...}}`` with
        geometries in the raster's CRS; each feature and candidate miss carries its
        ``uncertainty`` (``protocol.review``); candidates: objects whose probability
        lies in [``protocol.review.CANDIDATE_LOW``, threshold) meeting no detection.

    Raises:
        JobError: unknown/corrupt model (``not_found`` / ``invalid_input``), unusable
            raster or extent (``invalid_input``, ``not_found``), a device out of memory
            for a single tile (``busy``).
        JobCancelled: cancelled.
    """
    params = request if isinstance(request, DetectParams) else DetectParams.from_header(request)
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    progress(0.0, "reading raster")
    choice = None
    with input_errors(), open_source(params.source, arrays[0] if arrays else None) as ds:
        with model_errors():
            card, by_gsd = model_for(params, ds)
        grid = plan_grid(ds, params.extent, params.extent_crs, card.gsd_m, card.bands,
                         params.bands, stretch=params.stretch)
        with model_errors():  # the graph may depend on the layer's GSD
            predictor = predictor or get_predictor(card, layer_gsd_m=grid.src_gsd)
        if by_gsd is not None and not by_gsd.inside:
            grid.warnings.append(by_gsd.why)
        if params.by_area:
            card, predictor, choice = _area_version(card, grid, predictor)
        opts = dataclasses.replace(Options.resolve(card, params, grid.src_gsd),
                                   **(overrides or {}))
        reader = WindowReader(ds, grid)
        try:
            detector = RegionDetector(card, predictor, reader, grid, opts,
                                      warnings=grid.warnings)
            t_detect = time.perf_counter()
            out = detector.detect(
                detector.whole, lambda f, m: progress(0.9 * f, m), cancelled,
                on_probs=(lambda p, v, w: on_probs(p, v, grid)) if on_probs else None,
                candidates_low=CANDIDATE_LOW)
        finally:
            reader.close()
    key = recent.map_key(card, predictor, params.source.to_wire(), grid, opts)
    if key is not None:  # a file: its class map may serve a retrain of this area
        recent.remember(key, grid, merged(out.class_maps), out.valid, detector.model_seconds)
    progress(0.92, "polygonizing")
    feats = features(out.detections, card, grid, threshold=opts.threshold)
    cands = features(out.candidates, card, grid, threshold=opts.threshold)
    stats = _stats(grid, card, opts, predictor, feats, out, t0,
                   t_detect - t0 + out.probs_seconds)
    if choice is not None:
        stats["model_choice"] = choice
    if by_gsd is not None:
        stats["gsd_choice"] = by_gsd.to_wire()
    progress(1.0, f"{len(feats)} polygons")
    return {"crs": output_crs(grid), "features": feats, "candidates": cands,
            "stats": stats}


def model_for(params: DetectParams, ds) -> Tuple[ModelCard, Optional[GsdChoice]]:
    """The card a detection runs: the one ``params.model`` names, or, when it names
    none, the one chosen for the layer's GSD over the extent among the device's
    candidates (``backend.models.catalog.choose_for_layer``), with that choice.

    Raises:
        ModelNotFound, ModelCorrupt: the model is missing or unreadable.
        InputError: the raster has no CRS, or the extent misses it.
    """
    if params.model is not None:
        return load_card(params.model), None
    from backend.inference.predictors import cuda_available
    from backend.models.catalog import choose_for_layer, list_cards
    gsd = layer_gsd(ds, params.extent, params.extent_crs)
    choice = choose_for_layer(list_cards(), cuda_available(), gsd)
    return load_card(choice.model), choice


def _stats(grid: Grid, card, opts: Options, predictor, feats: List[Dict],
           out: RegionOutput, t0: float, t_model: float) -> Dict[str, Any]:
    """The ``stats`` of a detection's reply."""
    per_class: Dict[str, int] = {}
    for f in feats:
        per_class[f["class"]] = per_class.get(f["class"], 0) + 1
    elapsed = time.perf_counter() - t0
    area_km2 = grid.width * grid.height * (card.gsd_m ** 2) / 1e6
    return {"tiles": out.tiles, "width": grid.width, "height": grid.height,
            "gsd_m": card.gsd_m, "source_gsd_m": round(grid.src_gsd, 4),
            "area_km2": round(area_km2, 6), "valid_fraction": round(out.valid_fraction, 4),
            "seconds": round(elapsed, 3), "model_seconds": round(t_model, 3),
            "mpx_per_s": round(grid.width * grid.height / 1e6 / max(elapsed, 1e-9), 3),
            "runtime": predictor.kind, "device": predictor.device, "per_class": per_class,
            "graph": _text(getattr(predictor, "graph", None)),
            "precision": _text(getattr(predictor, "precision", None)),
            "threshold": opts.threshold, "min_area_m2": opts.min_area_m2,
            "bands": list(grid.bands), "stretch": grid.stretch_info,
            "warnings": grid.warnings, "model": card.id, "model_version": card.version}


def _text(value: Any) -> Optional[str]:
    """``value`` when it is a string (the ONNX file an ``OnnxPredictor`` runs), else
    None (an imported model's graph object, a PyTorch predictor)."""
    return value if isinstance(value, str) else None


def _area_version(card, grid: Grid, predictor: Optional[Predictor]):
    """``(card, predictor, why)`` of a ``by_area`` detection: the version of ``card``'s
    lineage taught on the grid's area when one in use covers it
    (``backend.models.versions.version_for_extent``), else ``card`` itself; ``predictor``
    (a caller's) is kept only when the card is."""
    from backend.models.versions import version_for_extent
    t = grid.transform
    bounds = (t.c, t.f + grid.height * t.e, t.c + grid.width * t.a, t.f)
    chosen, why = version_for_extent(card.id, bounds, grid.crs_wkt)
    if chosen is None or chosen.id == card.id:
        return card, predictor, why
    with model_errors():
        return chosen, get_predictor(chosen, layer_gsd_m=grid.src_gsd), why
