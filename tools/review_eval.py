"""Measure the review queue, Add by click and retraining from a partial review on real
pv01 data, with a simulated reviewer answering from the reference masks:
``python3 build.py review-eval``.

Usage::

    python -m tools.review_eval [--cv-dir /work/main/out/cv/models] [--ensemble]
                                [--steps 100] [--budget-s 1800] [--no-retrain]
                                [--out out/review-eval]

Tiles: the pv01 held-out split with the shipped model, and the train split's
cross-validation validation tiles each with the fold model that never saw its site
(``tools.cv``; ``--cv-dir`` holds ``<member>/fold<k>/``; folds without a model there
are left out and the output says which were used).

1. **Errors found per object reviewed.** Every tile is detected (the ``detect``
   pipeline, with its candidate misses); the queue is every detection and candidate,
   most uncertain first (``protocol.review``). A detection whose best IoU with a
   reference panel is below 0.5 is a false object; a panel no detection matches at 0.5
   is a missed object. Reviewing a detection finds the missed panels it touches (arrays
   merged into one polygon, a panel half covered) and, when false, itself; reviewing a
   candidate finds the missed panels it touches. The share of all
   false and missed objects found after 10, 20 and 30 % of the queue, against the mean
   of 200 random orders. Ranked by the score margin; with ``--ensemble`` (the three
   members' fold models must exist) by disagreement, margin, and both.
2. **Add by click.** One click inside each missed reference panel (its representative
   point): the ``region`` request's polygon, its IoU with the panel, seconds per click.
3. **Partial review, then retrain.** Cross-validation fold 0's model, which never saw
   the site of fold 0's validation tiles (one site cluster of the train split, 9
   tiles); the simulated user reviews only the first 20 objects of the queue on a
   third of that site (its block closest to a third, as
   ``tools.retrain_eval.site_split`` cuts a site): a
   true detection is accepted, a false one touching a panel is edited to the panel's
   outline, another false one deleted, a candidate touching a missed panel becomes the
   panel (added), another deleted; the rest stays pending. The retrain (``mode``
   ``review``, fixed steps) is measured by object F1 on the rest of the site, against
   the model before and a replay-only control with the same steps.

Prints a table and writes ``<out>/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.config import REPO
from backend.learning import data as pvdata
from protocol.params import DetectParams, FileSource
from protocol.review import review_order, uncertainty

#: Shares of the queue reported.
SHARES = (0.1, 0.2, 0.3)
#: Random orders averaged for the baseline.
RANDOM_ORDERS = 200
#: Objects of the queue the simulated user reviews before retraining (measurement 3).
FIRST_REVIEWED = 20
#: Where ``tools.cv`` keeps the fold models by default.
CV_DIR = Path("/work/main/out/cv/models")
#: The ensemble's config (its members' fold models are needed for ``--ensemble``).
ENSEMBLE = "pv-ensemble"


# ----------------------------------------------------------------------------- tiles

def tile_sets(cv_dir: Path, ensemble: bool) -> Tuple[List[Tuple[Any, Any, str]], List[str]]:
    """``([(tile, predictor, which)], notes)``: the held-out tiles with the shipped model
    (or the shipped ensemble, ``models/pv-ensemble``), then each available fold's
    validation tiles with that fold's model (out of fold)."""
    from backend.inference.predictors import get_predictor
    from backend.models.catalog import load_card
    from tools.retrain_eval import base_model
    base = base_model()
    notes = []
    sets = []
    config = _config(ENSEMBLE if ensemble else base)
    folds = pvdata.cv_folds(pvdata.list_tiles("train"), 3)
    for k, (_, val) in enumerate(folds):
        pred = _fold_predictor(config, cv_dir, k, len(folds))
        if pred is None:
            notes.append(f"fold {k}: no fold model in {cv_dir}; its {len(val)} tiles "
                         f"left out")
            continue
        sets += [(t, pred, f"train fold {k} (out of fold)") for t in val]
    pred = get_predictor(load_card(ENSEMBLE if ensemble else base))
    sets = [(t, pred, "heldout") for t in pvdata.list_tiles("heldout")] + sets
    return sets, notes


def _config(model_id: str) -> Dict[str, Any]:
    return json.loads((REPO / "models" / "configs" / f"{model_id}.json").read_text("utf-8"))


