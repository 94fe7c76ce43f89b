"""Leave-cluster-out cross-validation of a training config on the pv01 train split.

Usage::

    python -m tools.cv models/configs/pv-unet-efl0.json [--train] [--write-config]
    python -m tools.cv models/configs/pv-ensemble.json     # fuses the members' fold models

Folds come from :func:`backend.learning.data.cv_folds`: whole site clusters are
validation in exactly one fold; the large solar-roof site is fitted in every fold.
For a member config, fold ``k``'s model is trained (``--train``, or found) in
``<work>/<id>/fold<k>`` by :func:`backend.learning.train.train` with the same recipe,
seed and steps as the shipped model. For an ensemble config the fold models of its
members are fused as the ensemble predictor fuses them (weighted mean of probabilities
over members and test-time augmentations; one tiling, as the 256 px tiles fit one
model tile).

Every validation tile is predicted by the model that never saw its site (out-of-fold),
at the model's GSD (0.1 m) and as a coarser orthophoto shows it: the tile averaged down
by 2 or 3 (0.2 m, 0.3 m: GDAL's ``average`` on whole blocks) and resampled back to the
model's GSD bilinearly, as the detection pipeline reads coarser rasters; those are scored
on the coarse grid against the reference mask averaged the same way (a coarse pixel is a
panel when at least half of it is), as :func:`tools.evaluate.eval_heldout_at` scores the
held-out tiles.

The post-processing (probability threshold, minimum object area, hole size) is chosen
for the best pooled object F1 on the 0.1 m out-of-fold predictions
(:func:`backend.learning.train.choose_postprocess`), then the object filters on top
(:func:`choose_filters`), and every figure is then reported
per fold with mean, standard deviation and range. ``--write-config`` stores the choice
and the summary in the config, where the final training run (on all train tiles, no
*val*) takes them from. Held-out tiles are never read here.

Output: ``<out>/<id>.json`` and ``<out>/<id>.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.config import REPO
from backend.inference.predictors import Predictor, EnsemblePredictor, TorchPredictor
from backend.learning import data as pvdata
from backend.learning.train import choose_postprocess, postprocessed, train
from backend.models.card import ModelCard
from protocol.metrics import Counts, compare

#: Coarser GSDs scored besides the model's: municipal orthophotos come at 0.2-0.3 m.
FACTORS = (1, 2, 3)
#: GSDs, as multiples of the model's, at which the coarser imagery is also run (besides
#: the model's own, 1): each coarse pixel is a whole number of pixels of the run.
RUNS = {2: (2,), 3: (1.5, 3)}


def fold_dir(work: Path, model_id: str, fold: int) -> Path:
    """``<work>/<model_id>/fold<fold>``: where fold ``fold``'s model of a config lives."""
    return work / model_id / f"fold{fold}"


def fold_card(config: Dict[str, Any], work: Path, fold: int, folds: int,
              train_missing: bool) -> ModelCard:
    """The card of a member config's fold model, trained first when missing and
    ``train_missing``.

    Raises:
        FileNotFoundError: missing and not to be trained.
    """
    d = fold_dir(work, config["id"], fold)
    if not (d / "weights.safetensors").is_file():
        if not train_missing:
            raise FileNotFoundError(f"no fold {fold} model of {config['id']} in {d}; "
                                    f"run with --train")
        return train(config, d, fold=fold, folds=folds)
    return ModelCard.from_dict(json.loads((d / "card.json").read_text("utf-8")), d)


