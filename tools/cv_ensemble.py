"""Cross-validated choice of an ensemble's fusion: members, test-time augmentation,
post-processing.

Usage::

    python -m tools.cv_ensemble models/configs/pv-ensemble.json [--write-config]

The fold models of every member config (``tools.cv`` with ``--train`` trains them in
``<work>/<id>/fold<k>``) predict every validation tile of their fold out of fold, at
0.1, 0.2 and 0.3 m (:func:`tools.cv.coarsen`), once per test-time augmentation of
:data:`TTA` (the D4 flips and a rotation; each prediction mapped back). Every fusion
variant of :func:`variants` is then the mean of those probabilities over its members
and augmentations, so a variant costs no new inference: each member alone, the members
together without augmentation, and with it. Each variant gets its own post-processing
chosen on its pooled 0.1 m out-of-fold predictions (:func:`tools.cv.choose_all`) and
per-fold figures at each GSD (:func:`tools.cv.summarise`).

The rule, fixed before any variant was scored: among the variants with at least three
members, the one with the highest mean of the fold-mean object F1 at 0.1, 0.2 and
0.3 m wins (the rule that chose the members' recipe); a variant with augmentation must
beat the same members without it by more than 0.005 to be chosen, since it costs four
times the inference. Shifted tilings cannot be scored on 256-pixel tiles (one tile
covers each, there is no seam to hide), so the ensemble runs one tiling.

``--write-config`` stores the chosen ``tta``, the post-processing, the
cross-validation figures and the GSDs the fusion serves (:func:`serving_range`) in the
ensemble config (``--member-cards``: each shipped member without figures of its own gets
its row's post-processing and figures), where ``build.py train`` takes them
for the ensemble card. The member out-of-fold probabilities are kept in
``<out>/<id>-oof.npz`` for later measurements (review ranking). Held-out tiles are never
read here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.config import REPO
from backend.inference.predictors import TorchPredictor, apply_tta, invert_tta
from backend.learning import data as pvdata
from backend.models.catalog import load_card
from protocol.choice import served_range
from protocol.errors import ModelNotFound
from tools.cv import (FACTORS, boundary_gsd, coarsen, cv_figures, fold_card, pad32,
                      summarise, write_report)

#: Test-time augmentations predicted for every tile (flips and a quarter turn).
TTA = ("identity", "hflip", "vflip", "rot90")
#: Smallest gain of mean object F1 that pays for four times the inference.
TTA_MIN_GAIN = 0.005


def member_oof(configs: Sequence[Dict[str, Any]], work: Path, folds: int,
               train_missing: bool, only: Optional[Sequence[int]] = None
               ) -> Tuple[np.ndarray, List[Tuple[int, int, int]], List[np.ndarray]]:
    """Out-of-fold foreground probabilities of every member under every augmentation.

    Args:
        configs: the member configs (one class: photovoltaic).
        work: where fold models are found (or trained with ``train_missing``).

    Returns:
        ``(probs, keys, refs)``: probs float16 (members, len(TTA), items, H, W) of the
        panel class, where item ``i`` is ``keys[i] = (fold, factor, tile index)`` at
        the model's GSD (coarser imagery resampled back to it, as detection reads it),
        padded to the largest tile (256 px); ``refs[i]`` the bool reference on the
        item's own grid.
    """
    tiles = pvdata.list_tiles("train")
    splits = pvdata.cv_folds(tiles, folds)
    keys: List[Tuple[int, int, int]] = []
    refs: List[np.ndarray] = []
    images: List[np.ndarray] = []
    use = set(range(folds) if only is None else only)
    for k, (_, val) in enumerate(splits):
        if k not in use:
            continue
        for ti, t in enumerate(val):
            img, mask = t.read()
            for f in FACTORS:
                im, ref = coarsen(img, mask, f)
                keys.append((k, f, ti))
                refs.append(ref)
                images.append(im)
    side = max(im.shape[-1] for im in images)
    out = np.zeros((len(configs), len(TTA), len(images), side, side), np.float16)
    for m, config in enumerate(configs):
        for k in sorted(use):
            predictor = TorchPredictor(fold_card(config, work, k, folds, train_missing))
            for i in (i for i, key in enumerate(keys) if key[0] == k):
                im = images[i]
                h, w = im.shape[1:]
                for a, name in enumerate(TTA):
                    x = np.ascontiguousarray(apply_tta(pad32(im)[None], name))
                    p = invert_tta(predictor.predict_raw(x), name)[0, 1, :h, :w]
                    out[m, a, i, :h, :w] = p
        print(f"member {config['id']}: {len(keys)} out-of-fold predictions x "
              f"{len(TTA)} augmentations", flush=True)
    return out, keys, refs


def variants(names: Sequence[str]) -> List[Tuple[str, Tuple[int, ...], Tuple[str, ...]]]:
    """``[(label, member indexes, augmentations)]`` scored: each member alone, then all
    members without and with augmentation."""
    every = tuple(range(len(names)))
    return ([(n, (i,), ("identity",)) for i, n in enumerate(names)]
            + [("+".join(names), every, ("identity",)),
               ("+".join(names) + " x TTA", every, TTA)])


def fused_oof(probs: np.ndarray, keys: Sequence[Tuple[int, int, int]],
              refs: Sequence[np.ndarray], members: Sequence[int],
              tta: Sequence[str]) -> Dict[int, List]:
    """``factor -> [(fold, probs float32 (2, h, w), ref)]``: the mean over ``members``
    and ``tta`` of :func:`member_oof`'s probabilities, as ``tools.cv`` scores them."""
    a = [TTA.index(t) for t in tta]
    out: Dict[int, List] = {f: [] for f in FACTORS}
    for i, (k, f, _) in enumerate(keys):
        h, w = refs[i].shape[0] * f, refs[i].shape[1] * f
        fg = probs[list(members)][:, a, i, :h, :w].astype(np.float32).mean((0, 1))
        out[f].append((k, np.stack([1.0 - fg, fg]), refs[i]))
    return out


