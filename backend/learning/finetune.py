"""Fine-tune a model on the user's corrections (the ``train`` step of a retrain).

:func:`finetune` trains the selected model from its current weights within a budget:
chips from the corrected areas, most centred on a mistake (hard-example mining,
:class:`~backend.learning.samplers.ChipSampler`) with pixel loss weights
``mistake_weight`` on mistake pixels and 1 elsewhere, mixed with a *replay* sample of
the model's pv01 fit tiles (:class:`backend.learning.data.ReplaySet`,
:class:`~backend.learning.samplers.ReplaySampler`; ``replay_fraction`` of each batch)
so the model does not forget; loss = weighted cross-entropy + soft Dice
(:mod:`backend.learning.losses`); flips, 90-degree rotations and colour jitter
(:mod:`backend.learning.augment`); AdamW with warm-up and cosine decay over the steps
(or the budget). The encoder is trained at a tenth of the decoder's learning rate,
because adapting the features is what carries a correction over to areas the user did
not review, while a small rate keeps them close to what the pv01 training taught;
batch-norm statistics stay frozen (the few corrected chips would skew them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import protocol as P
from backend.config import train_threads
from backend.learning.augment import augment_weighted_batch, normalize_batch
from backend.learning.data import ReplaySet
from backend.learning.losses import weighted_dice_ce_loss
from backend.learning.optim import lr_factor, optimizer_step
from backend.learning.reviewed import ReviewedData
from backend.learning.samplers import Chip, ChipSampler, ReplaySampler
from backend.models.area import AREA_MARGIN_M
from backend.models.card import ModelCard
from backend.models.torch_models import load_torch_model
from protocol.errors import JobCancelled, JobError
from protocol.params import RetrainParams

Progress = Callable[[float, str], None]


@dataclass
class RetrainConfig:
    """Fine-tuning hyper-parameters; a request's :class:`RetrainParams` override the
    defaults (:meth:`from_params`).

    Attributes:
        budget_s: wall-clock budget, seconds: of the whole job in
            :func:`backend.learning.retrain.run_retrain` (which gives the training what
            preparing and checking leave), of the training alone in :func:`finetune`.
        steps: fixed number of steps (reproducible), or None to run until the budget.
        seed: seed of the chip sampling, augmentation and torch.
        batch_size, chip: chips per step and their side (px).
        lr, weight_decay: AdamW of the decoder and head (the encoder gets lr / 10).
        replay_fraction: share of each batch from the replay set.
        mistake_weight: loss weight of mistake pixels (1 elsewhere).
        hard_fraction: share of correction chips centred on a mistake.
        train_encoder: also train the encoder (at lr / 10); False: decoder and head.
        warmup: warm-up steps.
        holdout_fraction: share of the reviewed areas held out to evaluate.
        max_iou_drop: largest pixel IoU drop the acceptance rule allows.
        scope: ``"area"``: a version for the area it was taught on (the guard warns);
            ``"general"``: one for everywhere (the guard vetoes).
        site_margin_m: how far an area version's area reaches beyond the reviewed
            extents, metres (:data:`backend.models.area.AREA_MARGIN_M`).

    ``scope`` and ``site_margin_m`` keep the names of the request's fields; every field
    is recorded under its name in the version's lineage (``config``) and the MLflow
    run.
    """

    budget_s: float = 120.0
    steps: Optional[int] = None
    seed: int = 0
    batch_size: int = 8
    chip: int = 192
    lr: float = 2e-4
    weight_decay: float = 1e-4
    replay_fraction: float = 0.5
    mistake_weight: float = 5.0
    hard_fraction: float = 0.7
    train_encoder: bool = True
    warmup: int = 5
    holdout_fraction: float = 0.25
    max_iou_drop: float = 0.02
    scope: str = "area"
    site_margin_m: float = AREA_MARGIN_M

    @classmethod
    def from_params(cls, params: RetrainParams) -> "RetrainConfig":
        """The defaults, with every field ``params`` gives (not None) taken from it."""
        cfg = cls()
        names = {f.name for f in fields(cls)}
        for f in fields(params):
            value = getattr(params, f.name)
            if f.name in names and value is not None:
                default = getattr(cfg, f.name)
                setattr(cfg, f.name, type(default)(value) if default is not None else value)
        return cfg


# ----------------------------------------------------------------------------- training

def _freeze_bn(model) -> None:
    import torch
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()


def _param_groups(model, lr: float, train_encoder: bool) -> Tuple[List[Dict[str, Any]], bool]:
    """AdamW groups: decoder and head at ``lr``, the encoder at ``lr / 10`` (or frozen);
    returns ``(groups, encoder trained)``."""
    enc = getattr(model, "encoder", None)
    enc_params = list(enc.parameters()) if enc is not None else []
    enc_ids = {id(p) for p in enc_params}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    groups = [{"params": rest, "lr": lr}]
    if train_encoder and enc_params:
        groups.append({"params": enc_params, "lr": lr * 0.1})
    else:
        for p in enc_params:
            p.requires_grad_(False)
    return groups, bool(train_encoder and enc_params)


def expected_steps(done: int, elapsed_s: float, budget_s: float, steps: Optional[int],
                   step_s: float) -> int:
    """How many training steps a fine-tuning will have run when it stops.

    Args:
        done: steps run so far; elapsed_s: their time, seconds.
        budget_s: the training budget, seconds; steps: the fixed step count, or None.
        step_s: the recent time of one step, seconds.

    Returns:
        ``done`` plus the steps that still fit in the budget (never more than ``steps``).
    """
    fit = done + (int(max(0.0, budget_s - elapsed_s) // step_s) if step_s > 0 else 0)
    return max(done, min(fit, steps) if steps else fit)


def finetune(card: ModelCard, areas: Sequence[ReviewedData], cfg: RetrainConfig,
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None,
             device: Optional[str] = None,
             clock: Callable[[], float] = time.monotonic) -> Tuple[Any, Dict[str, Any]]:
    """Fine-tune ``card``'s model on corrected areas (+ replay) within the budget.

    Args:
        card: a single model with weights.
        areas: the corrected areas to train on (may be empty: replay only).
        cfg: the hyper-parameters.
        progress: receives (fraction 0..1, message ``"step i/n, loss x"``, ``n`` the
            steps expected to fit in the budget) about once a second.
        cancelled: polled every step.
        device: ``"cpu"``, ``"cuda"``; default CUDA when available.
        clock: the monotonic clock, seconds, ``cfg.budget_s`` is measured with (a
            retrain passes its :class:`~backend.learning.time_plan.TimePlan`'s).

    Returns:
        ``(model, info)``: the torch module (eval mode, on the CPU, weights rounded to
        fp16 as they will be saved) and ``{steps, seconds, final_loss, ...}``.

    Raises:
        JobCancelled: ``cancelled()`` turned true.
        JobError: no training data at all (``invalid_input``).
    """
    import torch

    progress = progress or (lambda f, m: None)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = train_threads()
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = load_torch_model(card, device)
    model.train()
    _freeze_bn(model)
    groups, encoder_trained = _param_groups(model, cfg.lr, bool(cfg.train_encoder))
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = _batches(card, areas, cfg, rng)
    fit = _fit(model, opt, batches, card, cfg, rng, device, progress, cancelled, clock)
    model = _as_saved(model)
    if device == "cpu":
        torch.set_num_threads(threads)
    losses, durations = fit.losses, fit.durations
    info = {"steps": fit.steps, "seconds": round(fit.seconds, 1), "device": device,
            "threads": threads, "train_encoder": encoder_trained,
            "batch_size": batches.size, "chip": cfg.chip,
            "correction_chips_per_batch": batches.n_corr,
            "replay_tiles": batches.replay_tiles,
            "step_seconds": round(float(np.mean(durations)), 3) if durations else None,
            "final_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "first_loss": round(float(np.mean(losses[:5])), 4) if losses else None,
            "torch": torch.__version__}
    return model, info


@dataclass
class _Batches:
    """Where a fine-tuning's chips come from: ``n_corr`` of each batch of ``size``
    from the corrected areas, the rest from the replay tiles (``replay_tiles`` of
    them)."""

    corr: Optional[ChipSampler]
    rep: Optional[ReplaySampler]
    replay_tiles: int
    size: int
    n_corr: int

    def draw(self) -> List[Chip]:
        """One batch of chips, the corrected ones first."""
        return ([self.corr.sample() for _ in range(self.n_corr)]
                + [self.rep.sample() for _ in range(self.size - self.n_corr)])


def _batches(card: ModelCard, areas: Sequence[ReviewedData], cfg: RetrainConfig,
             rng: np.random.Generator) -> _Batches:
    """The samplers of a fine-tuning and their shares of a batch.

    Raises:
        JobError: neither corrected areas nor replay data.
    """
    corr = ChipSampler(areas, cfg.chip, rng, cfg.hard_fraction) if areas else None
    if corr is not None and not len(corr):
        corr = None
    # never the tiles it was validated on, nor a site it never saw
    replay = (ReplaySet.without(list(card.val_names) + card.left_out_names)
              if cfg.replay_fraction > 0 else None)
    rep = (ReplaySampler(replay.arrays, cfg.chip, rng)
           if replay is not None and replay.arrays is not None else None)
    if corr is None and rep is None:
        raise JobError("no training data: the reviewed areas are empty and the pv01 "
                       "replay data is missing", P.E_INVALID_INPUT)
    bs = int(cfg.batch_size)
    n_corr = bs if rep is None else (0 if corr is None else
                                     max(1, int(round(bs * (1 - cfg.replay_fraction)))))
    return _Batches(corr, rep, replay.n if rep is not None else 0, bs, n_corr)


@dataclass
class _Fit:
    """What the training loop did: its steps, their losses and durations (seconds),
    and its time, seconds."""

    steps: int
    losses: List[float]
    durations: List[float]
    seconds: float


def _fit(model, opt, batches: _Batches, card: ModelCard, cfg: RetrainConfig,
         rng: np.random.Generator, device: str, progress: Progress,
         cancelled: Optional[Callable[[], bool]],
         clock: Callable[[], float] = time.monotonic) -> _Fit:
    """Run optimiser steps until ``cfg.budget_s`` of ``clock`` or ``cfg.steps`` (a step
    that would end after the budget, at the mean time of the last five, is not
    started); ``cancelled()`` is checked before every step.

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    base_lrs = [g["lr"] for g in opt.param_groups]
    n_classes = len(card.classes)
    t0 = clock()
    step, losses, durations = 0, [], []
    last_report = 0.0
    while True:
        elapsed = clock() - t0
        step_s = float(np.mean(durations[-5:])) if durations else 0.0
        if elapsed + step_s > cfg.budget_s or (cfg.steps is not None and step >= cfg.steps):
            break
        if cancelled and cancelled():
            raise JobCancelled()
        frac = step / cfg.steps if cfg.steps else elapsed / cfg.budget_s
        if cfg.steps:
            frac = max(frac, elapsed / cfg.budget_s)
        factor = lr_factor(step, frac, cfg.warmup, 0.05)
        for g, lr0 in zip(opt.param_groups, base_lrs):
            g["lr"] = lr0 * factor
        x, y, w = _batch(batches, card, rng, device)
        t_step = clock()
        losses.append(optimizer_step(
            model, opt, x, lambda logits: weighted_dice_ce_loss(logits, y, w, n_classes),
            device))
        step += 1
        now = clock()
        durations.append(now - t_step)
        if now - last_report > 1.0:
            last_report = now
            total = expected_steps(step, now - t0, cfg.budget_s, cfg.steps,
                                   float(np.mean(durations[-5:])))
            progress(min(1.0, (now - t0) / cfg.budget_s if not cfg.steps else
                         max(step / total, (now - t0) / cfg.budget_s)),
                     f"step {step}/{total}, loss {np.mean(losses[-10:]):.3f}")
    return _Fit(step, losses, durations, clock() - t0)


def _batch(batches: _Batches, card: ModelCard, rng: np.random.Generator, device: str):
    """One augmented batch on ``device``: ``(x float32 (N, B, chip, chip) normalised,
    y int64 (N, chip, chip), w float32 (N, chip, chip))`` torch tensors."""
    import torch
    items = batches.draw()
    x = normalize_batch(np.stack([it[0] for it in items]).astype(np.float32),
                        card.normalize)
    y = torch.from_numpy(np.stack([it[1] for it in items]))
    w = torch.from_numpy(np.stack([it[2] for it in items]))
    x, y, w = augment_weighted_batch(x, y, w, rng)
    return x.to(device), y.to(device), w.to(device)


def _as_saved(model):
    """The trained module on the CPU in eval mode, its weights rounded to fp16: exactly
    what will be saved, so that what is evaluated is what is kept."""
    import torch
    model = model.to("cpu").eval()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dtype.is_floating_point:
                t.copy_(t.half().float())
    return model