def fold_predictor(config: Dict[str, Any], work: Path, fold: int, folds: int,
                train_missing: bool, configs_dir: Path) -> Predictor:
    """The predictor of fold ``fold``: a :class:`TorchPredictor` on the CPU, or for an
    ensemble config an :class:`EnsemblePredictor` over its members' fold models (members'
    configs are ``<configs_dir>/<member id>.json``)."""
    if config.get("kind") != "ensemble":
        return TorchPredictor(fold_card(config, work, fold, folds, train_missing))
    members = []
    for m in config["members"]:
        mc = json.loads((configs_dir / f"{m['id']}.json").read_text("utf-8"))
        members.append((TorchPredictor(fold_card(mc, work, fold, folds, train_missing)),
                        float(m.get("weight", 1.0))))
    first = members[0][0].card
    card = ModelCard.from_dict({
        "id": config["id"], "version": config.get("version", "0"), "kind": "ensemble",
        "members": config["members"], "tta": config.get("tta", ["identity"]),
        "classes": [c.to_dict() for c in first.classes], "bands": first.bands,
        "gsd_m": first.gsd_m, "tile_size": first.tile_size, "overlap": first.overlap,
        "threshold": 0.5, "min_area_m2": 0.0, "simplify_m": first.simplify_m})
    return EnsemblePredictor(card, members)


def coarsen(image: np.ndarray, mask: np.ndarray, factor: int, run: float = 1.0):
    """A tile as a ``factor`` times coarser orthophoto shows it, read at the GSD a model
    runs at.

    Args:
        image: uint8 (B, H, W) at the data's 0.1 m (``pvdata.NATIVE_GSD_M``).
        mask: uint8/bool (H, W) reference.
        factor: integer coarsening of the imagery (1: the 0.1 m tile).
        run: the GSD the imagery is resampled to, as a multiple of 0.1 m: the model's,
            as the detection pipeline reads any raster (bilinear, antialiased when it
            makes the imagery coarser, as GDAL's warper widens its kernel then).

    Returns:
        ``(image uint8 (B, round(h * factor / run), ...) at ``run`` x 0.1 m, reference
        bool (h, w) on the imagery's grid)`` with ``h = H // factor`` (the bottom and
        right remainders are cropped).
    """
    if factor == 1 and run == 1:
        return image, mask > 0
    import torch
    import torch.nn.functional as F
    b, hh, ww = image.shape
    h, w = hh // factor, ww // factor
    img = image[:, :h * factor, :w * factor].astype(np.float32)
    small = img.reshape(b, h, factor, w, factor).mean((2, 4))
    ref = (mask[:h * factor, :w * factor] > 0).reshape(h, factor, w, factor).mean((1, 3))
    size = (int(round(h * factor / run)), int(round(w * factor / run)))
    if size == (h, w):
        out = small
    else:
        out = F.interpolate(torch.from_numpy(small)[None], size=size, mode="bilinear",
                            align_corners=False, antialias=size[0] < h)[0].numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8), ref >= 0.5


