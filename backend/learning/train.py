"""Train a segmentation member on the pv01 train split, reproducibly, from a config file.

Usage::

    python -m backend.learning.train models/configs/pv-unet-efl0.json [--budget-s 600] [--out DIR]
    python -m backend.learning.train models/configs/pv-unet-efl0.json --fold 0  # a CV model
    python -m backend.learning.train models/configs/pv-ensemble.json   # an ensemble card

An ensemble config (``"kind": "ensemble"``) trains nothing: it fuses trained members
and takes the ensemble's post-processing from the config when cross-validation chose it
there, else chooses it on the members' common validation tiles (:func:`make_ensemble`).

The config (JSON) gives the card fields (id, version, architecture, encoder,
arch_kwargs, classes, gsd_m, tile_size, overlap, simplify_m) and the training
hyper-parameters (seed, split_seed, steps, budget_s, batch_size, chip, lr,
weight_decay, val_fraction, and optionally pretrained, encoder_lr_factor, normalize,
recipe, appearance, scale_range). With ``steps`` the run is reproducible (same seed, same
steps, same result on the same software); ``budget_s`` caps the wall-clock time. A config
that ``tools.cv --write-config`` completed also holds the post-processing
(:data:`PP_KEYS`) chosen by cross-validation and its figures (``cross_validation``);
the run then keeps them and only scores them on *val*.

Method: the train split is divided into *fit* and *val* by spatial cluster
(:func:`backend.learning.data.split_train`); the model (segmentation-models-pytorch,
:mod:`backend.models.torch_models`; random init, or with ``"pretrained"`` an ImageNet
encoder from a registry package, :mod:`backend.learning.pretrained`, trained at
``encoder_lr_factor`` times the rate) is trained on *fit* with flips, 90-degree
rotations, scale (``scale_range``, default 0.75-1.33) and colour jitter, plus with
``"recipe": "generalise"`` saturation, hue, blur/sharpen and resolution changes
(``"appearance"`` overrides single fields of them; :mod:`backend.learning.augment`), loss = cross-entropy + soft Dice over the foreground
classes (:mod:`backend.learning.losses`), AdamW with a warm-up + cosine learning-rate
schedule over ``steps`` (or over a wall-clock budget when no steps are given;
:mod:`backend.learning.optim`). The probability threshold, minimum object area and
hole size are then chosen on *val* for the best object F1 (held-out data is never
used here). Output: ``<out>/weights.safetensors`` (fp16) and ``<out>/card.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from backend.config import models_dir, train_threads
from backend.inference.postprocess import class_map, clean_masks, filter_objects
from backend.learning import data as pvdata
from backend.learning.augment import (GENERALISE, PLAIN, SCALE_RANGE, augment_batch,
                                      normalize_batch)
from backend.learning.losses import dice_ce_loss
from backend.learning.optim import lr_factor, optimizer_step
from backend.models.card import ModelCard, write_card
from backend.models.catalog import load_card
from backend.models.export import export_onnx
from backend.models.torch_models import build_torch_model, save_weights
from protocol.metrics import Counts, compare


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def normalize_stats(images: np.ndarray) -> Dict[str, Any]:
    """Per-band mean/std of uint8 images (N, B, H, W) after scaling by 1/255, as the
    card's ``normalize`` field."""
    x = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1).astype(np.float64) / 255.0
    return {"scale": 255.0, "mean": [round(float(v), 5) for v in x.mean(1)],
            "std": [round(float(v), 5) for v in x.std(1)]}


def predict_probs(model, images_norm, batch: int = 8) -> np.ndarray:
    """Softmax probabilities (N, C, H, W) float32 for normalised images (N, B, H, W) of
    any size: they are padded to multiples of 32 (the encoders' stride), by reflection
    where the image is larger than the padding and by repeating the edge otherwise,
    and the probabilities cropped back."""
    import torch
    import torch.nn.functional as F
    h, w = images_norm.shape[-2:]
    pad = (0, -w % 32, 0, -h % 32)
    mode = "reflect" if pad[1] < w and pad[3] < h else "replicate"
    out = []
    with torch.inference_mode():
        for i in range(0, images_norm.shape[0], batch):
            x = images_norm[i:i + batch]
            if any(pad):
                x = F.pad(x, pad, mode=mode)
            out.append(torch.softmax(model(x), 1)[..., :h, :w].numpy())
    return np.concatenate(out)


