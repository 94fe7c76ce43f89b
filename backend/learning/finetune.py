"""Fine-tune a model on the user's corrections; keep the result only when it is better.

:func:`run_retrain` is what the daemon runs for a ``retrain`` request (see
``protocol.wire``). Steps:

1. **corrections** (:mod:`backend.learning.corrections`): read the reviewed areas, run
   the current model, diff with the corrected polygons, split the areas into a train
   part and a held-out part;
2. **fine-tune** (:func:`finetune`) the selected model from its current weights within
   the time budget: chips from the corrected areas, most centred on a mistake
   (hard-example mining) with pixel loss weights ``mistake_weight`` on mistake pixels
   and 1 elsewhere, mixed with a *replay* sample of the model's pv01 fit tiles
   (:class:`backend.learning.data.ReplaySet`; ``replay_fraction`` of each batch) so the
   model does not forget; loss = weighted cross-entropy + soft Dice
   (:mod:`backend.learning.losses`); flips, 90-degree rotations and colour jitter
   (:mod:`backend.learning.augment`); AdamW with warm-up and cosine decay over the
   steps (or the budget). The encoder is trained at a tenth of the decoder's learning
   rate, because adapting the features is what carries a correction over to areas the
   user did not review, while a small rate keeps them close to what the pv01 training
   taught; batch-norm statistics stay frozen (the few corrected chips would skew
   them);
3. **evaluate** the current model and the candidate (its fp16-rounded weights, exactly
   what would be saved, through the engine ``detect`` would use) on the held-out
   corrections and the guard (:mod:`backend.learning.acceptance`);
4. **decide** with :data:`~backend.learning.acceptance.ACCEPTANCE_RULE` (written into
   every new card): register a new version (:mod:`backend.models.versions`: atomic,
   with lineage) and make it active, or report why the candidate was rejected. Every
   run, accepted, rejected, failed or cancelled, is logged to the MLflow file store
   ``<user models>/mlruns``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import protocol as P
from backend.config import train_threads
from backend.inference.detect import model_errors
from backend.inference.engines import Engine, get_engine
from backend.learning.acceptance import ACCEPTANCE_RULE, decide, evaluate
from backend.learning.augment import augment_weighted_batch, normalize_batch
from backend.learning.corrections import AreaData, ChipSampler, build_corrections
from backend.learning.data import GuardSet, ReplaySet, tile_sampling_weights
from backend.learning.losses import weighted_dice_ce_loss
from backend.learning.optim import lr_factor, optimizer_step
from backend.models import versions as V
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from backend.models.torch_models import load_torch_model, save_weights
from protocol.errors import CorrectionsError, JobCancelled, JobError
from protocol.params import FileSource, RetrainParams

log = logging.getLogger("ortholens.retrain")

Progress = Callable[[float, str], None]


@dataclass
class RetrainConfig:
    """Fine-tuning hyper-parameters; a request's :class:`RetrainParams` override the
    defaults (:meth:`from_params`).

    Attributes:
        budget_s: wall-clock cap of the fine-tuning, seconds.
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

