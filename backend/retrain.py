"""Fine-tune a model on the user's corrections; keep the result only when it is better.

:func:`run_retrain` is what the daemon runs for a ``retrain`` request (see
``plugin/protocol.py``). Steps:

1. **corrections** (:mod:`backend.corrections`): read the reviewed areas, run the
   current model, diff with the corrected polygons, split the areas into a train part
   and a held-out part;
2. **fine-tune** (:func:`finetune`) the selected model from its current weights within
   the time budget: chips from the corrected areas, most centred on a mistake
   (hard-example mining) with pixel loss weights ``mistake_weight`` on mistake pixels
   and 1 elsewhere, mixed with a *replay* sample of the original pv01 train split
   (``replay_fraction`` of each batch; the *fit* tiles only, never the guard's
   validation tiles) so the model does not forget; loss = weighted
   cross-entropy + soft Dice; flips, 90-degree rotations and colour jitter; AdamW with
   warm-up and cosine decay over the steps (or the budget). The encoder is trained at a
   tenth of the decoder's learning rate and batch-norm statistics stay frozen (the
   few corrected chips would skew them). Training the encoder doubles the cost of a
   step on the CPU but is what transfers: on ``backend.retrain_eval``'s fold A->B,
   decoder-only candidates fragmented a newly found panel on the user's held-out
   corrections (object errors 1 -> 3, rejected) while encoder+decoder ones did not;
3. **evaluate** the current model and the candidate (its fp16-rounded weights, exactly
   what would be saved) with the ``detect`` pipeline on (a) the held-out part of the
   user's corrections and (b) the *guard*: the pv01 validation tiles the model was
   not trained on (``training.val_names`` in its card; tiles whose files are among the
   corrected rasters are left out). The pv01 held-out split is never used to decide:
   it stays for measuring (``backend.retrain_eval``);
4. **decide** with :data:`ACCEPTANCE_RULE` (written into every new card): register a
   new version (:mod:`backend.versions`: atomic, with lineage) and make it active, or
   report why the candidate was rejected. Every run, accepted, rejected, failed or
   cancelled, is logged to the MLflow file store ``<user models>/mlruns``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from plugin import protocol as P

from .corrections import AreaData, ChipSampler, Corrections, CorrectionsError, build_corrections
from .detect import (DetectError, JobCancelled, Options, detections_from_probs,
                     model_errors, predict_grid)
from .engines import Engine, get_engine, softmax
from .metrics import Counts, compare
from .registry import ModelCard, load_card, load_torch_model, val_names

log = logging.getLogger("ortholens.retrain")

Progress = Callable[[float, str], None]

#: The acceptance rule, stated in every retrained card (``acceptance_rule``).
ACCEPTANCE_RULE = (
    "A retrained candidate becomes a new version only if it does not regress and has "
    "learned from the corrections. Objects are 8-connected components of >= 20 px "
    "matched at IoU 0.5; object errors = false + missed objects. (1) On the held-out "
    "part of the user's corrections (reviewed areas never trained on): object errors do "
    "not increase, object F1 does not decrease and pixel IoU drops by at most "
    "{max_iou_drop:g} (each when defined); (2) on the guard, the pv01 validation tiles "
    "the model never trained on (tiles among the corrected rasters left out): pixel IoU "
    "drops by at most {max_iou_drop:g}; "
    "(3) it learned from the corrections: object errors decrease on the held-out "
    "corrections or, when they stay equal there, object errors (or, when those stay "
    "equal too, wrongly classified pixels) decrease on the corrected areas it was "
    "trained on.")


@dataclass
class RetrainConfig:
    """Fine-tuning hyper-parameters (request fields override the defaults)."""

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
    train_encoder: bool = True  # at lr / 10; False: decoder and head only
    warmup: int = 5
    holdout_fraction: float = 0.25
    max_iou_drop: float = 0.02

    @classmethod
    def from_request(cls, req: Dict[str, Any]) -> "RetrainConfig":
        cfg = cls()
        for k in ("budget_s", "steps", "seed", "replay_fraction", "mistake_weight",
                  "holdout_fraction", "max_iou_drop", "batch_size", "chip", "lr",
                  "train_encoder"):
            if req.get(k) is not None:
                setattr(cfg, k, type(getattr(cfg, k))(req[k])
                        if getattr(cfg, k) is not None else req[k])
        return cfg


class RetrainError(DetectError):
    """A retrain job that cannot run; ``code`` is a protocol error code, ``message`` a
    sentence for the user (the same shape as :class:`~backend.detect.DetectError`)."""


# ----------------------------------------------------------------------------- engines

class ModuleEngine(Engine):
    """An in-memory PyTorch module as an :class:`~backend.engines.Engine` (CPU/GPU)."""

    kind = "torch"

    def __init__(self, card: ModelCard, model, device: str = "cpu"):
        self.card, self.model, self.device = card, model, device

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.model(t)
                return torch.softmax(logits.float(), 1).cpu().numpy()
            return torch.softmax(self.model(t), 1).numpy()


class ArrayReader:
    """``WindowReader``'s interface over an image already in memory."""

    def __init__(self, image: np.ndarray, valid: np.ndarray):
        self.image, self.valid = image, valid

    def read(self, row: int, col: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        h, w = self.valid.shape
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, h), min(col + size, w)
        img = self.image[:, r0:r1, c0:c1]
        valid = self.valid[r0:r1, c0:c1]
        pads = ((r0 - row, row + size - r1), (c0 - col, col + size - c1))
        if any(p for pair in pads for p in pair):
            mode = "reflect" if min(r1 - r0, c1 - c0) > max(max(pads)) else "edge"
            img = np.pad(img, ((0, 0),) + pads, mode=mode)
            valid = np.pad(valid, pads, constant_values=False)
        return img, valid

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- metrics