def _fold_predictor(config: Dict[str, Any], cv_dir: Path, fold: int, folds: int):
    """Fold ``fold``'s predictor (``tools.cv.fold_predictor``: an ensemble's over its
    members' fold models), None when a fold model is missing."""
    from tools.cv import fold_predictor
    members = [m["id"] for m in config.get("members", [])] or [config["id"]]
    if not all((cv_dir / m / f"fold{fold}" / "weights.safetensors").is_file()
               for m in members):
        return None
    return fold_predictor(config, cv_dir, fold, folds, False,
                          REPO / "models" / "configs")


# ----------------------------------------------------------------------------- queue

def detect_tile(tile, predictor) -> Dict[str, Any]:
    """The ``detect`` result of a tile (with its candidate misses) by ``predictor``,
    post-processed with the shipped card."""
    from backend.inference.detect import run_detect
    from tools.retrain_eval import base_model
    return run_detect(DetectParams(FileSource(str(tile.image_path)), base_model()), [],
                      predictor=predictor)


def queue_items(result: Dict[str, Any], reference: List[Any], tile: str
                ) -> Tuple[List[Dict[str, Any]], set]:
    """``(items, errors)`` of one tile: each detection and candidate with its score,
    agreement, area and the errors reviewing it finds; ``errors`` every false and
    missed object of the tile (ids ``("fp"|"fn", tile, index)``)."""
    import shapely
    dets = [shapely.from_wkt(f["wkt"]) for f in result["features"]]
    cands = [shapely.from_wkt(f["wkt"]) for f in result.get("candidates") or []]
    iou = np.zeros((len(dets), len(reference)))
    for i, d in enumerate(dets):
        for j, r in enumerate(reference):
            if d.intersects(r):
                iou[i, j] = d.intersection(r).area / d.union(r).area
    missed = {j for j in range(len(reference)) if not (iou[:, j] >= 0.5).any()}
    errors = {("fn", tile, j) for j in missed}
    items = []
    for i, (d, f) in enumerate(zip(dets, result["features"])):
        # looking at a detection shows the missed panels under it (arrays merged into
        # one polygon, a panel half covered)
        found = {("fn", tile, j) for j in missed if iou[i, j] > 0}
        if not (iou[i] >= 0.5).any():
            found.add(("fp", tile, i))
            errors.add(("fp", tile, i))
        items.append(dict(_fields(f), kind="detection", finds=found, geom=d))
    for c, f in zip(cands, result.get("candidates") or []):
        found = {("fn", tile, j) for j in missed
                 if c.intersects(reference[j]) and c.intersection(reference[j]).area > 0}
        items.append(dict(_fields(f), kind="candidate", finds=found, geom=c))
    return items, errors


def _fields(f: Dict[str, Any]) -> Dict[str, Any]:
    return {"score": f["score"], "agreement": f["agreement"], "area_m2": f["area_m2"],
            "wkt": f["wkt"]}


def found_curve(items: List[Dict[str, Any]], errors: set, order: Sequence[int]
                ) -> Dict[str, float]:
    """Share of ``errors`` found after each share of :data:`SHARES` of the queue in
    ``order`` (and after all of it: ``1.0``)."""
    out = {}
    for share in SHARES + (1.0,):
        n = int(np.ceil(share * len(items)))
        got = set().union(*[items[i]["finds"] for i in order[:n]]) if n else set()
        out[f"{share:.1f}"] = round(len(got) / max(len(errors), 1), 4)
    return out


def rankings(items: List[Dict[str, Any]], threshold: float, members: int
             ) -> Dict[str, List[int]]:
    """The queue orders to compare: ``margin`` (a single model's), and for an ensemble
    ``disagreement`` and ``both`` (``protocol.review.uncertainty``)."""
    areas = [it["area_m2"] for it in items]
    out = {"margin": review_order([uncertainty(it["score"], threshold) for it in items],
                                  areas)}
    if members >= 2:
        out["disagreement"] = review_order(
            [1.0 - abs(2 * it["agreement"] - 1) for it in items], areas)
        out["both"] = review_order([uncertainty(it["score"], threshold, it["agreement"],
                                                members) for it in items], areas)
    return out