class ReplaySampler:
    """Random chips of the replay tiles (panel-rich tiles drawn more often, as in
    ``backend.learning.train``), with weight 1 (0 on padding).

    Args:
        arrays: ``{"images": uint8 (N, B, H, W), "masks": uint8 (N, H, W)}``.
        chip: side in pixels.
        rng: the run's generator.
    """

    def __init__(self, arrays: Dict[str, np.ndarray], chip: int, rng: np.random.Generator):
        self.images, self.masks = arrays["images"], arrays["masks"]
        self.chip, self.rng = chip, rng
        self.p = tile_sampling_weights(self.masks)

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 (B, chip, chip), target int64 (chip, chip), weight float32)``."""
        i = int(self.rng.choice(len(self.masks), p=self.p))
        h, w = self.masks.shape[1:]
        c = min(self.chip, h, w)
        r0 = int(self.rng.integers(0, h - c + 1))
        c0 = int(self.rng.integers(0, w - c + 1))
        img = self.images[i, :, r0:r0 + c, c0:c0 + c]
        tgt = self.masks[i, r0:r0 + c, c0:c0 + c].astype(np.int64)
        if c < self.chip:
            p = self.chip - c
            img = np.pad(img, ((0, 0), (0, p), (0, p)), mode="reflect")
            tgt = np.pad(tgt, ((0, p), (0, p)), mode="reflect")
            wt = np.pad(np.ones((c, c), np.float32), ((0, p), (0, p)))
        else:
            wt = np.ones((c, c), np.float32)
        return img, tgt, wt


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


def finetune(card: ModelCard, areas: Sequence[AreaData], cfg: RetrainConfig,
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None,
             device: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """Fine-tune ``card``'s model on corrected areas (+ replay) within the budget.

    Args:
        card: a single model with weights.
        areas: the corrected areas to train on (may be empty: replay only).
        cfg: the hyper-parameters.
        progress: receives (fraction 0..1, message) about once a second.
        cancelled: polled every step.
        device: ``"cpu"``, ``"cuda"``; default CUDA when available.

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
    base_lrs = [g["lr"] for g in opt.param_groups]
    corr = ChipSampler(areas, cfg.chip, rng, cfg.hard_fraction) if areas else None
    if corr is not None and not len(corr):
        corr = None
    replay = ReplaySet.without(card.val_names) if cfg.replay_fraction > 0 else None
    rep = (ReplaySampler(replay.arrays, cfg.chip, rng)
           if replay is not None and replay.arrays is not None else None)
    if corr is None and rep is None:
        raise JobError("no training data: the reviewed areas are empty and the pv01 "
                       "replay data is missing", P.E_INVALID_INPUT)
    n_classes = len(card.classes)
    bs = int(cfg.batch_size)
    n_corr = bs if rep is None else (0 if corr is None else
                                     max(1, int(round(bs * (1 - cfg.replay_fraction)))))
    t0 = time.monotonic()
    step, losses = 0, []
    last_report = 0.0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= cfg.budget_s or (cfg.steps is not None and step >= cfg.steps):
            break
        if cancelled and cancelled():
            raise JobCancelled()
        frac = step / cfg.steps if cfg.steps else elapsed / cfg.budget_s
        if cfg.steps:
            frac = max(frac, elapsed / cfg.budget_s)
        factor = lr_factor(step, frac, cfg.warmup, 0.05)
        for g, lr0 in zip(opt.param_groups, base_lrs):
            g["lr"] = lr0 * factor
        items = [corr.sample() for _ in range(n_corr)] + [rep.sample() for _ in range(bs - n_corr)]
        x = normalize_batch(np.stack([it[0] for it in items]).astype(np.float32),
                            card.normalize)
        y = torch.from_numpy(np.stack([it[1] for it in items]))
        w = torch.from_numpy(np.stack([it[2] for it in items]))
        x, y, w = augment_weighted_batch(x, y, w, rng)
        x, y, w = x.to(device), y.to(device), w.to(device)
        losses.append(optimizer_step(
            model, opt, x, lambda logits: weighted_dice_ce_loss(logits, y, w, n_classes),
            device))
        step += 1
        now = time.monotonic()
        if now - last_report > 1.0:
            last_report = now
            progress(min(1.0, frac), f"fine-tuning: step {step}, loss "
                                     f"{np.mean(losses[-10:]):.3f}, "
                                     f"{now - t0:.0f}/{cfg.budget_s:.0f} s")
    seconds = time.monotonic() - t0
    model = model.to("cpu").eval()
    # evaluate exactly what will be saved: fp16 weights
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.dtype.is_floating_point:
                t.copy_(t.half().float())
    if device == "cpu":
        torch.set_num_threads(threads)
    info = {"steps": step, "seconds": round(seconds, 1), "device": device,
            "threads": threads, "train_encoder": encoder_trained,
            "batch_size": bs, "chip": cfg.chip, "correction_chips_per_batch": n_corr,
            "replay_tiles": replay.n if rep is not None else 0,
            "final_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "first_loss": round(float(np.mean(losses[:5])), 4) if losses else None,
            "torch": torch.__version__}
    return model, info


# ----------------------------------------------------------------------------- the job

def _file_sources(params: RetrainParams) -> List[str]:
    """Real paths of the raster files the corrections were made on."""
    srcs = [params.source] + [a.source for a in params.reviewed or () if a.source]
    return sorted({os.path.realpath(s.path) for s in srcs
                   if isinstance(s, FileSource) and s.path})


