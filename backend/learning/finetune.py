"""Fine-tune a model on the user's corrections; keep the result only when it is better.

:func:`run_retrain` is what the daemon runs for a ``retrain`` request (see
``protocol.wire``). Steps:

1. **corrections** (:mod:`backend.learning.corrections`): read the reviewed areas, run
   the current model, diff with the corrected polygons, split the areas into a train
   part and a held-out part;
2. **fine-tune** (:func:`finetune`) the selected model from its current weights for
   the part of the time budget the other steps leave (:class:`TimePlan`: the budget
   covers the whole job): chips from the corrected areas, most centred on a mistake
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
4. **decide** (:func:`~backend.learning.acceptance.judge`): a retrain with ``scope``
   ``"area"`` (the default) makes a version for the area it was taught on
   (:mod:`backend.models.scope`), judged by
   :data:`~backend.learning.acceptance.AREA_RULE` with the guard as a measured warning;
   ``"general"`` makes one for everywhere, judged by
   :data:`~backend.learning.acceptance.ACCEPTANCE_RULE` with the guard as a veto. The
   rule is written into every new card. An accepted candidate becomes a new version
   (:mod:`backend.models.versions`: atomic, with lineage and scope), in use in its
   area (or made active, for a general one); one the rule rejects or cannot decide on
   is kept aside for :data:`~backend.models.versions.PENDING_DAYS` days
   (``pending`` in the report) so that the user may keep it after all
   (``keep`` request). Every run, accepted, rejected, failed or cancelled, is logged to
   the MLflow file store ``<user models>/mlruns``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import protocol as P
from backend.config import train_threads
from backend.inference.detect import model_errors
from backend.inference.engines import Engine, get_engine
from backend.learning.acceptance import evaluate, judge, rule_text
from backend.learning.augment import augment_weighted_batch, normalize_batch
from backend.learning.corrections import AreaData, ChipSampler, build_corrections
from backend.learning.data import GuardSet, ReplaySet, tile_sampling_weights
from backend.learning.losses import weighted_dice_ce_loss
from backend.learning.optim import lr_factor, optimizer_step
from backend.models import versions as V
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from backend.models.area import AREA_MARGIN_M, build_area
from backend.models.pending import save_pending
from backend.models.tracking import MlflowRun, mlruns_dir
from backend.models.version_writer import candidate_dir, write_version
from backend.models.torch_models import load_torch_model, save_weights
from protocol.errors import CorrectionsError, JobCancelled, JobError
from protocol.params import FileSource, RetrainParams

log = logging.getLogger("ortholens.retrain")

Progress = Callable[[float, str], None]

#: Seconds assumed to export and load a candidate until one was measured, per device.
EXPORT_S = {"cpu": 10.0, "cuda": 2.0}
#: Seconds assumed to write an accepted version.
SAVE_S = 2.0
#: Factor on the gate's estimated model time (post-processing, metrics, a busy machine).
CHECK_MARGIN = 1.5
#: Least training time, seconds, when preparing and checking alone fill the budget.
MIN_TRAIN_S = 10.0
#: Measured in this process: ``export_s``, the last candidate's export and load time.
_MEASURED: Dict[str, float] = {}
#: The phases of a retrain job as its progress messages name them.
PHASES = ("preparing data", "training", "evaluating the gate", "saving")


def left_text(seconds: float) -> str:
    """``"about 7 s left"``, ``"about 40 s left"`` (5 s steps from 20 s), ``"about 3 min
    left"`` (from 2 minutes), ``"finishing"`` (under a second); ``seconds``: the time
    left, s."""
    if seconds < 1.0:
        return "finishing"
    if seconds < 20.0:
        return f"about {int(round(seconds))} s left"
    if seconds < 120.0:
        return f"about {int(round(seconds / 5.0)) * 5} s left"
    return f"about {int(round(seconds / 60.0))} min left"


class TimedEngine:
    """An engine that counts the seconds spent in ``predict_raw`` (``seconds``); every
    other attribute is the wrapped engine's.

    Args:
        engine: the engine measured.
    """

    def __init__(self, engine: Engine):
        self._engine = engine
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """The wrapped engine's ``predict_raw``, timed."""
        t = time.monotonic()
        try:
            return self._engine.predict_raw(tiles)
        finally:
            self.seconds += time.monotonic() - t