def queue_experiment(sets, members: int, progress=print) -> Tuple[Dict[str, Any], List]:
    """Measurement 1; also returns the missed panels ``[(tile, panel polygon,
    predictor)]`` for measurement 2."""
    from backend.models.catalog import load_card
    from tools.retrain_eval import base_model, reference_polygons
    threshold = load_card(base_model()).threshold
    items, errors, missed = [], set(), []
    for i, (tile, pred, which) in enumerate(sets):
        progress(f"[1] {i + 1}/{len(sets)} {tile.name}")
        ref = reference_polygons(tile)
        its, errs = queue_items(detect_tile(tile, pred), ref, tile.name)
        items += its
        errors |= errs
        missed += [(tile, ref[e[2]], pred, which) for e in sorted(errs) if e[0] == "fn"]
    rng = np.random.default_rng(0)
    rand = [found_curve(items, errors, rng.permutation(len(items)))
            for _ in range(RANDOM_ORDERS)]
    out = {"objects": len(items), "errors": len(errors),
           "false": sum(1 for e in errors if e[0] == "fp"),
           "missed": sum(1 for e in errors if e[0] == "fn"),
           "candidates": sum(1 for it in items if it["kind"] == "candidate"),
           "random": {k: round(float(np.mean([r[k] for r in rand])), 4) for k in rand[0]}}
    for name, order in rankings(items, threshold, members).items():
        out[name] = found_curve(items, errors, order)
    return out, missed


# ----------------------------------------------------------------------------- clicks

def click_experiment(missed: List[Tuple[Any, Any, Any, str]], progress=print
                     ) -> Dict[str, Any]:
    """Measurement 2: one click at each missed panel's representative point; the time
    per click is given apart for the held-out tiles (the shipped model as a user runs
    it: ONNX Runtime on a CPU) and for the fold models (PyTorch)."""
    import rasterio
    import shapely

    from backend.inference.region import run_region
    from protocol.review import RegionParams
    from tools.retrain_eval import base_model
    ious, secs, shipped = [], [], []
    for i, (tile, panel, pred, which) in enumerate(missed):
        with rasterio.open(tile.image_path) as ds:
            crs = ds.crs.to_wkt()
        p = panel.representative_point()
        t = time.perf_counter()
        res = run_region(RegionParams(FileSource(str(tile.image_path)), base_model(),
                                      p.x, p.y, crs), [], predictor=pred)
        secs.append(time.perf_counter() - t)
        if which == "heldout":
            shipped.append(secs[-1])
        g = shapely.from_wkt(res["features"][0]["wkt"]) if res["features"] else None
        ious.append(0.0 if g is None else g.intersection(panel).area / g.union(panel).area)
        progress(f"[2] {i + 1}/{len(missed)} {tile.name}: IoU {ious[-1]:.2f}, "
                 f"{secs[-1]:.2f} s")
    a = np.array(ious)
    return {"clicks": len(a), "iou_ge_0.7": round(float((a >= 0.7).mean()), 4) if len(a) else None,
            "median_iou": round(float(np.median(a)), 4) if len(a) else None,
            "found": int((a > 0).sum()), "seconds_mean": round(float(np.mean(secs)), 3)
            if secs else None, "seconds_max": round(float(np.max(secs)), 3) if secs else None,
            "seconds_shipped_mean": round(float(np.mean(shipped)), 3) if shipped else None,
            "ious": [round(float(x), 3) for x in a]}


# ----------------------------------------------------------------------------- retrain

def review_first(items: List[Dict[str, Any]], reference: Dict[str, List[Any]],
                 n: int, threshold: float) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """The simulated reviewer: the first ``n`` items of the queue get a state from the
    reference (see the module docstring), the others stay pending; returns the
    corrected features (``wkt``, ``class``, ``area``, ``review``) and state counts."""
    order = review_order([uncertainty(it["score"], threshold) for it in items],
                         [it["area_m2"] for it in items])
    first = set(order[:n])
    feats, counts = [], {"accepted": 0, "edited": 0, "deleted": 0, "added": 0,
                         "pending": 0}
    for i, it in enumerate(items):
        ref = reference[it["tile"]]
        base = {"class": "photovoltaic", "area": it["area"]}
        if i not in first:
            feats.append(dict(base, wkt=it["wkt"], review="pending"))
            counts["pending"] += 1
            continue
        g = it["geom"]
        hits = [r for r in ref if g.intersects(r) and g.intersection(r).area > 0]
        best = max((g.intersection(r).area / g.union(r).area for r in hits), default=0.0)
        if it["kind"] == "detection" and best >= 0.5:
            state, wkt = "accepted", it["wkt"]
        elif hits:
            state = "edited" if it["kind"] == "detection" else "added"
            wkt = max(hits, key=lambda r: g.intersection(r).area).wkt
        else:
            state, wkt = "deleted", it["wkt"]
        feats.append(dict(base, wkt=wkt, review=state))
        counts[state] += 1
    return feats, counts