def score_rule(result: Dict[str, Any]) -> float:
    """The rule's score: the mean over GSDs of the fold-mean object F1."""
    return float(np.mean([v["object_f1"]["mean"] for v in result["gsd"].values()]))


def choose(rows: List[Dict[str, Any]], n_members: int) -> Dict[str, Any]:
    """The variant the rule (module docstring) picks among ``rows`` (each with
    ``members``, ``tta``, ``score``)."""
    full = [r for r in rows if len(r["members"]) >= min(3, n_members)]
    plain = max((r for r in full if len(r["tta"]) == 1), key=lambda r: r["score"])
    best = max(full, key=lambda r: r["score"])
    if len(best["tta"]) > 1 and round(best["score"] - plain["score"], 4) <= TTA_MIN_GAIN:
        return plain
    return best


def serving_range(rows: List[Dict[str, Any]], chosen: str,
                  member_range: Sequence[float]) -> List[float]:
    """The layer GSDs the chosen fusion serves (``gsd_range_m``): from the first member's
    low end up to the coarsest scored GSD at which the fusion's fold-mean object F1 is
    at least the first member's (the single model a device falls back to), stopping at
    the first GSD where it loses (the model's own GSD, the finest, is always served:
    the rule chose the fusion there); the high end is the geometric mean of that GSD
    and the next scored one (0.245 between 0.2 and 0.3 m, rounded to 0.25), or the member's own
    high end when the fusion never loses.

    Args:
        rows: the scored variants (:func:`cross_validate_fusion`), the first member's
            alone first.
        chosen: the label of the chosen variant.
        member_range: the first member's ``[low, high]`` metres per pixel.

    Returns:
        ``[low, high]`` in metres per pixel of the layer.
    """
    single = rows[0]["cv"]["gsd"]
    fused = next(r for r in rows if r["label"] == chosen)["cv"]["gsd"]
    gsds = sorted(fused, key=float)
    high = float(member_range[1])
    for i, g in enumerate(gsds[1:], 1):
        if fused[g]["object_f1"]["mean"] < single[g]["object_f1"]["mean"]:
            high = boundary_gsd(float(gsds[i - 1]), float(g))
            break
    return [float(member_range[0]), high]


def _served(model_id: str, gsd_m: float) -> List[float]:
    """The GSDs the shipped card of ``model_id`` serves (``protocol.choice.served_range``;
    a model with no card yet serves what a card without a range does)."""
    try:
        card = load_card(model_id).to_dict()
    except ModelNotFound:
        card = {"gsd_m": gsd_m}
    return list(served_range(card))