def to_coarse(pred: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A bool (H, W) prediction on the imagery's grid of ``shape``: the share of each
    imagery pixel the prediction covers (area average) at least a half, as polygons are
    rasterised on that grid (for a whole ratio: the majority of each block)."""
    if pred.shape == tuple(shape):
        return pred
    import torch
    import torch.nn.functional as F
    share = F.interpolate(torch.from_numpy(pred.astype(np.float32))[None, None],
                          size=tuple(shape), mode="area")[0, 0].numpy()
    return share >= 0.5


def predict(predictor: Predictor, images: Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities float32 (N, 1 + classes, H, W) of uint8 tiles (B, H, W), H and W
    multiples of 32 (the fused channels only, for an ensemble)."""
    n_out = predictor.card.num_outputs
    return np.concatenate([predictor.predict_raw(im[None])[:, :n_out] for im in images])


def pad32(image: np.ndarray) -> np.ndarray:
    """Reflect-pad a (B, H, W) tile at the bottom and right to multiples of 32."""
    b, h, w = image.shape
    ph, pw = -h % 32, -w % 32
    return np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect") if ph or pw else image


def score(probs: np.ndarray, mask: np.ndarray, pp: Dict[str, float], gsd_m: float,
          n_classes: int) -> Counts:
    """Counts of one tile's post-processed prediction (class 1; ``probs`` at ``gsd_m``)
    against its reference (``mask`` on the imagery's grid, :func:`to_coarse`)."""
    return compare(to_coarse(postprocessed(probs, pp, gsd_m, n_classes) == 1, mask.shape),
                   mask)


#: Object filters tried (:func:`backend.inference.postprocess.filter_objects`).
SOLIDITIES = (0.0, 0.7, 0.75, 0.8, 0.85)
SCORES = (0.0, 0.8, 0.85, 0.9)


def choose_filters(oof: Sequence, pp: Dict[str, float], gsd_m: float, n_classes: int,
                   iou_tol: float = 0.005) -> Dict[str, float]:
    """The strictest object filters that cost nothing out of fold.

    Every pair of :data:`SOLIDITIES` x :data:`SCORES` is scored on the pooled 0.1 m
    out-of-fold predictions ``[(fold, probs, ref)]`` with the post-processing ``pp``;
    of the pairs whose object F1 is the best and whose pixel IoU is within ``iou_tol``
    of the unfiltered one, the strictest (largest sum of the two limits) is chosen.
    The train split has few false objects to remove, so the filters are set as strict
    as the true objects allow: what they remove on a new site are shapes and
    confidences no panel of the train sites had.

    Returns:
        ``{"min_solidity", "min_score"}``.
    """
    rows = []
    for sol in SOLIDITIES:
        for sc in SCORES:
            tot = Counts()
            for _, p, ref in oof:
                tot.add(score(p, ref, dict(pp, min_solidity=sol, min_score=sc), gsd_m,
                              n_classes))
            s = tot.summary()
            rows.append((round(s["object_f1"], 4), s["pixel_iou"], sol, sc))
    for r in rows:
        print(f"  filters: solidity >= {r[2]:.2f}, score >= {r[3]:.2f}: object F1 {r[0]:.4f}, "
              f"pixel IoU {r[1]:.4f}", flush=True)
    base_iou = rows[0][1]
    ok = [r for r in rows if r[1] >= base_iou - iou_tol]
    best_f1 = max(r[0] for r in ok)
    _, _, sol, sc = max((r for r in ok if r[0] == best_f1), key=lambda r: (r[2] + r[3], r[2]))
    return {"min_solidity": sol, "min_score": sc}


def polygons_of(probs: np.ndarray, pp: Dict[str, float], gsd_m: float, n_classes: int,
                simplify_m: float, ortho: bool):
    """The detection pipeline's polygons (class 1) of one tile's probabilities on a
    north-up grid of ``gsd_m`` metres with its origin at (0, 0): ``(polygons, transform)``."""
    from rasterio import Affine
    from backend.inference.postprocess import polygonize
    cm = postprocessed(probs, pp, gsd_m, n_classes)
    transform = Affine(gsd_m, 0.0, 0.0, 0.0, -gsd_m, 0.0)
    dets = polygonize(cm, probs, transform, simplify_m, pp["min_area_m2"], ortho=ortho)
    return [d.geometry for d in dets if d.class_id == 1], transform


def vertices(geom) -> int:
    """Vertices of a polygon's rings (the closing vertex not counted) or of a
    multipolygon's parts."""
    if geom.geom_type == "MultiPolygon":
        return sum(vertices(g) for g in geom.geoms)
    return sum(len(r.coords) - 1 for r in [geom.exterior, *geom.interiors])


def choose_regularisation(oof: Sequence, pp: Dict[str, float], gsd_m: float,
                          n_classes: int, simplify_m: float) -> Dict[str, Any]:
    """Whether replacing near-rectangular outlines by rectangles
    (:func:`backend.inference.postprocess.orthogonalize`) pays, on the polygons of the
    pooled 0.1 m out-of-fold predictions rasterised back onto each tile's grid.

    Outlines are regularised only when that raises the object F1, or keeps it and cuts
    the vertices per polygon; vertices and pixel IoU are reported both ways.

    Returns:
        ``{"orthogonalize": bool, "plain": {object_f1, pixel_iou, vertices_per_polygon},
        "orthogonalized": {...}}``.
    """
    from rasterio.features import rasterize
    out: Dict[str, Any] = {}
    for name, ortho in (("plain", False), ("orthogonalized", True)):
        tot, nv, npoly = Counts(), 0, 0
        for _, p, ref in oof:
            polys, transform = polygons_of(p, pp, gsd_m, n_classes, simplify_m, ortho)
            nv += sum(vertices(g) for g in polys)
            npoly += len(polys)
            pred = rasterize(polys, out_shape=ref.shape, transform=transform, fill=0,
                             default_value=1, dtype="uint8") > 0 if polys else \
                np.zeros(ref.shape, bool)
            tot.add(compare(pred, ref))
        s = tot.summary()
        out[name] = {"object_f1": round(s["object_f1"], 4),
                     "pixel_iou": round(s["pixel_iou"], 4), "polygons": npoly,
                     "vertices_per_polygon": round(nv / max(npoly, 1), 1)}
    plain, ortho = out["plain"], out["orthogonalized"]
    out["orthogonalize"] = bool(
        ortho["object_f1"] > plain["object_f1"]
        or (ortho["object_f1"] == plain["object_f1"]
            and ortho["vertices_per_polygon"] < plain["vertices_per_polygon"]))
    return out


def spread(values: List[float]) -> Dict[str, Any]:
    """``{mean, std, min, max, folds}`` of per-fold values (population std)."""
    v = np.asarray(values, float)
    return {"mean": round(float(np.nanmean(v)), 4), "std": round(float(np.nanstd(v)), 4),
            "min": round(float(np.nanmin(v)), 4), "max": round(float(np.nanmax(v)), 4),
            "folds": [round(float(x), 4) for x in v]}


def imagery(config: Dict[str, Any]) -> Tuple[Tuple[int, ...], Dict[int, tuple], float]:
    """``(factors, extra runs, model run)`` of a config's cross-validation: the imagery
    GSDs scored (multiples of 0.1 m), for the 0.1 m model also run at other GSDs
    (:data:`RUNS`), and the model's own GSD as a multiple of 0.1 m. A model of a coarser
    GSD (``gsd_m`` 0.2 or 0.3) is scored on 0.2 and 0.3 m imagery read at its GSD; its
    post-processing is chosen on the imagery of its own GSD.

    Raises:
        ValueError: a ``gsd_m`` that is not 0.1 m times one of :data:`FACTORS`.
    """
    run = float(config["gsd_m"]) / pvdata.NATIVE_GSD_M
    if abs(run - 1.0) < 1e-6:
        return FACTORS, RUNS, 1.0
    if not any(abs(run - f) < 1e-6 for f in FACTORS):
        raise ValueError(f"cross-validation scores 0.1 m x {FACTORS} imagery: a model of "
                         f"{config['gsd_m']} m is not one of them")
    return tuple(f for f in FACTORS if f > 1), {}, float(round(run))


def cross_validate(config: Dict[str, Any], work: Path, folds: int = 3,
                   train_missing: bool = False, configs_dir: Optional[Path] = None,
                   keep: Optional[Path] = None) -> Dict[str, Any]:
    """Out-of-fold predictions, the post-processing chosen on them, and per-fold
    figures at each GSD of :data:`FACTORS` (see the module docstring); ``keep``: also
    save the out-of-fold predictions there (:func:`save_oof`).

    Returns:
        ``{"id", "folds", "postprocess": {threshold, min_area_m2, max_hole_m2},
        "tiles_per_fold", "gsd": {"0.1": {"pixel_iou": spread, "object_f1": spread,
        "pooled": summary}, ...}}``.

    Raises:
        FileNotFoundError: fold models missing (without ``train_missing``) or no data.
    """
    configs_dir = configs_dir or (REPO / "models" / "configs")
    tiles = pvdata.list_tiles("train")
    splits = pvdata.cv_folds(tiles, folds)
    factors, extra_runs, model_run = imagery(config)
    oof: Dict[int, List] = {f: [] for f in factors}  # factor -> [(fold, probs, ref)]
    runs: Dict[tuple, List] = {(f, r): [] for f, rs in extra_runs.items() for r in rs}
    gsd_m, n_classes = None, None
    for k, (_, val) in enumerate(splits):
        predictor = fold_predictor(config, work, k, folds, train_missing, configs_dir)
        gsd_m, n_classes = predictor.card.gsd_m, len(predictor.card.classes)
        for t in val:
            img, mask = t.read()
            for f in factors:
                for r in (model_run, *extra_runs.get(f, ())):
                    im, ref = coarsen(img, mask, f, r)
                    h, w = im.shape[1:]
                    p = predict(predictor, [pad32(im)])[0][:, :h, :w]
                    (oof[f] if r == model_run else runs[(f, r)]).append((k, p, ref))
        print(f"fold {k}: {len(val)} validation tiles predicted", flush=True)
    if keep is not None:
        save_oof(keep, oof)
    out = summarise(config, oof, runs, gsd_m, n_classes, folds)
    out.update({"tiles_per_fold": [len(v) for _, v in splits],
                "sites_per_fold": [len(pvdata.clusters(v)) for _, v in splits]})
    return out


def save_oof(path: Path, oof: Dict[int, List]) -> None:
    """Save out-of-fold predictions (imagery factor -> ``[(fold, probs (C, H, W), ref
    (h, w) bool)]``) as a compressed npz that :func:`load_oof` reads back (probabilities
    as float16)."""
    arrays: Dict[str, np.ndarray] = {}
    for f, items in oof.items():
        for i, (k, p, ref) in enumerate(items):
            arrays[f"f{f}_{i}_k{k}_p"] = p.astype(np.float16)
            arrays[f"f{f}_{i}_k{k}_ref"] = ref
    np.savez_compressed(path, **arrays)


def load_oof(path: Path) -> Dict[int, List]:
    """What :func:`save_oof` saved: imagery factor -> ``[(fold, probs float32 (C, H, W),
    ref bool (h, w))]`` in the saved order."""
    with np.load(path) as z:
        keys = sorted((int(f[1:]), int(i), int(k[1:])) for f, i, k, kind in
                      (n.split("_") for n in z.files) if kind == "p")
        out: Dict[int, List] = {}
        for f, i, k in keys:
            name = f"f{f}_{i}_k{k}"
            out.setdefault(f, []).append((k, z[name + "_p"].astype(np.float32),
                                          z[name + "_ref"].astype(bool)))
    return out


def choose_all(fine: Sequence, gsd_m: float, n_classes: int, simplify_m: float
               ) -> Dict[str, Any]:
    """The post-processing chosen on pooled 0.1 m out-of-fold predictions ``[(fold,
    probs, ref)]``: threshold, minimum area and hole size
    (:func:`backend.learning.train.choose_postprocess`), then the object filters
    (:func:`choose_filters`) and outline regularisation (:func:`choose_regularisation`,
    whose comparison is returned under ``"_regularisation"``)."""
    pp = choose_postprocess(np.stack([p for _, p, _ in fine]),
                            np.stack([r.astype(np.uint8) for _, _, r in fine]),
                            gsd_m, n_classes)
    chosen = {k: pp[k] for k in ("threshold", "min_area_m2", "max_hole_m2")}
    chosen.update(choose_filters(fine, chosen, gsd_m, n_classes))
    regular = choose_regularisation(fine, chosen, gsd_m, n_classes, simplify_m)
    chosen["orthogonalize"] = regular["orthogonalize"]
    chosen["_regularisation"] = regular
    return chosen


def figures(items: Sequence, chosen: Dict[str, Any], gsd_m: float, n_classes: int,
            folds: int) -> Dict[str, Any]:
    """Per-fold pixel IoU and object F1 (:func:`spread`) and the pooled summary of
    out-of-fold predictions ``[(fold, probs, ref)]`` run at ``gsd_m`` under the
    post-processing ``chosen`` (scored on each reference's own, coarser, grid). Folds
    without items (a run over some of the folds) are left out of the spread."""
    per_fold = [Counts() for _ in range(folds)]
    pooled = Counts()
    seen = set()
    for k, p, ref in items:
        c = score(p, ref, chosen, gsd_m, n_classes)
        per_fold[k].add(c)
        pooled.add(c)
        seen.add(k)
    sums = [c.summary() for k, c in enumerate(per_fold) if k in seen]
    return {"pixel_iou": spread([s["pixel_iou"] for s in sums]),
            "object_f1": spread([s["object_f1"] for s in sums]),
            "pooled": {k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in pooled.summary().items()}}


def summarise(config: Dict[str, Any], oof: Dict[int, List], runs: Dict[tuple, List],
              gsd_m: float, n_classes: int, folds: int) -> Dict[str, Any]:
    """Choose the post-processing on the imagery of the model's own GSD
    (:func:`choose_all`) and score every imagery GSD and every coarser run of
    :data:`RUNS` with it.

    Args:
        oof: imagery factor (x 0.1 m) -> ``[(fold, probs, ref)]`` run at the model's
            GSD.
        runs: ``(factor, run)`` -> the same, run at ``run`` times the model's GSD.

    Returns:
        ``{"id", "folds", "postprocess", "regularisation", "gsd", "run_gsd"}`` (see
        :func:`cross_validate`).
    """
    own = int(round(gsd_m / pvdata.NATIVE_GSD_M))
    chosen = choose_all(oof[own], gsd_m, n_classes, float(config.get("simplify_m", 0.05)))
    regular = chosen.pop("_regularisation")
    out: Dict[str, Any] = {"id": config["id"], "folds": folds, "postprocess": chosen,
                           "chosen_at_m": round(own * pvdata.NATIVE_GSD_M, 2),
                           "regularisation": regular, "gsd": {}}
    for f in sorted(oof):
        out["gsd"][f"{pvdata.NATIVE_GSD_M * f:.1f}"] = figures(oof[f], chosen, gsd_m,
                                                               n_classes, folds)
    # coarser imagery run at other GSDs than the model's (the post-processing's areas
    # are in square metres, so it carries over)
    out["run_gsd"] = {f"{gsd_m * f:.1f}": {
        f"{gsd_m * r:.2f}".rstrip("0"): figures(oof[f] if r == 1 else runs[(f, r)], chosen,
                                               gsd_m * r, n_classes, folds)
        for r in (1, *rs)} for f, rs in RUNS.items() if runs}
    return out


def markdown(r: Dict[str, Any]) -> str:
    """A Markdown table of :func:`cross_validate`'s result."""
    pp = r["postprocess"]
    lines = [f"# Cross-validation of {r['id']}", "",
             f"{r['folds']} leave-cluster-out folds of the pv01 train split "
             f"({r['tiles_per_fold']} validation tiles from {r['sites_per_fold']} sites); "
             f"post-processing chosen on the pooled out-of-fold predictions at "
             f"{r.get('chosen_at_m', 0.1):g} m: "
             f"threshold {pp['threshold']}, minimum area {pp['min_area_m2']} m², holes "
             f"up to {pp['max_hole_m2']} m² filled, minimum solidity "
             f"{pp.get('min_solidity', 0)}, minimum object score {pp.get('min_score', 0)}.",
             "",
             "| GSD | pixel IoU mean ± std (folds) | object F1 mean ± std (folds) | "
             "pooled IoU | pooled F1 |", "|---|---|---|---|---|"]
    for g, v in r["gsd"].items():
        iou, f1 = v["pixel_iou"], v["object_f1"]
        lines.append(f"| {g} m | {iou['mean']:.3f} ± {iou['std']:.3f} "
                     f"({', '.join(f'{x:.3f}' for x in iou['folds'])}) | "
                     f"{f1['mean']:.3f} ± {f1['std']:.3f} "
                     f"({', '.join(f'{x:.3f}' for x in f1['folds'])}) | "
                     f"{v['pooled']['pixel_iou']:.3f} | {v['pooled']['object_f1']:.3f} |")
    if r.get("run_gsd"):
        lines += ["", "Coarser imagery run at other GSDs (resampled bilinearly; scored on "
                  "the coarse grid; object F1 mean ± std over folds):", ""]
        for g, by_run in r["run_gsd"].items():
            lines.append(f"- {g} m imagery: " + "; ".join(
                f"run at {run} m: {v['object_f1']['mean']:.3f} ± {v['object_f1']['std']:.3f}"
                f" (pixel IoU {v['pixel_iou']['mean']:.3f})" for run, v in by_run.items()))
    reg = r.get("regularisation")
    if reg:
        lines += ["", "Outlines (polygons of the out-of-fold predictions the post-processing was "
                  "chosen on): "
                  + "; ".join(f"{k} {v['polygons']} polygons, {v['vertices_per_polygon']} "
                              f"vertices per polygon, object F1 {v['object_f1']:.3f}, pixel "
                              f"IoU {v['pixel_iou']:.3f}"
                              for k, v in reg.items() if isinstance(v, dict))
                  + f". Rectangles replace near-rectangular outlines: "
                    f"{'yes' if reg['orthogonalize'] else 'no'}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "cv" / "models",
                    help="where fold models are trained and found")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "cv")
    ap.add_argument("--train", action="store_true", help="train missing fold models")
    ap.add_argument("--write-config", action="store_true",
                    help="store the chosen post-processing and the summary in the config")
    ap.add_argument("--card", type=Path, default=None,
                    help="with --write-config: also give this trained model folder "
                         "(its weights do not depend on the post-processing) the choice")
    ap.add_argument("--keep", type=Path, default=None,
                    help="save the out-of-fold predictions to this .npz (tools.cv_gsd)")
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8"))
    r = cross_validate(config, args.work, args.folds, args.train, args.config.parent,
                       args.keep)
    write_report(args.out, config["id"], r, markdown(r))
    if args.write_config:
        config.update(r["postprocess"])
        config["cross_validation"] = cv_figures(r["gsd"])
        args.config.write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        if args.card:
            apply_to_card(config, args.card)
    return 0