def fold_site(cv_dir: Path, folder: Path, fold: int = 0):
    """``(card, user tiles, rest of the site)``: fold ``fold``'s model copied into
    ``folder/<base>-fold<k>`` (a model folder, its ONNX exported) and its validation
    site cut into the block the user reviews and the rest (as
    ``tools.retrain_eval.site_split``)."""
    import shutil

    from backend.models.card import read_card
    from backend.models.export import export_onnx
    from tools.retrain_eval import SITE_SHARE, base_model
    src = cv_dir / base_model() / f"fold{fold}"
    mid = f"{base_model()}-fold{fold}"
    dst = folder / mid
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "weights.safetensors", dst / "weights.safetensors")
    card = json.loads((src / "card.json").read_text("utf-8"))
    card["id"] = mid
    (dst / "card.json").write_text(json.dumps(card, indent=2), "utf-8")
    export_onnx(read_card(dst / "card.json"))
    _, val = pvdata.cv_folds(pvdata.list_tiles("train"), 3)[fold]
    site = sorted(max(pvdata.clusters(val), key=len), key=lambda t: (t.lat, t.lon))
    blocks = pvdata.clusters(site, 0.0004)
    user = min(blocks, key=lambda b: (abs(len(b) - SITE_SHARE * len(site)), -len(b)))
    if len(user) == len(site):  # one block: the southern third
        user = site[:max(1, round(SITE_SHARE * len(site)))]
    names = {t.name for t in user}
    return (read_card(dst / "card.json"), sorted(user, key=lambda t: t.name),
            sorted((t for t in site if t.name not in names), key=lambda t: t.name))


def retrain_experiment(steps: int, budget_s: float, cv_dir: Path = CV_DIR,
                       progress=print) -> Dict[str, Any]:
    """Measurement 3 (see the module docstring), in a temporary model folder."""
    import tempfile

    from tools.retrain_eval import _env
    with tempfile.TemporaryDirectory() as tmp:
        card0, user, rest = fold_site(cv_dir, Path(tmp) / "models")
        with _env(ORTHOLENS_MODELS=str(Path(tmp) / "models"),
                  ORTHOLENS_USER_MODELS=str(Path(tmp) / "user")):
            return _retrain_on(card0, user, rest, steps, budget_s, progress)