def _summary(counts: Counts, area_m2: float, wrong_px: int) -> Dict[str, Any]:
    s = counts.summary()
    out = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else
               (None if isinstance(v, float) else v))
           for k, v in s.items() if k != "mean_matched_iou"}
    out["object_errors"] = int(counts.fp_obj + counts.fn_obj)
    out["wrong_px"] = int(wrong_px)
    out["area_km2"] = round(area_m2 / 1e6, 6)
    out["false_polygons_per_km2"] = (round(counts.fp_obj / (area_m2 / 1e6), 1)
                                     if area_m2 > 0 else None)
    return out


def predict_area(engine: Engine, area: AreaData, card: ModelCard,
                 cancelled: Optional[Callable[[], bool]] = None) -> np.ndarray:
    """Cleaned class map (uint8 (H, W)) of ``engine`` on an area in memory (the
    ``detect`` pipeline: tiling, blending, threshold, cleaning)."""
    opts = Options.from_request(card, {})
    probs, valid, _ = predict_grid(ArrayReader(area.image, area.valid), area.grid, engine,
                                   opts.batch_size, None, cancelled)
    cmap, _ = detections_from_probs(probs, valid & area.valid, area.grid, card, opts)
    return cmap


def eval_areas(areas: Sequence[AreaData], card: ModelCard,
               preds: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Object/pixel metrics of class maps against the corrected maps of ``areas``
    (all foreground classes pooled for objects per class)."""
    tot = Counts()
    wrong = 0
    area_m2 = 0.0
    for a, pred in zip(areas, preds):
        for k in range(1, len(card.classes) + 1):
            tot.add(compare((pred == k) & a.valid, (a.target == k) & a.valid))
        wrong += int(((pred != a.target) & a.valid).sum())
        area_m2 += a.area_m2
    return _summary(tot, area_m2, wrong)


def guard_tiles(card: ModelCard, exclude: Sequence[str] = ()) -> List[Any]:
    """The forgetting guard: the pv01 *validation* tiles of ``card`` (its
    ``training.val_names``: train-split tiles the model was not fitted on, where its
    post-processing was chosen), minus tiles whose image files are in ``exclude`` (real
    paths). Empty when the card names none. The held-out split is never used here:
    accepting a version is a decision, and decisions are never taken on held-out data.

    Raises:
        FileNotFoundError: the pv01 data is missing.
    """
    from . import data as pvdata
    names = set(val_names(card))
    ex = {os.path.realpath(p) for p in exclude}
    return [t for t in pvdata.list_tiles("train")
            if t.name in names and os.path.realpath(t.image_path) not in ex]


def eval_tiles(engine: Engine, card: ModelCard, tiles: Sequence[Any],
               cancelled: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
    """Pixel IoU and object F1 of the ``detect`` pipeline over pv01 tiles."""
    from .raster import WindowReader, open_source, plan_grid
    tot = Counts()
    wrong, area_m2 = 0, 0.0
    opts = Options.from_request(card, {})
    for t in tiles:
        if cancelled and cancelled():
            raise JobCancelled()
        with open_source({"kind": "file", "path": str(t.image_path)}) as ds:
            grid = plan_grid(ds, None, None, card.gsd_m, card.bands)
            reader = WindowReader(ds, grid)
            try:
                probs, valid, _ = predict_grid(reader, grid, engine, opts.batch_size)
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
    s = _summary(tot, area_m2, wrong)
    s["tiles"] = len(tiles)
    return s


def decide(before: Dict[str, Any], after: Dict[str, Any], max_iou_drop: float
           ) -> Tuple[bool, str]:
    """Apply :data:`ACCEPTANCE_RULE`; returns ``(accepted, reason)``.

    ``before`` / ``after`` hold ``user_holdout`` (required), ``guard`` (the pv01
    validation tiles, optional) and ``user_train`` (the trained-on corrected areas, optional: only
    consulted when the held-out corrections show no change in object errors).
    """
    def drop(b, a, key):
        if b is None or a is None or b.get(key) is None or a.get(key) is None:
            return None
        return b[key] - a[key]

    ub, ua = before["user_holdout"], after["user_holdout"]
    eb, ea = ub["object_errors"], ua["object_errors"]
    reasons = []
    if ea > eb:
        reasons.append(f"more object errors on the held-out corrections ({eb} -> {ea})")
    fb, fa = ub.get("object_f1"), ua.get("object_f1")
    if fb is not None and fa is not None and fa < fb - 1e-9:
        reasons.append(f"object F1 on the held-out corrections fell {fb:.3f} -> {fa:.3f}")
    d = drop(ub, ua, "pixel_iou")
    if d is not None and d > max_iou_drop + 1e-9:
        reasons.append(f"pixel IoU on the held-out corrections fell {ub['pixel_iou']:.3f} "
                       f"-> {ua['pixel_iou']:.3f} (more than {max_iou_drop:g})")
    hb, ha = before.get("guard"), after.get("guard")
    d = drop(hb, ha, "pixel_iou")
    if d is not None and d > max_iou_drop + 1e-9:
        reasons.append(f"pixel IoU on the guard (pv01 validation tiles) fell {hb['pixel_iou']:.3f} "
                       f"-> {ha['pixel_iou']:.3f} (more than {max_iou_drop:g})")
    tb, ta = before.get("user_train"), after.get("user_train")
    better = None
    if ea < eb:
        better = f"object errors on the held-out corrections {eb} -> {ea}"
    elif ea == eb and tb and ta and ta["object_errors"] < tb["object_errors"]:
        better = (f"object errors on the held-out corrections unchanged ({ea}), on the "
                  f"corrected areas trained on {tb['object_errors']} -> "
                  f"{ta['object_errors']}")
    elif (ea == eb and tb and ta and ta["object_errors"] == tb["object_errors"]
          and ta["wrong_px"] < tb["wrong_px"]):
        better = (f"object errors unchanged on the held-out corrections ({ea}) and on the "
                  f"corrected areas trained on ({ta['object_errors']}); wrong pixels there "
                  f"{tb['wrong_px']} -> {ta['wrong_px']}")
    else:
        seen = (f", on the corrected areas trained on {tb['object_errors']} -> "
                f"{ta['object_errors']}, wrong pixels {tb['wrong_px']} -> "
                f"{ta['wrong_px']}" if tb and ta else "")
        reasons.append(f"no fewer object errors (held-out corrections {eb} -> {ea}{seen})")
    if reasons:
        return False, "; ".join(reasons)
    guard = (f"; guard (pv01 validation tiles) pixel IoU {hb['pixel_iou']:.3f} -> "
             f"{ha['pixel_iou']:.3f}"
             if hb and ha and hb.get("pixel_iou") is not None else "")
    return True, better + guard


# ----------------------------------------------------------------------------- training

_REPLAY: Dict[str, Any] = {}


def replay_data(exclude: Sequence[str] = ()) -> Optional[Dict[str, np.ndarray]]:
    """The pv01 train split minus the tiles named in ``exclude`` (the guard's
    validation tiles), as ``{"images": uint8 (N, 3, H, W), "masks": uint8 (N, H, W)}``,
    cached per ``exclude``; None when the data is missing."""
    key = tuple(sorted(exclude))
    if _REPLAY.get("key") != key:
        from . import data as pvdata
        try:
            tiles = [t for t in pvdata.list_tiles("train") if t.name not in key]
            _REPLAY["arrays"] = pvdata.load_arrays(tiles) if tiles else None
            _REPLAY["n"] = len(tiles)
        except (FileNotFoundError, OSError) as exc:
            log.warning("no replay data: %s", exc)
            _REPLAY["arrays"], _REPLAY["n"] = None, 0
        _REPLAY["key"] = key
    return _REPLAY["arrays"]


class ReplaySampler:
    """Random chips of the original training tiles (panel-rich tiles drawn more often,
    as in ``backend.train``)."""

    def __init__(self, arrays: Dict[str, np.ndarray], chip: int, rng: np.random.Generator):
        self.images, self.masks = arrays["images"], arrays["masks"]
        self.chip, self.rng = chip, rng
        frac = self.masks.reshape(len(self.masks), -1).mean(1)
        w = np.sqrt(frac) + 0.1
        self.p = w / w.sum()

    def sample(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _augment(x, y, w, rng: np.random.Generator):
    """Flips, 90-degree rotations and colour jitter (normalised space), per sample."""
    import torch
    xs, ys, ws = [], [], []
    for i in range(x.shape[0]):
        k = int(rng.integers(0, 4))
        xi, yi, wi = (torch.rot90(x[i], k, (1, 2)), torch.rot90(y[i], k, (0, 1)),
                      torch.rot90(w[i], k, (0, 1)))
        if rng.random() < 0.5:
            xi, yi, wi = torch.flip(xi, (2,)), torch.flip(yi, (1,)), torch.flip(wi, (1,))
        gain = torch.tensor(rng.uniform(0.92, 1.08, size=(xi.shape[0], 1, 1)),
                            dtype=xi.dtype)
        xi = xi * float(rng.uniform(0.85, 1.18)) * gain + float(rng.uniform(-0.2, 0.2))
        xs.append(xi)
        ys.append(yi)
        ws.append(wi)
    return (torch.stack(xs).contiguous(), torch.stack(ys).contiguous(),
            torch.stack(ws).contiguous())


def weighted_loss(logits, target, weight, n_classes: int):
    """Pixel-weighted cross-entropy + soft Dice (foreground classes, valid pixels)."""
    import torch
    import torch.nn.functional as F
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * weight).sum() / weight.sum().clamp(min=1.0)
    p = torch.softmax(logits, 1)
    m = (weight > 0).float()
    dice = 0.0
    for k in range(1, n_classes + 1):
        t = (target == k).float() * m
        pk = p[:, k] * m
        dice = dice + 1 - (2 * (pk * t).sum() + 1) / (pk.sum() + t.sum() + 1)
    return ce + dice / n_classes


def _freeze_bn(model) -> None:
    import torch
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()


def finetune(card: ModelCard, areas: Sequence[AreaData], cfg: RetrainConfig,
             progress: Optional[Progress] = None,
             cancelled: Optional[Callable[[], bool]] = None,
             device: Optional[str] = None) -> Tuple[Any, Dict[str, Any]]:
    """Fine-tune ``card``'s model on corrected areas (+ replay) within the budget.

    Returns:
        ``(model, info)``: the torch module (eval mode, on the CPU, weights rounded to
        fp16 as they will be saved) and ``{steps, seconds, final_loss, ...}``.

    Raises:
        JobCancelled: ``cancelled()`` turned true.
    """
    import torch

    progress = progress or (lambda f, m: None)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = int(os.environ.get("ORTHOLENS_THREADS", os.cpu_count() or 1))
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = load_torch_model(card, device)
    model.train()
    _freeze_bn(model)
    train_encoder = bool(cfg.train_encoder)
    enc = getattr(model, "encoder", None)
    enc_params = list(enc.parameters()) if enc is not None else []
    enc_ids = {id(p) for p in enc_params}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    groups = [{"params": rest, "lr": cfg.lr}]
    if train_encoder and enc_params:
        groups.append({"params": enc_params, "lr": cfg.lr * 0.1})
    else:
        for p in enc_params:
            p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    corr = ChipSampler(areas, cfg.chip, rng, cfg.hard_fraction) if areas else None
    if corr is not None and not len(corr):
        corr = None
    replay = replay_data(val_names(card)) if cfg.replay_fraction > 0 else None
    rep = ReplaySampler(replay, cfg.chip, rng) if replay is not None else None
    if corr is None and rep is None:
        raise RetrainError(P.E_INVALID_INPUT, "no training data: the reviewed areas are "
                                              "empty and the pv01 replay data is missing")
    n = card.normalize
    mean = torch.tensor(n["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(n["std"], dtype=torch.float32).view(1, -1, 1, 1)
    scale = float(n.get("scale", 255.0))
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
        sched = min(1.0, (step + 1) / max(1, cfg.warmup)) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g, lr0 in zip(opt.param_groups, base_lrs):
            g["lr"] = lr0 * max(sched, 0.05)
        items = [corr.sample() for _ in range(n_corr)] + [rep.sample() for _ in range(bs - n_corr)]
        img = torch.from_numpy(np.stack([it[0] for it in items]).astype(np.float32))
        x = (img / scale - mean) / std
        y = torch.from_numpy(np.stack([it[1] for it in items]))
        w = torch.from_numpy(np.stack([it[2] for it in items]))
        x, y, w = _augment(x, y, w, rng)
        x, y, w = x.to(device), y.to(device), w.to(device)
        if device.startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            loss = weighted_loss(logits.float(), y, w, n_classes)
        else:
            loss = weighted_loss(model(x), y, w, n_classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
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
            "threads": threads, "train_encoder": bool(train_encoder and enc_params),
            "batch_size": bs, "chip": cfg.chip, "correction_chips_per_batch": n_corr,
            "replay_tiles": int(_REPLAY.get("n", 0)) if rep is not None else 0,
            "final_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "first_loss": round(float(np.mean(losses[:5])), 4) if losses else None,
            "torch": torch.__version__}
    return model, info


# ----------------------------------------------------------------------------- the job

_GUARD_CACHE: Dict[Tuple, Dict[str, Any]] = {}


def _sources(request: Dict[str, Any]) -> List[str]:
    srcs = [request.get("source") or {}] + [it.get("source") or {}
                                            for it in request.get("reviewed") or []]
    return sorted({os.path.realpath(s["path"]) for s in srcs
                   if s.get("kind") == "file" and s.get("path")})


def candidate_engine(card: ModelCard, model, folder: Path) -> Engine:
    """Save the candidate's fp16 weights in ``folder``, export them to ONNX and return
    an ONNX Runtime engine over them: the engine ``detect`` would use for the new
    version on a CPU. On a GPU, or when the export fails, a PyTorch engine over the
    in-memory module."""
    import contextlib
    import sys

    from . import versions as V
    from .engines import OnnxEngine, cuda_available
    V.save_weights(model.state_dict(), folder / "weights.safetensors")
    cand_card = ModelCard.from_dict(dict(card.raw, weights="weights.safetensors",
                                         onnx="model.onnx"), folder)
    if cuda_available():
        return ModuleEngine(card, model.to("cuda:0"), "cuda:0")
    try:
        from .export import export_onnx
        with contextlib.redirect_stdout(sys.stderr):  # the daemon's stdout is reserved
            export_onnx(cand_card)
        return OnnxEngine(cand_card)
    except Exception as exc:
        log.warning("candidate ONNX export failed (%s); evaluating with PyTorch", exc)
        for p in folder.glob("*.onnx*"):
            p.unlink()
        return ModuleEngine(card, model, "cpu")


def run_retrain(request: Dict[str, Any], arrays: List[np.ndarray],
                progress: Optional[Progress] = None,
                cancelled: Optional[Callable[[], bool]] = None,
                root: Optional[Path] = None,
                keep: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run a validated ``retrain`` request.

    Returns:
        ``{"crs": "", "features": [], "stats": {...}, "retrain": report}``; the report
        holds ``accepted``, ``reason``, ``model`` (the new id or None), ``parent``,
        ``active``, ``before`` / ``after`` metrics, ``corrections``, ``train``,
        ``rule``, ``mlflow_run``, ``warnings``.

    Raises:
        RetrainError / CorrectionsError / DetectError: unusable model or input (with a
            protocol ``code``).
        JobCancelled: cancelled (nothing is written but the MLflow run, marked KILLED).

    ``keep`` (in-process callers such as ``backend.retrain_eval``): a dict that receives
    the candidate's ``engine`` and ``card`` even when it is rejected.
    """
    import shutil
    from . import versions as V

    progress = progress or (lambda f, m: None)
    t_start = time.monotonic()
    with model_errors(RetrainError):
        card = load_card(request["model"])
    if card.is_ensemble:
        raise RetrainError(P.E_INVALID_INPUT,
                           f"{card.id} is an ensemble; retrain one of its members "
                           f"({', '.join(m['id'] for m in card.members)}) instead")
    if not card.weights_path.is_file():
        raise RetrainError(P.E_NOT_FOUND, f"model {card.id!r} has no weights to fine-tune")
    cfg = RetrainConfig.from_request(request)
    store = V.mlruns_dir(root)
    run = V.MlflowRun(store, f"retrain {card.id}")
    run.log_params({"model": card.id, "model_version": card.version,
                    **{k: v for k, v in asdict(cfg).items()}})
    status = "FAILED"
    cand_dir = None
    try:
        engine = get_engine(card)
        progress(0.0, "reading the corrections")
        corr = build_corrections(request, arrays, card, engine,
                                 lambda f, m: progress(0.12 * f, m), cancelled,
                                 cfg.mistake_weight)
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
        cand_dir = V.candidate_dir(V.split_id(card.id)[0], root)
        cand = candidate_engine(card, model, cand_dir)
        if keep is not None:
            keep.update({"engine": cand, "card": card})
        # (a) the user's held-out corrections
        progress(0.83, "evaluating on the held-out corrections")
        before = {"user_holdout": eval_areas(corr.holdout, card, [a.pred for a in corr.holdout])}
        after = {"user_holdout": eval_areas(corr.holdout, card,
                                            [predict_area(cand, a, card, cancelled)
                                             for a in corr.holdout])}
        # (b) the guard: validation tiles the model never trained on
        warnings = list(corr.warnings)
        if request.get("guard", True):
            try:
                tiles = guard_tiles(card, _sources(request))
            except FileNotFoundError as exc:
                tiles = []
                warnings.append(f"pv01 data missing ({exc}); the forgetting guard was "
                                f"skipped")
            if tiles:
                progress(0.9, f"evaluating on {len(tiles)} pv01 validation tiles (guard)")
                key = (card.id, card.version, str(card.weights_path),
                       card.weights_path.stat().st_mtime, tuple(str(t.image_path) for t in tiles))
                if key not in _GUARD_CACHE:  # the current model's numbers do not change
                    _GUARD_CACHE[key] = eval_tiles(engine, card, tiles, cancelled)
                before["guard"] = dict(_GUARD_CACHE[key])
                after["guard"] = eval_tiles(cand, card, tiles, cancelled)
            else:
                warnings.append("no pv01 validation tiles to check (the model's card "
                                "names none, or all are among the corrected rasters); "
                                "the forgetting guard was skipped")
        ub, ua = before["user_holdout"], after["user_holdout"]
        if (ua["object_errors"] == ub["object_errors"] and corr.train
                and not (cancelled and cancelled())):
            # (3) of the rule: did it learn the corrections it was trained on?
            progress(0.95, "evaluating on the corrected areas")
            before["user_train"] = eval_areas(corr.train, card, [a.pred for a in corr.train])
            after["user_train"] = eval_areas(corr.train, card,
                                             [predict_area(cand, a, card, cancelled)
                                              for a in corr.train])
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
            "mlflow_run": str(run.dir), "active": V.active_id(V.split_id(card.id)[0], root)}
        if accepted:
            if cancelled and cancelled():
                raise JobCancelled()
            progress(0.96, "saving the new version")
            lineage = {
                "created": V._now_iso(), "corrections": summary["features"],
                "data": {"sources": _sources(request) or ["pixels sent by the plugin"],
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
            if request.get("activate", True):
                V.activate(new.id, root)
            report["active"] = V.active_id(V.split_id(card.id)[0], root)
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
        raise RetrainError(exc.code, exc.message) from None
    finally:
        run.end(status)
        if cand_dir is not None:
            shutil.rmtree(cand_dir, ignore_errors=True)


def _grid_bounds(a: AreaData) -> Tuple[float, float, float, float]:
    t = a.grid.transform
    return (t.c, t.f + a.grid.height * t.e, t.c + a.grid.width * t.a, t.f)