class TimePlan:
    """How a retrain job spends its time budget, and what its progress events say.

    The budget covers the whole job: preparing the data (reading the reviewed areas and
    running the current model on them), training, evaluating the gate and saving. Once
    the data is read, :meth:`plan_training` estimates what the gate will need from the
    speed of the current model on the reviewed areas (seconds per pixel; the candidate
    has the same architecture) and gives the training the rest, at least :data:`MIN_TRAIN_S` (then the job ends
    after its budget, and the report says so).

    Every event reads ``"<phase>: <detail> — about N s left"`` (phases
    :data:`PHASES`); its fraction is elapsed / (elapsed + time left), never decreasing,
    so the progress bar and the time left agree.

    Args:
        budget_s: the whole job's budget, seconds.
        progress: the job's progress callback, or None.
        clock: monotonic time source, seconds (tests pass a fake one).

    Attributes:
        t0: start (``clock()``); end: the planned end; fraction: the last fraction sent;
        marks: phase -> seconds since ``t0`` when it began; train_s, check_s: the
        training time given and the gate's estimated time (set by
        :meth:`plan_training`).
    """

    def __init__(self, budget_s: float, progress: Optional[Progress] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.budget_s = float(budget_s)
        self.progress = progress or (lambda f, m: None)
        self.clock = clock
        self.t0 = clock()
        self.end = self.t0 + self.budget_s
        self.fraction = 0.0
        self.marks: Dict[str, float] = {}
        self.train_s: Optional[float] = None
        self.check_s: Optional[float] = None

    def elapsed_s(self) -> float:
        """Seconds since the job started."""
        return self.clock() - self.t0

    def left_s(self) -> float:
        """Seconds to the planned end (0 once it has passed)."""
        return max(0.0, self.end - self.clock())

    def report(self, phase: str, detail: str = "") -> None:
        """Send one progress event of ``phase`` (one of :data:`PHASES`); the first
        event of a phase marks its start."""
        self.marks.setdefault(phase, self.elapsed_s())
        el, left = self.elapsed_s(), self.left_s()
        f = el / (el + left) if el + left > 0 else 1.0
        self.fraction = max(self.fraction, min(f, 0.99))
        self.progress(self.fraction, f"{phase}{': ' + detail if detail else ''} — "
                                     f"{left_text(left)}")

    def plan_training(self, px_s: float, check_px: int, device: str) -> float:
        """The training budget, seconds, once the data is read.

        Args:
            px_s: seconds the current model took per pixel of the reviewed areas while
                they were read (:class:`TimedEngine`); the candidate is assumed as fast.
            check_px: pixels the gate will run the models on (held-out and trained-on
                areas, the guard tiles twice), at the model GSD.
            device: ``"cpu"`` or ``"cuda"`` (the export time assumed before one was
                measured).
        """
        read_s = self.elapsed_s()
        export = _MEASURED.get("export_s", EXPORT_S.get(device, EXPORT_S["cpu"]))
        self.check_s = export + CHECK_MARGIN * px_s * int(check_px) + SAVE_S
        self.train_s = max(MIN_TRAIN_S, self.budget_s - read_s - self.check_s)
        self.end = max(self.t0 + self.budget_s, self.clock() + self.train_s + self.check_s)
        return self.train_s

    def training_done(self) -> None:
        """Training ended (perhaps early): the end is now the gate's estimate away."""
        self.end = self.clock() + (self.check_s or 0.0)

    def summary(self) -> Dict[str, Any]:
        """``{budget_s, seconds, preparing_s, training_s, checking_s, saving_s,
        train_budget_s, within_budget}`` (seconds, rounded to 0.1; a phase not reached
        is absent, and ``train_budget_s``, the training's planned share, before
        :meth:`plan_training`)."""
        total = self.elapsed_s()
        out: Dict[str, Any] = {"budget_s": self.budget_s, "seconds": round(total, 1)}
        if self.train_s is not None:
            out["train_budget_s"] = round(self.train_s, 1)
        names = [p for p in PHASES if p in self.marks]
        for i, p in enumerate(names):
            stop = self.marks[names[i + 1]] if i + 1 < len(names) else total
            key = {"preparing data": "preparing_s", "training": "training_s",
                   "evaluating the gate": "checking_s", "saving": "saving_s"}[p]
            out[key] = round(stop - self.marks[p], 1)
        # a second of slack: the last event and the reply are not the job's doing
        out["within_budget"] = total <= self.budget_s + 1.0
        return out


@dataclass
class RetrainConfig:
    """Fine-tuning hyper-parameters; a request's :class:`RetrainParams` override the
    defaults (:meth:`from_params`).

    Attributes:
        budget_s: wall-clock budget, seconds: of the whole job in :func:`run_retrain`
            (which gives the training what preparing and checking leave), of the
            training alone in :func:`finetune`.
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
        site_margin_m: how far an area version's site footprint reaches beyond the
            reviewed extents, metres (:data:`backend.models.scope.SITE_MARGIN_M`).
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


def finetune(card: ModelCard, areas: Sequence[AreaData], cfg: RetrainConfig,
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None,
             device: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """Fine-tune ``card``'s model on corrected areas (+ replay) within the budget.

    Args:
        card: a single model with weights.
        areas: the corrected areas to train on (may be empty: replay only).
        cfg: the hyper-parameters.
        progress: receives (fraction 0..1, message ``"step i/n, loss x"``, ``n`` the
            steps expected to fit in the budget) about once a second.
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
    # never the tiles it was validated on, nor a site it never saw
    replay = (ReplaySet.without(list(card.val_names) + card.left_out_names)
              if cfg.replay_fraction > 0 else None)
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
    step, losses, durations = 0, [], []
    last_report = 0.0
    while True:
        elapsed = time.monotonic() - t0
        # a step that would end after the budget is not started
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
        items = [corr.sample() for _ in range(n_corr)] + [rep.sample() for _ in range(bs - n_corr)]
        x = normalize_batch(np.stack([it[0] for it in items]).astype(np.float32),
                            card.normalize)
        y = torch.from_numpy(np.stack([it[1] for it in items]))
        w = torch.from_numpy(np.stack([it[2] for it in items]))
        x, y, w = augment_weighted_batch(x, y, w, rng)
        x, y, w = x.to(device), y.to(device), w.to(device)
        t_step = time.monotonic()
        losses.append(optimizer_step(
            model, opt, x, lambda logits: weighted_dice_ce_loss(logits, y, w, n_classes),
            device))
        step += 1
        now = time.monotonic()
        durations.append(now - t_step)
        if now - last_report > 1.0:
            last_report = now
            total = expected_steps(step, now - t0, cfg.budget_s, cfg.steps,
                                   float(np.mean(durations[-5:])))
            progress(min(1.0, (now - t0) / cfg.budget_s if not cfg.steps else
                         max(step / total, (now - t0) / cfg.budget_s)),
                     f"step {step}/{total}, loss {np.mean(losses[-10:]):.3f}")
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
            "step_seconds": round(float(np.mean(durations)), 3) if durations else None,
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
        guard = GuardSet.of([n for n in card.val_names if n not in card.left_out_names],
                            _file_sources(params))
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
        progress: receives (fraction 0..1, message ``"<phase>: <detail> — about N s
            left"``; see :class:`TimePlan`).
        cancelled: polled between steps and tiles.
        root: the user model folder (default ``backend.models.versions.user_models_dir``).
        keep: for in-process callers such as ``tools.retrain_eval``: a dict that
            receives the candidate's ``engine`` and ``card`` even when it is rejected,
            the ``corrections`` and ``guard`` it was judged on and the ``current``
            model's engine (to put another candidate through the same gate).

    Returns:
        ``{"crs": "", "features": [], "stats": {...}, "retrain": report}``; the report
        holds ``accepted``, ``reason``, ``model`` (the new id or None), ``parent``,
        ``active``, ``before`` / ``after`` metrics, ``corrections``, ``train``,
        ``budget_s`` (the whole job's), ``time`` (:meth:`TimePlan.summary`: seconds per
        phase, ``within_budget``), ``rule``, ``mlflow_run``, ``warnings`` (one says so
        when the job ran past its budget).

    Raises:
        JobError: unusable model or input (with a protocol ``code``).
        JobCancelled: cancelled (nothing is written but the MLflow run, marked KILLED).
    """
    import shutil

    params = RetrainParams.from_header(request)
    with model_errors():
        card = load_card(params.model)
    if card.is_ensemble:
        raise JobError(f"{card.id} is an ensemble; retrain one of its members "
                       f"({', '.join(m.id for m in card.members)}) instead",
                       P.E_INVALID_INPUT)
    if not card.weights_path.is_file():
        raise JobError(f"model {card.id!r} has no weights to fine-tune", P.E_NOT_FOUND)
    cfg = RetrainConfig.from_params(params)
    clock = TimePlan(cfg.budget_s, progress)
    base = V.split_id(card.id)[0]
    run = MlflowRun(mlruns_dir(root), f"retrain {card.id}")
    run.log_params({"model": card.id, "model_version": card.version, **asdict(cfg)})
    status = "FAILED"
    cand_dir = None
    try:
        clock.report("preparing data", "loading the model")
        engine = get_engine(card)
        timed = TimedEngine(engine)
        corr = build_corrections(params, arrays, card, timed,
                                 lambda f, m: clock.report("preparing data", m), cancelled,
                                 cfg.mistake_weight, cfg.holdout_fraction)
        summary = corr.summary()
        run.log_params({"corrections": summary["features"],
                        "reviewed_m2": summary["reviewed_m2"],
                        "areas_train": summary["train"]["areas"],
                        "areas_holdout": summary["holdout"]["areas"]})
        for side in ("train", "holdout"):
            for k in ("fp_objects", "fn_objects", "class_change_objects"):
                run.log_metric(f"corrections.{side}.{k}", summary[side][k])
        warnings = list(corr.warnings)
        guard = _guard(card, params, warnings)
        area_px = sum(a.valid.size for a in corr.train + corr.holdout)
        device = "cuda" if _cuda() else "cpu"
        train_s = clock.plan_training(timed.seconds / max(area_px, 1),
                                      area_px + 2 * _guard_pixels(guard, card.gsd_m), device)
        run.log_param("train_budget_s", round(train_s, 1))
        clock.report("training", f"up to {train_s:.0f} s")
        model, info = finetune(card, corr.train, replace(cfg, budget_s=train_s),
                               lambda f, m: clock.report("training", m), cancelled, device)
        clock.training_done()
        run.log_metric("train.steps", info["steps"])
        if info.get("final_loss") is not None:
            run.log_metric("train.final_loss", info["final_loss"], info["steps"])
        clock.report("evaluating the gate", "exporting the candidate")
        t_export = time.monotonic()
        cand_dir = candidate_dir(base, root)
        cand = candidate_engine(card, model, cand_dir)
        _MEASURED["export_s"] = time.monotonic() - t_export
        if keep is not None:
            keep.update({"engine": cand, "card": card, "corrections": corr,
                         "guard": guard, "current": engine})
        before, after, change = evaluate(card, engine, cand, corr, guard,
                                         lambda f, m: clock.report("evaluating the gate", m),
                                         cancelled)
        verdict = judge(before, after, change, cfg.max_iou_drop, cfg.scope)
        accepted, reason = verdict.accepted, verdict.reason
        warnings += verdict.warnings
        if change.get("f1_change") is not None:
            run.log_metric("holdout.f1_change", change["f1_change"])
            run.log_metric("holdout.objects", change["objects"])
        for tag, m in (("before", before), ("after", after)):
            for part, s in m.items():
                for k in ("object_f1", "pixel_iou", "object_errors", "false_objects",
                          "missed_objects", "wrong_px", "false_polygons_per_km2"):
                    if s.get(k) is not None:
                        run.log_metric(f"{tag}.{part}.{k}", s[k])
        rule = rule_text(cfg.scope, cfg.max_iou_drop, cfg.site_margin_m)
        scope = area_scope(corr.train + corr.holdout, cfg) if cfg.scope == "area" else None
        report: Dict[str, Any] = {
            "accepted": accepted, "verdict": verdict.verdict, "reason": reason,
            "model": None, "parent": card.id, "scope": scope, "change": change,
            "pending": None, "in_use": None,
            "before": before, "after": after, "corrections": summary, "train": info,
            "budget_s": cfg.budget_s, "rule": rule, "warnings": warnings,
            "mlflow_run": str(run.dir), "active": V.active_id(base, root)}
        lineage = {
            "created": V.now_iso(), "corrections": summary["features"],
            "data": {"sources": _file_sources(params) or ["pixels sent by the plugin"],
                     "reviewed": [{"area": a.area.index, "part": a.area.part or "whole",
                                   "holdout": a.holdout,
                                   "bounds": [round(v, 3) for v in _grid_bounds(a)]}
                                  for a in corr.train + corr.holdout],
                     "replay": (f"pv01 train split, fit tiles ({info['replay_tiles']})"
                                if info["replay_tiles"] else "none")},
            "summary": summary, "metrics": {"before": before, "after": after,
                                            "held_out_change": change},
            "config": asdict(cfg), "train": info, "decision": verdict.verdict,
            "verdict": verdict.verdict, "reason": reason, "scope": scope,
            "warnings": list(verdict.warnings), "mlflow_run_id": run.run_id}
        updates = {"acceptance_rule": rule,
                   "retrain": {"parent": card.id, "reason": reason,
                               "budget_s": cfg.budget_s, "steps": info["steps"]}}
        if accepted:
            if cancelled and cancelled():
                raise JobCancelled()
            clock.report("saving", f"the new version of {base}")
            new = write_version(card, model.state_dict(), updates, lineage, root,
                                  prepared=cand_dir)
            report["model"] = new.id
            if params.activate is not False:
                V.activate(new.id, root)
            report["active"] = V.active_id(base, root)
            if scope is not None:
                report["in_use"] = new.id in V.area_ids(base, root)
            run.set_tag("ortholens.model", new.id)
        elif not (cancelled and cancelled()):
            report["pending"] = save_pending(card, cand_dir, updates, lineage, root)
        report["time"] = times = clock.summary()
        if not times["within_budget"]:
            over = times.get("preparing_s", 0.0) + times.get("checking_s", 0.0)
            warnings.append(
                f"the retrain took {times['seconds']:.0f} s, over its "
                f"{cfg.budget_s:.0f} s budget: preparing the data and evaluating the gate "
                f"alone took {over:.0f} s here; give a larger budget or review a smaller "
                f"area")
        run.set_tag("ortholens.decision", "accepted" if accepted else "rejected")
        run.set_tag("ortholens.reason", reason)
        run.log_artifact_text("report.json", json.dumps(report, indent=2, default=str))
        status = "FINISHED"
        if progress is not None:
            progress(1.0, ("new version " + str(report["model"])) if accepted else
                     "candidate rejected")
        stats = {"seconds": times["seconds"], "accepted": accepted,
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


def area_scope(areas: Sequence[AreaData], cfg: RetrainConfig) -> Dict[str, Any]:
    """The scope (JSON) of a version taught on ``areas``: their extents, and the site
    footprint :data:`RetrainConfig.site_margin_m` around them
    (:func:`backend.models.scope.build_scope`), computed in the first area's grid CRS
    (metres; the others are brought into it)."""
    from rasterio.warp import transform_bounds
    crs = areas[0].grid.crs_wkt
    boxes = []
    for a in areas:
        b = _grid_bounds(a)
        if a.grid.crs_wkt != crs:
            b = transform_bounds(a.grid.crs_wkt, crs, *b, densify_pts=21)
        boxes.append(tuple(b))
    return build_area(boxes, crs, cfg.site_margin_m).to_dict()


def _cuda() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def _guard_pixels(guard: Optional[GuardSet], gsd_m: float) -> int:
    """Pixels of the guard tiles at the model GSD (0 without a guard)."""
    if not guard:
        return 0
    import rasterio
    n = 0
    for t in guard.tiles:
        with rasterio.open(t.image_path) as ds:
            n += int(ds.width * ds.height * (abs(ds.res[0]) / gsd_m) ** 2)
    return n


def _grid_bounds(a: AreaData) -> Tuple[float, float, float, float]:
    t = a.grid.transform
    return (t.c, t.f + a.grid.height * t.e, t.c + a.grid.width * t.a, t.f)