def _retrain_on(card0, user, rest, steps: int, budget_s: float, progress) -> Dict[str, Any]:
    """Measurement 3 with ``card0`` (its model folder set): queue on ``user``, review
    the first :data:`FIRST_REVIEWED`, retrain, score on ``rest``."""
    import rasterio

    from backend.inference.predictors import TorchPredictor, get_predictor
    from backend.learning.finetune import RetrainConfig, finetune
    from backend.learning.retrain import run_retrain
    from protocol.params import RetrainParams
    from tools.retrain_eval import reference_polygons, score_tiles
    mid = card0.id
    pred = get_predictor(card0)
    items, reference, reviewed, crs = [], {}, [], ""
    for i, t in enumerate(user):
        res = detect_tile_with(t, mid, pred)
        crs = res["crs"]
        reference[t.name] = reference_polygons(t)
        its, _ = queue_items(res, reference[t.name], t.name)
        items += [dict(it, tile=t.name, area=i) for it in its]
        with rasterio.open(t.image_path) as ds:
            b = ds.bounds
        reviewed.append({"extent": [b.left, b.bottom, b.right, b.top],
                         "source": {"kind": "file", "path": str(t.image_path)}})
    feats, counts = review_first(items, reference, FIRST_REVIEWED, card0.threshold)
    progress(f"[3] the user reviews {FIRST_REVIEWED} of {len(items)} objects on "
             f"{len(user)} tiles: {counts}; retrain ({steps} steps)")
    before = score_tiles(mid, rest)
    params = RetrainParams(reviewed[0]["source"], mid, feats, crs=crs, reviewed=reviewed,
                           budget_s=budget_s, steps=steps, scope="area", mode="review")
    keep: Dict[str, Any] = {}
    t0 = time.monotonic()
    rep = run_retrain(params.to_header(), [], lambda f, m: None, keep=keep)["retrain"]
    secs = time.monotonic() - t0
    after = score_tiles(mid, rest, predictor=keep["predictor"])
    progress(f"[3] {rep['verdict']}; control: replay-only, {steps} steps")
    model, info = finetune(keep["card"], [], RetrainConfig(budget_s=budget_s, steps=steps,
                                                           replay_fraction=1.0))
    control = score_tiles(mid, rest, predictor=TorchPredictor(keep["card"], model=model))
    return {"model": mid, "tiles_user": [t.name for t in user],
            "tiles_rest": [t.name for t in rest], "objects": len(items),
            "reviewed": counts, "steps": rep["train"]["steps"],
            "job_seconds": round(secs, 1), "verdict": rep["verdict"],
            "time": rep.get("time"), "warnings": rep.get("warnings"),
            "rest_before": before["metrics"], "rest_after": after["metrics"],
            "control_steps": info["steps"], "rest_control": control["metrics"]}


def detect_tile_with(tile, model_id: str, predictor) -> Dict[str, Any]:
    """As :func:`detect_tile` with ``model_id``'s card."""
    from backend.inference.detect import run_detect
    return run_detect(DetectParams(FileSource(str(tile.image_path)), model_id), [],
                      predictor=predictor)


# ----------------------------------------------------------------------------- main

def report(res: Dict[str, Any]) -> str:
    """The table printed at the end."""
    q, lines = res["queue"], []
    lines.append(f"1. errors found per object reviewed ({q['objects']} objects, "
                 f"{q['errors']} errors: {q['false']} false, {q['missed']} missed; "
                 f"{q['candidates']} candidates)")
    lines.append("   order          10 %    20 %    30 %   all")
    for name in ("margin", "disagreement", "both", "random"):
        if name in q:
            c = q[name]
            lines.append(f"   {name:<12} " + " ".join(f"{c[k]:7.3f}" for k in
                                                     ("0.1", "0.2", "0.3", "1.0")))
    c = res.get("clicks") or {}
    if c:
        lines.append(f"2. add by click: {c['clicks']} missed panels, IoU >= 0.7 for "
                     f"{c['iou_ge_0.7']}, median IoU {c['median_iou']}, "
                     f"{c['seconds_shipped_mean']} s per click with the shipped model "
                     f"({c['seconds_mean']} s over all, max {c['seconds_max']})")
    r = res.get("retrain")
    if r:
        def f1(m):
            return m.get("object_f1")
        lines.append(f"3. partial review ({r['reviewed']}), {r['steps']} steps, "
                     f"{r['verdict']}: object F1 on the rest of the site "
                     f"{f1(r['rest_before'])} before, {f1(r['rest_after'])} after, "
                     f"{f1(r['rest_control'])} replay-only control")
    return "\n".join(lines + [f"   note: {n}" for n in res.get("notes", [])])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv-dir", type=Path, default=CV_DIR)
    ap.add_argument("--ensemble", action="store_true",
                    help="rank by the ensemble's disagreement too (all three members' "
                         "fold models must exist)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--budget-s", type=float, default=1800.0)
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "review-eval")
    a = ap.parse_args(argv)
    sets, notes = tile_sets(a.cv_dir, a.ensemble)
    members = len(_config(ENSEMBLE)["members"]) if a.ensemble else 1
    res: Dict[str, Any] = {"notes": notes, "tiles": len(sets)}
    a.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each measurement: a later failure loses nothing
        (a.out / "metrics.json").write_text(json.dumps(res, indent=2, default=str), "utf-8")

    res["queue"], missed = queue_experiment(sets, members)
    save()
    res["clicks"] = click_experiment(missed)
    save()
    if not a.no_retrain:
        res["retrain"] = retrain_experiment(a.steps, a.budget_s, a.cv_dir)
        save()
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