def boundary_gsd(finer_m: float, coarser_m: float) -> float:
    """The layer GSD, metres, between two scored GSDs where one choice hands over to the
    next: their geometric mean rounded to 0.05 m (0.15 between 0.1 and 0.2 m, 0.25
    between 0.2 and 0.3 m)."""
    return round(float(np.sqrt(finer_m * coarser_m)) * 20) / 20


def write_report(out: Path, stem: str, result: Dict[str, Any], md: str) -> None:
    """Write a tool's result as ``<out>/<stem>.json`` and its Markdown as
    ``<out>/<stem>.md`` (creating ``out``), and print the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    (out / f"{stem}.md").write_text(md, "utf-8")
    print(md)


def cv_figures(gsd: Dict[str, Any], folds: Optional[int] = None
               ) -> Dict[str, Dict[str, float]]:
    """The ``cross_validation`` entry of a config or card from a scored variant's
    per-GSD figures (:func:`summarise`): per GSD the fold mean and standard deviation
    of pixel IoU and object F1, and with ``folds`` how many folds were scored (none:
    every fold)."""
    out = {g: {"pixel_iou": v["pixel_iou"]["mean"], "pixel_iou_std": v["pixel_iou"]["std"],
               "object_f1": v["object_f1"]["mean"], "object_f1_std": v["object_f1"]["std"]}
           for g, v in gsd.items()}
    if folds is not None:
        for v in out.values():
            v["folds"] = folds
    return out


def apply_to_card(config: Dict[str, Any], folder: Path) -> None:
    """Give a model trained from ``config`` (``folder/card.json``) the post-processing
    and cross-validation figures that ``config`` now holds, and score them on the
    model's own validation tiles, as a training run from the completed config would.

    Raises:
        FileNotFoundError: no card in ``folder``.
    """
    from backend.learning.train import cv_postprocess, val_postprocess
    d = json.loads((folder / "card.json").read_text("utf-8"))
    d.update(cv_postprocess(config))
    t = d.setdefault("training", {})
    t["config"] = config
    t["cross_validation"] = config["cross_validation"]
    val = [x for x in pvdata.list_tiles("train") if x.name in set(t.get("val_names", []))]
    if val and d.get("kind") != "ensemble":
        card = ModelCard.from_dict(d, folder)
        arr = pvdata.load_arrays(val)
        probs = predict(TorchPredictor(card), list(arr["images"]))
        t["postprocess_chosen_on_val"] = val_postprocess(
            config, probs, arr["masks"], card.gsd_m, len(card.classes))["val"]
    (folder / "card.json").write_text(json.dumps(d, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