def candidate_engine(card: ModelCard, model, folder: Path) -> Engine:
    """Save the candidate's fp16 weights in ``folder``, export them to ONNX and return
    an ONNX Runtime engine over them: the engine ``detect`` would use for the new
    version on a CPU. On a GPU, or when the export fails, a PyTorch engine over the
    in-memory module."""
    import contextlib
    import sys

    from backend.inference.engines import OnnxEngine, TorchEngine, cuda_available
    from backend.models.export import export_onnx
    save_weights(model.state_dict(), folder / "weights.safetensors")
    cand_card = card.updated({"weights": "weights.safetensors", "onnx": "model.onnx"},
                             folder)
    if cuda_available():
        return TorchEngine(card, "cuda:0", model=model.to("cuda:0"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the daemon's stdout is reserved
            export_onnx(cand_card)
        return OnnxEngine(cand_card)
    except Exception as exc:
        log.warning("candidate ONNX export failed (%s); evaluating with PyTorch", exc)
        for p in folder.glob("*.onnx*"):
            p.unlink()
        return TorchEngine(card, "cpu", model=model)


def _guard(card: ModelCard, params: RetrainParams, warnings: List[str]
           ) -> Optional[GuardSet]:
    """The guard of this retrain, or None (with a warning why) when it is skipped."""
    if params.guard is False:
        return None
    try:
        guard = GuardSet.of(card.val_names, _file_sources(params))
    except FileNotFoundError as exc:
        warnings.append(f"pv01 data missing ({exc}); the forgetting guard was skipped")
        return None
    if not guard:
        warnings.append("no pv01 validation tiles to check (the model's card names none, "
                        "or all are among the corrected rasters); the forgetting guard "
                        "was skipped")
        return None
    return guard


def run_retrain(request: Dict[str, Any], arrays: List[np.ndarray],
                progress: Optional[Progress] = None,
                cancelled: Optional[Callable[[], bool]] = None,
                root: Optional[Path] = None,
                keep: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run a ``retrain`` request (the daemon's job function).

    Args:
        request: the header validated by ``protocol.wire.validate_request`` (type
            ``retrain``); read once into :class:`~protocol.params.RetrainParams`.
        arrays: the request's pixel frames (for ``pixels`` sources).
        progress: receives (fraction 0..1, message).
        cancelled: polled between steps and tiles.
        root: the user model folder (default ``backend.models.versions.user_models_dir``).
        keep: for in-process callers such as ``tools.retrain_eval``: a dict that
            receives the candidate's ``engine`` and ``card`` even when it is rejected.

    Returns:
        ``{"crs": "", "features": [], "stats": {...}, "retrain": report}``; the report
        holds ``accepted``, ``reason``, ``model`` (the new id or None), ``parent``,
        ``active``, ``before`` / ``after`` metrics, ``corrections``, ``train``,
        ``rule``, ``mlflow_run``, ``warnings``.

    Raises:
        JobError: unusable model or input (with a protocol ``code``).
        JobCancelled: cancelled (nothing is written but the MLflow run, marked KILLED).
    """
    import shutil

    params = RetrainParams.from_header(request)
    progress = progress or (lambda f, m: None)
    t_start = time.monotonic()
    with model_errors():
        card = load_card(params.model)
    if card.is_ensemble:
        raise JobError(f"{card.id} is an ensemble; retrain one of its members "
                       f"({', '.join(m.id for m in card.members)}) instead",
                       P.E_INVALID_INPUT)
    if not card.weights_path.is_file():
        raise JobError(f"model {card.id!r} has no weights to fine-tune", P.E_NOT_FOUND)
    cfg = RetrainConfig.from_params(params)
    base = V.split_id(card.id)[0]
    run = V.MlflowRun(V.mlruns_dir(root), f"retrain {card.id}")
    run.log_params({"model": card.id, "model_version": card.version, **asdict(cfg)})
    status = "FAILED"
    cand_dir = None
    try:
        engine = get_engine(card)
        progress(0.0, "reading the corrections")
        corr = build_corrections(params, arrays, card, engine,
                                 lambda f, m: progress(0.12 * f, m), cancelled,
                                 cfg.mistake_weight, cfg.holdout_fraction)
        summary = corr.summary()
        run.log_params({"corrections": summary["features"],
                        "reviewed_m2": summary["reviewed_m2"],
                        "areas_train": summary["train"]["areas"],
                        "areas_holdout": summary["holdout"]["areas"]})
        for side in ("train", "holdout"):
            for k in ("fp_objects", "fn_objects", "class_change_objects"):
                run.log_metric(f"corrections.{side}.{k}", summary[side][k])
        progress(0.12, f"fine-tuning for up to {cfg.budget_s:.0f} s")
        model, info = finetune(card, corr.train, cfg,
                               lambda f, m: progress(0.12 + 0.7 * f, m), cancelled)
        run.log_metric("train.steps", info["steps"])
        if info.get("final_loss") is not None:
            run.log_metric("train.final_loss", info["final_loss"], info["steps"])
        progress(0.82, "exporting the candidate")
        cand_dir = V.candidate_dir(base, root)
        cand = candidate_engine(card, model, cand_dir)
        if keep is not None:
            keep.update({"engine": cand, "card": card})
        warnings = list(corr.warnings)
        guard = _guard(card, params, warnings)
        before, after = evaluate(card, engine, cand, corr, guard, progress, cancelled)
        accepted, reason = decide(before, after, cfg.max_iou_drop)
        for tag, m in (("before", before), ("after", after)):
            for part, s in m.items():
                for k in ("object_f1", "pixel_iou", "object_errors", "false_objects",
                          "missed_objects", "wrong_px", "false_polygons_per_km2"):
                    if s.get(k) is not None:
                        run.log_metric(f"{tag}.{part}.{k}", s[k])
        rule = ACCEPTANCE_RULE.format(max_iou_drop=cfg.max_iou_drop)
        report: Dict[str, Any] = {
            "accepted": accepted, "reason": reason, "model": None, "parent": card.id,
            "before": before, "after": after, "corrections": summary, "train": info,
            "budget_s": cfg.budget_s, "rule": rule, "warnings": warnings,
            "mlflow_run": str(run.dir), "active": V.active_id(base, root)}
        if accepted:
            if cancelled and cancelled():
                raise JobCancelled()
            progress(0.96, "saving the new version")
            lineage = {
                "created": V._now_iso(), "corrections": summary["features"],
                "data": {"sources": _file_sources(params) or ["pixels sent by the plugin"],
                         "reviewed": [{"area": a.area.index, "part": a.area.part or "whole",
                                       "holdout": a.holdout,
                                       "bounds": [round(v, 3) for v in _grid_bounds(a)]}
                                      for a in corr.train + corr.holdout],
                         "replay": (f"pv01 train split, fit tiles ({info['replay_tiles']})"
                                    if info["replay_tiles"] else "none")},
                "summary": summary, "metrics": {"before": before, "after": after},
                "config": asdict(cfg), "train": info, "decision": "accepted",
                "reason": reason, "mlflow_run_id": run.run_id}
            updates = {"acceptance_rule": rule,
                       "retrain": {"parent": card.id, "reason": reason,
                                   "budget_s": cfg.budget_s, "steps": info["steps"]}}
            new = V.write_version(card, model.state_dict(), updates, lineage, root,
                                  prepared=cand_dir)
            report["model"] = new.id
            if params.activate is not False:
                V.activate(new.id, root)
            report["active"] = V.active_id(base, root)
            run.set_tag("ortholens.model", new.id)
        run.set_tag("ortholens.decision", "accepted" if accepted else "rejected")
        run.set_tag("ortholens.reason", reason)
        run.log_artifact_text("report.json", json.dumps(report, indent=2, default=str))
        status = "FINISHED"
        progress(1.0, ("new version " + str(report["model"])) if accepted else
                 "candidate rejected")
        stats = {"seconds": round(time.monotonic() - t_start, 1), "accepted": accepted,
                 "model": report["model"]}
        return {"crs": "", "features": [], "stats": stats, "retrain": report}
    except JobCancelled:
        status = "KILLED"
        raise
    except CorrectionsError as exc:
        run.set_tag("ortholens.error", exc.message)
        raise JobError(exc.message, exc.code) from None
    finally:
        run.end(status)
        if cand_dir is not None:
            shutil.rmtree(cand_dir, ignore_errors=True)


def _grid_bounds(a: AreaData) -> Tuple[float, float, float, float]:
    t = a.grid.transform
    return (t.c, t.f + a.grid.height * t.e, t.c + a.grid.width * t.a, t.f)