#: Post-processing fields of a card that validation or cross-validation choose.
PP_KEYS = ("threshold", "min_area_m2", "max_hole_m2", "min_solidity", "min_score",
           "orthogonalize")


def postprocessed(probs: np.ndarray, pp: Dict[str, Any], gsd_m: float,
                  n_classes: int) -> np.ndarray:
    """The cleaned class map, uint8 (H, W), of one tile's probabilities (C, H, W) under
    the post-processing ``pp`` (threshold, min_area_m2, max_hole_m2 and optionally
    min_solidity, min_score) on a grid of ``gsd_m`` metres, as detection makes it
    before polygonizing."""
    px = gsd_m * gsd_m
    cm = clean_masks(class_map(probs, pp["threshold"]), n_classes,
                     int(round(pp["min_area_m2"] / px)), int(round(pp["max_hole_m2"] / px)))
    return filter_objects(cm, probs, n_classes, pp.get("min_solidity", 0.0),
                          pp.get("min_score", 0.0))


def score_postprocess(probs: np.ndarray, masks: np.ndarray, gsd_m: float, n_classes: int,
                      pp: Dict[str, Any]) -> Dict[str, float]:
    """The :class:`protocol.metrics.Counts` summary of class 1 on validation
    probabilities (N, C, H, W) and masks (N, H, W) with the post-processing ``pp``
    (:func:`postprocessed`)."""
    tot = Counts()
    for p, m in zip(probs, masks):
        tot.add(compare(postprocessed(p, pp, gsd_m, n_classes) == 1, m == 1))
    return tot.summary()


def cv_postprocess(config: Dict[str, Any]) -> Dict[str, Any]:
    """The post-processing (:data:`PP_KEYS`) that cross-validation chose, from a config
    ``tools.cv --write-config`` completed (it then holds ``cross_validation``); ``{}``
    for any other config."""
    if "cross_validation" not in config:
        return {}
    return {k: config[k] for k in PP_KEYS if k in config}


def val_postprocess(config: Dict[str, Any], probs: np.ndarray, masks: np.ndarray,
                    gsd_m: float, n_classes: int) -> Dict[str, Any]:
    """The post-processing of a run with validation probabilities (N, C, H, W) and masks
    (N, H, W): the cross-validated one (:func:`cv_postprocess`) scored on them, or else
    the one :func:`choose_postprocess` picks on them; its ``"val"`` holds the scores."""
    if "cross_validation" in config:
        pp = cv_postprocess(config)
        return dict(pp, val=score_postprocess(probs, masks, gsd_m, n_classes, pp))
    return choose_postprocess(probs, masks, gsd_m, n_classes)


#: The post-processing grid searched (:func:`choose_postprocess`, ``tools.cv_gsd``):
#: probability thresholds, smallest objects kept (m²), largest holes filled (m²).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_AREAS_M2 = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)
HOLES_M2 = (0.0, 0.5)