def cross_validate_fusion(config: Dict[str, Any], work: Path, folds: int = 3,
                          train_missing: bool = False,
                          configs_dir: Optional[Path] = None,
                          keep: Optional[Path] = None,
                          only: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Score every fusion variant out of fold and choose one (module docstring);
    ``only``: the folds scored (default all; a run before every fold model exists).

    Returns:
        ``{"id", "variants": [{label, members, tta, score, cv}], "chosen": label,
        "postprocess", "cross_validation"}``.
    """
    configs_dir = configs_dir or (REPO / "models" / "configs")
    configs = [json.loads((configs_dir / f"{m['id']}.json").read_text("utf-8"))
               for m in config["members"]]
    names = [c["id"] for c in configs]
    probs, keys, refs = member_oof(configs, work, folds, train_missing, only)
    if keep is not None:
        np.savez_compressed(keep, probs=probs, keys=np.asarray(keys),
                            **{f"ref{i}": r for i, r in enumerate(refs)})
    gsd_m = float(configs[0]["gsd_m"])
    rows = []
    for label, members, tta in variants(names):
        r = summarise(dict(config, simplify_m=configs[0].get("simplify_m", 0.05)),
                      fused_oof(probs, keys, refs, members, tta), {}, gsd_m, 1, folds)
        rows.append({"label": label, "members": [names[i] for i in members],
                     "tta": list(tta), "score": round(score_rule(r), 4), "cv": r})
        print(f"{label}: rule score {rows[-1]['score']:.4f}", flush=True)
    best = choose(rows, len(names))
    first = _served(names[0], gsd_m)
    return {"id": config["id"], "folds_scored": sorted(set(k for k, _, _ in keys)),
            "variants": rows, "chosen": best["label"],
            "gsd_range_m": serving_range(rows, best["label"], first),
            "tta": best["tta"], "postprocess": best["cv"]["postprocess"],
            "cross_validation": cv_figures(best["cv"]["gsd"],
                                           len(set(k for k, _, _ in keys)))}


def member_config(member: Dict[str, Any], row: Dict[str, Any], folds: int
                  ) -> Optional[Dict[str, Any]]:
    """A member's config completed with its own out-of-fold choice: the post-processing
    and figures of its row (``row["cv"]``, the member alone); None when the member's
    config already holds cross-validation figures (its own ``tools.cv --write-config``
    run, which scored every fold)."""
    if "cross_validation" in member:
        return None
    return dict(member, **row["cv"]["postprocess"],
                cross_validation=cv_figures(row["cv"]["gsd"], folds))


def markdown(r: Dict[str, Any]) -> str:
    """A Markdown table of :func:`cross_validate_fusion`'s variants."""
    lines = [f"# Fusion of {r['id']} on cross-validation", "",
             f"Folds scored: {', '.join(str(k) for k in r['folds_scored'])} of the "
             f"leave-cluster-out folds of the pv01 train split.", "",
             "| variant | rule score | object F1 0.1 / 0.2 / 0.3 m (fold mean ± std) | "
             "pixel IoU 0.1 m | threshold | min area m² |", "|---|---|---|---|---|---|"]
    for v in r["variants"]:
        g = v["cv"]["gsd"]
        f1 = " / ".join(f"{x['object_f1']['mean']:.3f} ± {x['object_f1']['std']:.3f}"
                        for x in g.values())
        pp = v["cv"]["postprocess"]
        lines.append(f"| {v['label']} | {v['score']:.4f} | {f1} | "
                     f"{g['0.1']['pixel_iou']['mean']:.3f} | {pp['threshold']} | "
                     f"{pp['min_area_m2']} |")
    lines += ["", f"Chosen: **{r['chosen']}**."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "cv" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "cv")
    ap.add_argument("--train", action="store_true", help="train missing fold models")
    ap.add_argument("--only-folds", default=None, metavar="K,K",
                    help="score these folds only (0-based, comma-separated)")
    ap.add_argument("--write-config", action="store_true",
                    help="store the chosen fusion and post-processing in the config")
    ap.add_argument("--member-cards", action="store_true",
                    help="give each shipped member card without cross-validation figures "
                         "its own out-of-fold post-processing and figures")
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    only = ([int(k) for k in args.only_folds.split(",")] if args.only_folds else None)
    r = cross_validate_fusion(config, args.work, args.folds, args.train,
                              args.config.parent, args.out / f"{config['id']}-oof.npz", only)
    write_report(args.out, f"{config['id']}-fusion", r, markdown(r))
    if args.write_config:
        config.update(r["postprocess"])
        config["tta"] = r["tta"]
        config["shifts"] = False
        config["cross_validation"] = r["cross_validation"]
        config["gsd_range_m"] = r["gsd_range_m"]
        args.config.write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    if args.member_cards:
        write_member_cards(r, args.config.parent)
    return 0


def write_member_cards(r: Dict[str, Any], configs_dir: Path) -> None:
    """Give each shipped member card whose config holds no cross-validation its own
    out-of-fold post-processing and figures (:func:`member_config`,
    ``tools.cv.apply_to_card``, which also scores them on the card's validation tiles)."""
    from backend.config import models_dir
    from tools.cv import apply_to_card
    for row in r["variants"]:
        if len(row["members"]) != 1:
            continue
        mid = row["members"][0]
        member = json.loads((configs_dir / f"{mid}.json").read_text("utf-8"))
        config = member_config(member, row, len(r["folds_scored"]))
        if config is not None and (models_dir() / mid / "card.json").is_file():
            apply_to_card(config, models_dir() / mid)
            print(f"{mid}: its own out-of-fold post-processing and figures", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
