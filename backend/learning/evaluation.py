"""The evaluation of a retrained candidate: the current model and the candidate through
the ``detect`` pipeline (tiling, blending, threshold, cleaning) on

- ``user_holdout``: the held-out part of the user's corrections (never trained on);
- ``guard``: the model's pv01 validation tiles (:class:`backend.learning.data.GuardSet`),
  where forgetting would show;
- ``user_train``: the corrected areas trained on, only when the held-out corrections
  show no change in object errors (part (3) of the general rule);

:func:`gate` evaluates (:func:`evaluate`) and judges
(:func:`backend.learning.acceptance.judge`). The candidate is evaluated through the
predictor ``detect`` would use for it (:func:`candidate_predictor`: its fp16 weights, exactly
what would be saved).

The held-out part is judged with context: its pixels are read with a margin around
them (``backend.learning.corrections``), both models see that margin as they would in
a detection, and only the part itself is scored (``ReviewedData.scored``), so objects
cut by its border are judged on what the user's labels say inside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.inference.pipeline import Options, detections_from_probs, predict_grid
from backend.inference.predictors import Predictor
from backend.learning.acceptance import (Verdict, eval_areas, held_out_change, judge,
                                         metrics_summary, object_units)
from backend.learning.corrections import Corrections
from backend.learning.data import GuardSet, Tile
from backend.learning.reviewed import ReviewedData
from backend.models.card import ModelCard
from protocol.window import Window
from backend.models.torch_models import save_weights
from protocol.errors import JobCancelled
from protocol.metrics import Counts, compare

log = logging.getLogger("ortholens.retrain")

Progress = Callable[[float, str], None]
Cancelled = Optional[Callable[[], bool]]


class ArrayReader:
    """``WindowReader``'s interface over an image already in memory (a reviewed area)."""

    def __init__(self, image: np.ndarray, valid: np.ndarray):
        self.image, self.valid = image, valid

    def read(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """``(image (B, h, w), valid bool (h, w))`` of ``window`` (pixels of the image),
        padded by reflection (valid False) beyond the image."""
        h, w = self.valid.shape
        r0, c0 = max(window.row, 0), max(window.col, 0)
        r1, c1 = min(window.row_stop, h), min(window.col_stop, w)
        img = self.image[:, r0:r1, c0:c1]
        valid = self.valid[r0:r1, c0:c1]
        pads = ((r0 - window.row, window.row_stop - r1),
                (c0 - window.col, window.col_stop - c1))
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(r1 - r0, c1 - c0) > max(max(pads)) else "edge"
            img = np.pad(img, ((0, 0),) + pads, mode=mode)
            valid = np.pad(valid, pads, constant_values=False)
        return img, valid

    def close(self) -> None:
        """Nothing to close: the image is in memory."""


def predict_area(predictor: Predictor, area: ReviewedData, card: ModelCard,
                 cancelled: Cancelled = None) -> np.ndarray:
    """Cleaned class map (uint8 (H, W)) of ``predictor`` on an area in memory (the
    ``detect`` pipeline: tiling, blending, threshold, cleaning with the card's
    post-processing).

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    opts = Options.resolve(card)
    probs, valid, _ = predict_grid(ArrayReader(area.image, area.valid), area.grid, predictor,
                                   opts.batch_size, None, cancelled)
    cmap, _ = detections_from_probs(probs, valid & area.valid, area.grid, card, opts)
    return cmap


def eval_tiles(predictor: Predictor, card: ModelCard, tiles: Sequence[Tile],
               cancelled: Cancelled = None) -> Dict[str, Any]:
    """Metrics of the ``detect`` pipeline over pv01 tiles (photovoltaic class), as
    :func:`~backend.learning.acceptance.eval_areas` plus ``tiles``.

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    from backend.inference.grid import plan_grid
    from backend.inference.raster import WindowReader, open_source
    tot = Counts()
    wrong, area_m2 = 0, 0.0
    opts = Options.resolve(card)
    for t in tiles:
        if cancelled and cancelled():
            raise JobCancelled()
        with open_source({"kind": "file", "path": str(t.image_path)}) as ds:
            grid = plan_grid(ds, None, None, card.gsd_m, card.bands)
            reader = WindowReader(ds, grid)
            try:
                probs, valid, _ = predict_grid(reader, grid, predictor, opts.batch_size)
            finally:
                reader.close()
        cmap, _ = detections_from_probs(probs, valid, grid, card, opts)
        _, mask = t.read()
        if mask.shape != cmap.shape:  # the grid of a tile is the tile itself at 0.1 m
            h, w = min(mask.shape[0], cmap.shape[0]), min(mask.shape[1], cmap.shape[1])
            mask, cmap = mask[:h, :w], cmap[:h, :w]
        tot.add(compare(cmap == 1, mask == 1))
        wrong += int(((cmap == 1) != (mask == 1)).sum())
        area_m2 += cmap.size * card.gsd_m ** 2
    s = metrics_summary(tot, area_m2, wrong)
    s["tiles"] = len(tiles)
    return s


#: The current model's guard numbers per (model, weights, tiles): they do not change.
_GUARD_CACHE: Dict[Tuple, Dict[str, Any]] = {}


def _guard_key(card: ModelCard, tiles: Sequence[Tile]) -> Tuple:
    return (card.id, card.version, str(card.weights_path),
            card.weights_path.stat().st_mtime, tuple(str(t.image_path) for t in tiles))


def guard_known(card: ModelCard, guard: Optional[GuardSet]) -> bool:
    """Whether the current model's guard numbers are known in this process (the gate
    then runs only the candidate on the guard tiles)."""
    return bool(guard) and _guard_key(card, guard.tiles) in _GUARD_CACHE


def _guard_before(predictor: Predictor, card: ModelCard, tiles: List[Tile],
                  cancelled: Cancelled) -> Dict[str, Any]:
    key = _guard_key(card, tiles)
    if key not in _GUARD_CACHE:
        _GUARD_CACHE[key] = eval_tiles(predictor, card, tiles, cancelled)
    return dict(_GUARD_CACHE[key])


def evaluate(card: ModelCard, current: Predictor, candidate: Predictor, corr: Corrections,
             guard: Optional[GuardSet], progress: Progress,
             cancelled: Cancelled = None
             ) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """The numbers :func:`~backend.learning.acceptance.judge` compares, for the current
    model and the candidate.

    Args:
        card: the current model's card (the candidate shares its post-processing).
        current, candidate: their predictors.
        corr: the corrections (``holdout`` and ``train`` areas, with the current
            model's class maps in ``pred``).
        guard: the guard tiles, or None / empty to skip the guard.
        progress: receives (fraction 0..1 of this evaluation, message naming what is
            evaluated).
        cancelled: polled between tiles and batches.

    Returns:
        ``(before, after, change)``: ``before`` and ``after`` each ``{"user_holdout":
        {...}, "guard"?: {...}, "user_train"?: {...}}`` (see
        :func:`~backend.learning.acceptance.eval_areas`, :func:`eval_tiles`), ``change``
        the held-out change with its bootstrap interval
        (:func:`~backend.learning.acceptance.held_out_change`).

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    progress(0.0, "the held-out corrections")
    preds_b = [a.pred for a in corr.holdout]
    preds_a = [predict_area(candidate, a, card, cancelled) for a in corr.holdout]
    before = {"user_holdout": eval_areas(corr.holdout, card, preds_b)}
    after = {"user_holdout": eval_areas(corr.holdout, card, preds_a)}
    change = held_out_change(object_units(corr.holdout, card, preds_b, preds_a))
    if guard:
        progress(0.35, f"{len(guard)} pv01 validation tiles (guard)")
        before["guard"] = _guard_before(current, card, guard.tiles, cancelled)
        after["guard"] = eval_tiles(candidate, card, guard.tiles, cancelled)
    ub, ua = before["user_holdout"], after["user_holdout"]
    if (ua["object_errors"] == ub["object_errors"] and corr.train
            and not (cancelled and cancelled())):
        progress(0.6, "the corrected areas trained on")
        before["user_train"] = eval_areas(corr.train, card, [a.pred for a in corr.train])
        after["user_train"] = eval_areas(corr.train, card,
                                         [predict_area(candidate, a, card, cancelled)
                                          for a in corr.train])
    return before, after, change


# ----------------------------------------------------------------------------- the gate

@dataclass
class Gate:
    """What the gate measured and said about a candidate.

    Attributes:
        before, after, change: :func:`evaluate`'s numbers.
        verdict: :func:`~backend.learning.acceptance.judge`'s verdict.
    """

    before: Dict[str, Any]
    after: Dict[str, Any]
    change: Dict[str, Any]
    verdict: Verdict


def gate(card: ModelCard, current: Predictor, candidate: Predictor, corr: Corrections,
         guard: Optional[GuardSet], max_iou_drop: float, scope: str, progress: Progress,
         cancelled: Cancelled = None) -> Gate:
    """Evaluate a candidate (:func:`evaluate`) and judge it by the rule of ``scope``
    (:func:`~backend.learning.acceptance.judge`; ``max_iou_drop``: the largest pixel
    IoU drop allowed).

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    before, after, change = evaluate(card, current, candidate, corr, guard, progress,
                                     cancelled)
    return Gate(before, after, change, judge(before, after, change, max_iou_drop, scope))


def candidate_predictor(card: ModelCard, model, folder: Path) -> Predictor:
    """Save the candidate's fp16 weights in ``folder``, export them to ONNX and return
    an ONNX Runtime predictor over them: the predictor ``detect`` would use for the new
    version on a CPU. On a GPU, or when the export fails, a PyTorch predictor over the
    in-memory module.

    Args:
        card: the fine-tuned model's card (the candidate shares all but its weights).
        model: the candidate's torch module (eval mode, on the CPU).
        folder: where its ``weights.safetensors`` and ``model.onnx`` are written.
    """
    import contextlib
    import sys

    from backend.inference.predictors import OnnxPredictor, TorchPredictor, cuda_available
    from backend.models.export import export_onnx
    save_weights(model.state_dict(), folder / "weights.safetensors")
    cand_card = card.updated({"weights": "weights.safetensors", "onnx": "model.onnx",
                              "graphs": {}, "quantization": None}, folder)
    if cuda_available():
        return TorchPredictor(card, "cuda:0", model=model.to("cuda:0"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the daemon's stdout is reserved
            export_onnx(cand_card)
        return OnnxPredictor(cand_card)
    except Exception as exc:
        log.warning("candidate ONNX export failed (%s); evaluating with PyTorch", exc)
        for p in folder.glob("*.onnx*"):
            p.unlink()
        return TorchPredictor(card, "cpu", model=model)


def choose_guard(card: ModelCard, wanted: Optional[bool], sources: List[str],
                 warnings: List[str]) -> Optional[GuardSet]:
    """The guard of a retrain: the model's pv01 validation tiles (not those of a site
    it never saw, nor those among the corrected rasters), or None when it is skipped.

    Args:
        card: the model retrained.
        wanted: the request's ``guard`` (False: skipped).
        sources: real paths of the corrected rasters
            (:func:`~backend.learning.reviewed.file_sources`).
        warnings: receives why the guard was skipped, when it was not asked to be.
    """
    if wanted is False:
        return None
    try:
        guard = GuardSet.of([n for n in card.val_names if n not in card.left_out_names],
                            sources)
    except FileNotFoundError as exc:
        warnings.append(f"pv01 data missing ({exc}); the forgetting guard was skipped")
        return None
    if not guard:
        warnings.append("no pv01 validation tiles to check (the model's card names none, "
                        "or all are among the corrected rasters); the forgetting guard "
                        "was skipped")
        return None
    return guard


def guard_pixels(guard: Optional[GuardSet], gsd_m: float) -> int:
    """Pixels of the guard tiles at the model GSD ``gsd_m`` (0 without a guard)."""
    if not guard:
        return 0
    import rasterio
    n = 0
    for t in guard.tiles:
        with rasterio.open(t.image_path) as ds:
            n += int(ds.width * ds.height * (abs(ds.res[0]) / gsd_m) ** 2)
    return n