def best_on_grid(score: Callable[[Dict[str, float]], Dict[str, float]],
                 key: Callable[[Dict[str, float]], tuple] = lambda s: (s["object_f1"],
                                                                       s["pixel_iou"])
                 ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """The point of the post-processing grid (:data:`THRESHOLDS` x :data:`MIN_AREAS_M2`
    x :data:`HOLES_M2`) whose summary ``score(pp)`` (a :class:`Counts` summary) has the
    largest ``key`` (default: object F1, then pixel IoU); the first such point on ties.

    Returns:
        ``(pp, summary)`` with ``pp = {"threshold", "min_area_m2", "max_hole_m2"}``.
    """
    best = None
    for thr in THRESHOLDS:
        for min_area_m2 in MIN_AREAS_M2:
            for hole_m2 in HOLES_M2:
                pp = {"threshold": thr, "min_area_m2": min_area_m2, "max_hole_m2": hole_m2}
                s = score(pp)
                if best is None or key(s) > best[0]:
                    best = (key(s), pp, s)
    return best[1], best[2]


def choose_postprocess(probs: np.ndarray, masks: np.ndarray, gsd_m: float,
                       n_classes: int) -> Dict[str, Any]:
    """Grid-search threshold / min area / hole size for the best object F1 (then pixel
    IoU) on validation probabilities (N, C, H, W) and masks (N, H, W)
    (:func:`best_on_grid`).

    Returns:
        ``{"threshold", "min_area_m2", "max_hole_m2", "val": Counts summary}``.
    """
    pp, s = best_on_grid(lambda pp: score_postprocess(probs, masks, gsd_m, n_classes, pp))
    return dict(pp, val=s)


def fit_val_tiles(config: Dict[str, Any], fold: Optional[int] = None, folds: int = 3,
                  without_site: Optional[str] = None
                  ) -> Tuple[List[pvdata.Tile], List[pvdata.Tile]]:
    """The train tiles a run fits on and validates on.

    ``fold`` given: fold ``fold`` of :func:`backend.learning.data.cv_folds` (``folds``
    folds). Otherwise ``"val_fraction": 0`` fits on the whole train split with no *val*
    (the post-processing then comes from the config, chosen by cross-validation), and
    any other fraction splits off whole clusters (:func:`backend.learning.data.split_train`).
    ``without_site`` (a tile name): the site cluster holding that tile
    (:func:`backend.learning.data.site_of`) is then removed from both, so the model
    never sees that site.

    Raises:
        ValueError: ``without_site`` names no train-split tile.
    """
    tiles = pvdata.list_tiles("train")
    if fold is not None:
        fit, val = pvdata.cv_folds(tiles, folds)[fold]
    else:
        frac = float(config.get("val_fraction", 0.15))
        if frac <= 0:
            fit, val = list(tiles), []
        else:
            # One fit/val split for every member of an ensemble (split_seed), so that
            # the ensemble's threshold can be chosen on tiles no member was fitted on.
            fit, val = pvdata.split_train(tiles, frac, int(config.get("split_seed", 0)))
    if without_site:
        out = {t.name for t in pvdata.site_of(without_site, tiles)}
        fit = [t for t in fit if t.name not in out]
        val = [t for t in val if t.name not in out]
    return fit, val


def train(config: Dict[str, Any], out_dir: Path, budget_s: Optional[float] = None,
          fold: Optional[int] = None, folds: int = 3,
          without_site: Optional[str] = None) -> ModelCard:
    """Train one member as described by ``config``; returns the written card.

    Args:
        config: the training config (see the module docstring).
        out_dir: folder for ``weights.safetensors`` and ``card.json`` (created).
        budget_s: wall-clock cap, seconds (default: the config's, else 600).
        fold: train the cross-validation model of this fold (:func:`fit_val_tiles`).
        folds: number of cross-validation folds.
        without_site: a train-split tile name: its whole site cluster is left out of
            fitting and validation (:func:`fit_val_tiles`) and named in the card's
            ``training.left_out_names``, which a retrain never replays.

    Raises:
        FileNotFoundError: the pv01 data is not where ``ORTHOLENS_DATA`` points.
        ValueError: ``without_site`` names no train-split tile.
    """
    import torch

    seed = int(config.get("seed", 0))
    set_seed(seed)
    threads = train_threads()
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    budget_s = float(budget_s if budget_s is not None else config.get("budget_s", 600))
    # A fixed step count makes runs reproducible whatever the machine's load; the
    # wall-clock budget then only caps the run (and is the schedule when no steps).
    max_steps = int(config["steps"]) if config.get("steps") else None

    fit, val = fit_val_tiles(config, fold, folds, without_site)
    left_out = ([t.name for t in pvdata.site_of(without_site, pvdata.list_tiles("train"))]
                if without_site else [])
    fit_a = pvdata.load_arrays(fit, float(config["gsd_m"]))
    card_d = _card_fields(config, fit_a["images"])
    card = ModelCard.from_dict(card_d)
    model = _new_model(card, config, device)
    look, scale_range = _appearance(config)
    run = _fit(model, card, config, fit_a, look, scale_range, budget_s, max_steps, seed,
               device)
    model = model.to("cpu").float().eval()
    pp = cv_postprocess(config)
    if val:
        val_a = pvdata.load_arrays(val, float(config["gsd_m"]))
        probs = predict_probs(model, normalize_batch(val_a["images"], card.normalize))
        pp = val_postprocess(config, probs, val_a["masks"], card.gsd_m, len(card.classes))
        print(f"val: {json.dumps(pp)}", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model.state_dict(), out_dir / "weights.safetensors")
    card_d.update({k: pp[k] for k in PP_KEYS if k in pp})
    card_d["training"] = {
        "data": "pv01 train split (Jiang et al. 2021, Multi-resolution dataset for "
                "photovoltaic panel segmentation, doi:10.5281/zenodo.5171712, CC BY 4.0)",
        "fit_tiles": len(fit), "val_tiles": len(val), "val_names": [t.name for t in val],
        "left_out_names": left_out,
        "fold": fold, "seed": seed, "split_seed": int(config.get("split_seed", 0)),
        "steps": run.steps, "batch_size": run.batch_size, "chip": run.chip,
        "budget_s": budget_s,
        "train_seconds": round(run.seconds, 1), "device": device, "threads": threads,
        "torch": torch.__version__, "final_loss": round(float(np.mean(run.losses[-50:])), 4),
        "config": config,
        "postprocess_chosen_on_val": pp.get("val") or {},
        "cross_validation": config.get("cross_validation"),
        "augmentation": dict(dataclasses.asdict(look), scale_range=list(scale_range)),
    }
    card_d["parameters"] = int(sum(p.numel() for p in model.parameters()))
    (out_dir / "card.json").write_text(json.dumps(card_d, indent=2) + "\n", "utf-8")
    return ModelCard.from_dict(card_d, out_dir)


def _card_fields(config: Dict[str, Any], images: np.ndarray) -> Dict[str, Any]:
    """The card fields of a new member: the config's, with the input normalisation
    (the config's, which a pretrained encoder expects, else the statistics of the fit
    ``images``, uint8 (N, B, H, W)) and default post-processing."""
    norm = dict(config["normalize"]) if config.get("normalize") else \
        normalize_stats(images)
    card_d = {k: config[k] for k in ("id", "version", "architecture", "encoder", "classes",
                                     "gsd_m", "tile_size", "overlap", "simplify_m")}
    card_d.update({"arch_kwargs": config.get("arch_kwargs", {}), "bands": 3,
                   "band_names": ["red", "green", "blue"], "dtype": "uint8",
                   "normalize": norm, "threshold": 0.5, "min_area_m2": 1.0,
                   "max_hole_m2": 0.5, "weights": "weights.safetensors",
                   "onnx": "model.onnx"})
    return card_d


def _new_model(card: ModelCard, config: Dict[str, Any], device: str):
    """The member's torch module on ``device`` (channels-last on CUDA): random weights,
    or with ``"pretrained"`` an ImageNet encoder (:mod:`backend.learning.pretrained`)."""
    import torch
    model = build_torch_model(card)
    pretrained = config.get("pretrained")
    if pretrained:
        from backend.learning.pretrained import init_encoder
        print(f"encoder: {init_encoder(model, pretrained)} tensors from {pretrained} "
              f"(ImageNet)", flush=True)
    model = model.to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _appearance(config: Dict[str, Any]):
    """``(look, scale_range)``: the appearance changes drawn in training (the recipe's,
    :data:`~backend.learning.augment.GENERALISE` or ``PLAIN``, with the config's
    ``appearance`` fields) and the scale range."""
    look = GENERALISE if config.get("recipe") == "generalise" else PLAIN
    if config.get("appearance"):  # the recipe's appearance changes, field by field
        look = dataclasses.replace(look, **{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in config["appearance"].items()})
    return look, tuple(config.get("scale_range", SCALE_RANGE))


@dataclasses.dataclass
class _Run:
    """What the training loop did: its steps and their losses, its time (seconds), and
    the batch size and chip side (px) it used."""

    steps: int
    losses: List[float]
    seconds: float
    batch_size: int
    chip: int


def _fit(model, card: ModelCard, config: Dict[str, Any], fit_a: Dict[str, np.ndarray],
         look, scale_range, budget_s: float, max_steps: Optional[int], seed: int,
         device: str) -> _Run:
    """Train ``model`` on the fit tiles (``fit_a``: images uint8 (N, B, H, W), masks
    uint8 (N, H, W)) until ``max_steps`` or ``budget_s`` seconds: AdamW (a pretrained
    encoder at ``encoder_lr_factor`` of the rate) with warm-up and cosine decay,
    cross-entropy + soft Dice (plus, with ``hard_negatives``, the cross-entropy of the
    hardest background pixels, :func:`backend.learning.losses.dice_ce_loss`),
    panel-rich tiles drawn more often."""
    import torch
    fit_x = normalize_batch(fit_a["images"], card.normalize)
    fit_y = torch.from_numpy(fit_a["masks"]).long()
    weights = pvdata.tile_sampling_weights(fit_a["masks"])
    opt = _optimizer(model, config)
    n_classes = len(card.classes)
    bs, chip = int(config.get("batch_size", 8)), int(config.get("chip", 256))
    hard_negatives = float(config.get("hard_negatives", 0.0))
    rng = np.random.default_rng(seed)
    t0 = time.time()
    step, losses = 0, []
    warmup = 30
    model.train()
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget_s or (max_steps is not None and step >= max_steps):
            break
        frac_t = step / max_steps if max_steps else elapsed / budget_s
        factor = lr_factor(step, frac_t, warmup, 0.02)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        idx = rng.choice(len(fit_x), size=bs, p=weights)
        x, y = augment_batch(fit_x[idx], fit_y[idx], chip, rng, look=look,
                             norm=card.normalize, scale_range=scale_range)
        x, y = x.to(device), y.to(device)
        losses.append(optimizer_step(model, opt, x,
                                     lambda logits: dice_ce_loss(logits, y, n_classes,
                                                                 hard_negatives),
                                     device, channels_last=True))
        step += 1
        if step % 25 == 0:
            print(f"step {step:5d}  {elapsed:6.0f}s  loss {np.mean(losses[-25:]):.4f}",
                  flush=True)
    return _Run(step, losses, time.time() - t0, bs, chip)


def _optimizer(model, config: Dict[str, Any]):
    """AdamW over the model, at ``lr``; a pretrained encoder learns slower than the
    fresh decoder (``encoder_lr_factor``), so that fine-tuning keeps what ImageNet
    taught it. Each group's ``base_lr`` is its rate before the schedule."""
    import torch
    lr = float(config.get("lr", 2e-3))
    enc_factor = float(config.get("encoder_lr_factor", 1.0))
    groups = [{"params": list(model.parameters()), "base_lr": lr}]
    if enc_factor != 1.0:
        groups = [{"params": [p for n, p in model.named_parameters()
                              if not n.startswith("encoder.")], "base_lr": lr},
                  {"params": list(model.encoder.parameters()), "base_lr": lr * enc_factor}]
    return torch.optim.AdamW(groups, lr=lr,
                             weight_decay=float(config.get("weight_decay", 1e-4)))


def make_ensemble(config: Dict[str, Any], out_dir: Path) -> ModelCard:
    """Write an ensemble card whose post-processing is chosen on the *val* tiles.

    The config gives ``id, version, members [{id, weight}], tta, shifts`` (and may
    give ``tile_size, overlap, simplify_m``, and ``gsd_range_m`` and ``tiling``, which
    the card keeps as they are); classes, bands and GSD come from the
    first member, which must share them with the others. The fused probabilities of
    the whole ensemble (members x TTA x tilings, through the detection pipeline) on
    the members' common validation split choose threshold / min area / hole size,
    as for a single model. Held-out data is never used.

    Raises:
        ModelNotFound: a member is missing.
        ValueError: the members were validated on different tiles.
        FileNotFoundError: the pv01 data is missing.
    """
    from backend.inference.detect import run_detect
    from backend.inference.predictors import get_predictor
    members = [load_card(m["id"]) for m in config["members"]]
    first = members[0]
    names = set(first.val_names)
    for m in members[1:]:
        if set(m.val_names) != names:
            raise ValueError(f"member {m.id} was validated on other tiles than {first.id}; "
                             f"train members with the same split_seed")
    d = {"id": config["id"], "version": config["version"], "kind": "ensemble",
         "members": config["members"], "tta": config.get("tta", ["identity"]),
         "shifts": bool(config.get("shifts", False)),
         "classes": [c.to_dict() for c in first.classes],
         "bands": first.bands, "band_names": first.band_names,
         "dtype": first.dtype, "gsd_m": first.gsd_m,
         "tile_size": int(config.get("tile_size", first.tile_size)),
         "overlap": int(config.get("overlap", first.overlap)),
         "simplify_m": float(config.get("simplify_m", first.simplify_m)),
         "threshold": 0.5, "min_area_m2": 1.0, "max_hole_m2": 0.5}
    d.update({k: config[k] for k in ("gsd_range_m", "tiling") if k in config})
    out_dir.mkdir(parents=True, exist_ok=True)
    card_path = out_dir / "card.json"
    card_path.write_text(json.dumps(d, indent=2) + "\n", "utf-8")
    card = ModelCard.from_dict(d, out_dir)
    predictor = get_predictor(card)
    val = [t for t in pvdata.list_tiles("train") if t.name in names]
    probs, masks = [], []
    for t in val:
        got = []
        run_detect({"type": "detect", "model": card.id,
                    "source": {"kind": "file", "path": str(t.image_path)}}, [],
                   predictor=predictor, on_probs=lambda p, v, g: got.append(p[:card.num_outputs]))
        probs.append(got[0])
        masks.append(t.read()[1])
    pp = val_postprocess(config, np.stack(probs), np.stack(masks), card.gsd_m,
                         len(card.classes))
    print(f"val: {json.dumps(pp)}", flush=True)
    d.update({k: pp[k] for k in PP_KEYS if k in pp})
    d["training"] = {"val_tiles": len(val), "val_names": sorted(names), "config": config,
                     "postprocess_chosen_on_val": pp["val"],
                     "cross_validation": config.get("cross_validation")}
    card = ModelCard.from_dict(d, out_dir)
    write_card(card)
    return card


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock training budget in seconds (default: config)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: <models>/<id>)")
    ap.add_argument("--fold", type=int, default=None,
                    help="train the cross-validation model of this fold (0-based)")
    ap.add_argument("--folds", type=int, default=3, help="number of folds (default 3)")
    ap.add_argument("--without-site", default=None, metavar="TILE",
                    help="leave out the whole site cluster holding this train-split tile "
                         "(a model that never saw that site)")
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8"))
    out = args.out or (models_dir() / config["id"])
    if config.get("kind") == "ensemble":
        card = make_ensemble(config, out)
        print(f"wrote {out}/card.json (threshold {card.threshold}, min area "
              f"{card.min_area_m2} m2)")
        return 0
    card = train(config, out, args.budget_s, args.fold, args.folds, args.without_site)
    print(f"wrote {out}/card.json and weights.safetensors "
          f"(threshold {card.threshold}, min area {card.min_area_m2} m2)")
    if args.fold is None and not args.without_site:
        export_onnx(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
