"""Measure the retrain loop on real data, without a person: ``python3 build.py retrain-eval``.

Usage::

    python -m tools.retrain_eval [--steps 150] [--budget-s 900] [--vienna-budget-s S]
                                   [--folds AB,BA] [--no-control] [--no-site]
                                   [--out out/retrain-eval] [--user-models DIR]

Four experiments, run in a fresh user model folder (a temporary one by default;
shipped models are never touched). Every retrain runs a fixed number of steps
(:data:`STEPS`, seed 0) so that the figures repeat whatever the machine's load; the
time budget only caps it (900 s by default, so that the steps fit on a busy CPU: a job
whose preparing, training and gate run over the budget trains fewer steps).

0. **A site the model never saw: the user's own area.** A model is trained with the
   shipped model's recipe without one train-split site (:data:`SITE`, the 29 tiles of
   pv01's solar-roof site; :func:`site_model`, trained once into ``out/site-models``
   and reused). The simulated user corrects a third of the site (the block of
   :func:`site_split`: 11 tiles) and retrains for that area (``scope: "area"``: the
   version is judged on the held-out part of its corrections, the guard only warns).
   Detection as the plugin asks for it (``by_area``) is then measured on the rest of the
   site (18 tiles the corrections never touched), against the model before and against a
   *control*: a replay-only fine-tune with the same steps, which goes through the same
   gate. Detection on the other sites (the pv01 held-out split) shows the version is not
   used outside its area; the candidate's own figures there say what it would have done.
   Taking the version out of use gives back exactly the features of before.
1. **pv01, corrections on one set of sites, measured on others.** The held-out tiles
   form four spatial clusters (``backend.learning.data.clusters``), grouped in two halves A (7
   tiles, 26 panels) and B (5 tiles, 5 panels). In fold ``AB`` detections are made on
   A (the user's area); a simulated user corrects them from the reference masks:
   deletes every detection that touches no reference panel, replaces one that overlaps
   a panel but with IoU < 0.5 by the panel's outline, keeps the others, and draws every
   panel no kept detection touches. The retrain job then runs (it keeps part of A apart
   to check itself; its forgetting guard is the pv01 *validation* tiles, never the
   held-out split) and detection is repeated on B, which neither the corrections nor
   training ever saw: object F1 / pixel IoU on B before and after. Fold ``BA`` does the
   reverse from the shipped model again (in a sub-folder), and the two folds are pooled
   so that each of the 31 held-out panels is measured once by a retrain that never saw
   its cluster. A *control* fine-tune with the same steps but without corrections
   (replay of the pv01 fit tiles only) separates what the corrections add from what
   more training adds. Measured on other sites, the question is a general-purpose
   version: these retrains ask for ``scope: "general"`` (the guard vetoes).
2. **Vienna, a persistent false-positive pattern.** The scene has no panels: the user
   deletes every detection in its west half (the corrected layer is empty there) and
   retrains the shipped model (in its own sub-folder: the pv01 version may already
   have learned those roofs); false polygons per km² on the east half (never
   reviewed) before / after.
3. **Rollback.** Rolling back each accepted version makes its parent active again, and
   detection gives exactly the features the parent gave before (compared field by
   field): on the tiles each fold measured for its version, on Vienna's east half for
   experiment 2's.

Prints a summary and writes ``<out>/metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backend.config import REPO, train_threads, vienna_scene
from backend.learning import data as pvdata
from backend.models.catalog import cpu_default_model_id
from protocol.params import DetectParams, FileSource, RetrainParams


@functools.lru_cache(maxsize=1)
def base_model() -> str:
    """The shipped model every experiment retrains: the catalog's CPU default, the fast
    single model a user gets on a CPU."""
    return cpu_default_model_id()

#: Fine-tuning steps of every retrain here (batch 8 chips of 192 px; 75-85 s on two
#: idle CPU cores): a fixed count makes the figures repeat on any machine load.
STEPS = 150
#: The pv01 held-out split has four spatial clusters (``backend.learning.data.clusters``
#: with its default radius); each is named here by one of its tiles. A (7 tiles, 26
#: panels) is where the simulated user corrects, B (5 tiles, 5 panels) where the effect
#: is measured.
CLUSTERS_A = ("PV01_325190_1204243", "PV01_325237_1203816")
CLUSTERS_B = ("PV01_325228_1203843", "PV01_325173_1203750")
#: Halves of the Vienna scene (:func:`backend.config.vienna_scene`, EPSG:31256 metres,
#: from its bounds -1750..-1250 x 338300..338800): the user reviews the west half, the
#: east half is never reviewed and measures the effect.
VIENNA_TRAIN = [-1750.0, 338300.0, -1500.0, 338800.0]
VIENNA_UNSEEN = [-1500.0, 338300.0, -1250.0, 338800.0]


#: The site experiment: a train-split site the model is trained without (named by one
#: of its tiles): the solar-roof site, 29 tiles of large roof arrays (the largest pv01
#: site cluster; :func:`backend.learning.data.site_of`).
SITE = "PV01_325123_1204229"
#: Training steps of the model without the site (the shipped config's recipe and seed;
#: 500 instead of 1000 steps so that a fresh checkout builds it in about 10 minutes on
#: one idle core; it is kept under ``out/site-models`` and reused).
SITE_STEPS = 500
#: Share of the site the simulated user corrects (the rest measures the effect).
SITE_SHARE = 1.0 / 3.0
#: CPU threads the model without the site is trained with: a fixed count, so that every
#: checkout trains the same model (runs with 1 and 2 threads differed: object F1 on the
#: rest of the site 0.234 and 0.117 before any retrain).
SITE_THREADS = 1


def site_model_id() -> str:
    """The id of the model trained without :data:`SITE`: ``<base>-nosite``."""
    return f"{base_model()}-nosite"


def site_model(folder: Path = REPO / "out" / "site-models", progress=print):
    """The model never trained on :data:`SITE`, trained first when missing or stale.

    The shipped model's training config (``models/configs/<base>.json``) with
    :data:`SITE_STEPS` steps and the whole site cluster left out of fitting and
    validation (``backend.learning.train --without-site``), written with its ONNX
    export to ``<folder>/<id>/`` (:func:`site_model_id`). ``folder`` serves as a model
    folder (``ORTHOLENS_MODELS``). A model there whose recorded config differs is
    trained again.

    Returns:
        The :class:`~backend.models.card.ModelCard`.

    Raises:
        FileNotFoundError: the pv01 data or the config is missing.
    """
    from backend.learning.train import train
    from backend.models.card import read_card
    from backend.models.export import export_onnx
    config = json.loads((REPO / "models" / "configs" / f"{base_model()}.json")
                        .read_text("utf-8"))
    config.update({"id": site_model_id(), "steps": SITE_STEPS})
    out = Path(folder) / config["id"]
    if (out / "card.json").is_file() and (out / "model.onnx").is_file():
        card = read_card(out / "card.json")
        if (card.training and card.training.config == config and card.left_out_names
                and card.training.threads == SITE_THREADS):
            return card
    progress(f"[site] training {config['id']}: {SITE_STEPS} steps without the site of "
             f"{SITE} (once; kept in {out})")
    # one thread: the same model on every machine (more threads sum in another order)
    with _env(ORTHOLENS_THREADS=str(SITE_THREADS)):
        card = train(config, out, budget_s=float(config.get("budget_s", 3600)),
                     without_site=SITE)
    export_onnx(card)
    return read_card(out / "card.json")


def cluster_split(a_names: Sequence[str] = CLUSTERS_A, b_names: Sequence[str] = CLUSTERS_B):
    """``(A tiles, B tiles)``: the held-out clusters holding the named tiles."""
    groups = pvdata.clusters(pvdata.list_tiles("heldout"))

    def pick(names):
        out = []
        for g in groups:
            if any(t.name in names for t in g):
                out += sorted(g, key=lambda t: t.name)
        return out
    a, b = pick(a_names), pick(b_names)
    assert not {t.name for t in a} & {t.name for t in b}, "A and B must be disjoint"
    return a, b


def detect(model_id: str, path: str, extent=None, predictor=None,
           by_area: Optional[bool] = None) -> Dict[str, Any]:
    """A ``detect`` job as the daemon runs it (``engine``: an in-memory candidate;
    ``by_area``: as the plugin asks, the version taught on the area where one is in
    use)."""
    from backend.inference.detect import run_detect
    return run_detect(DetectParams(FileSource(str(path)), model_id, extent=extent,
                                   by_area=by_area), [], predictor=predictor)


def reference_polygons(tile) -> List[Any]:
    """Shapely polygons of the reference panels (8-connected components >= 20 px)."""
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    from protocol.metrics import components
    with rasterio.open(tile.mask_path) as src:
        mask = src.read(1) > 0
        transform = src.transform
    lab, n = components(mask, 20)
    polys = []
    for j in range(1, n + 1):
        m = (lab == j).astype(np.uint8)
        parts = [shape(g) for g, v in shapes(m, mask=m > 0, transform=transform,
                                             connectivity=8)]
        polys.append(unary_union(parts))
    return polys


def simulate_user(detections: List[Dict[str, Any]], reference: List[Any], area: int,
                  cls: str = "photovoltaic") -> Dict[str, Any]:
    """Correct detections from the reference like a user would.

    Returns ``{"features": [...], "deleted", "reshaped", "added", "kept"}``: a detection
    touching no panel is deleted; one touching a panel with IoU < 0.5 is replaced by
    the panels it touches; IoU >= 0.5 is kept unchanged; panels no kept or reshaped
    detection touches are drawn.
    """
    import shapely
    feats, covered = [], set()
    deleted = reshaped = kept = 0
    for f in detections:
        g = shapely.from_wkt(f["wkt"])
        hits = [j for j, r in enumerate(reference) if g.intersects(r)
                and g.intersection(r).area > 0]
        if not hits:
            deleted += 1
            continue
        best = max(g.intersection(reference[j]).area / g.union(reference[j]).area
                   for j in hits)
        if best >= 0.5:
            feats.append({"wkt": f["wkt"], "class": cls, "area": area})
            kept += 1
        else:
            for j in hits:
                if j not in covered:
                    feats.append({"wkt": reference[j].wkt, "class": cls, "area": area})
            reshaped += 1
        covered.update(hits)
    added = 0
    for j, r in enumerate(reference):
        if j not in covered:
            feats.append({"wkt": r.wkt, "class": cls, "area": area})
            added += 1
    return {"features": feats, "deleted": deleted, "reshaped": reshaped, "added": added,
            "kept": kept}


def score_tiles(model_id: str, tiles, predictor=None, by_area: Optional[bool] = None
                ) -> Dict[str, Any]:
    """Object/pixel metrics of ``detect`` (polygons rasterized back, as
    ``tools.evaluate``) over tiles, plus the raw feature lists and ``models``: the ids
    of the models that ran (with ``by_area``, a version taught on the area may)."""
    import rasterio

    from tools.evaluate import rasterize_features
    from protocol.metrics import Counts, compare
    tot = Counts()
    feats = {}
    used = set()
    for t in tiles:
        res = detect(model_id, t.image_path, predictor=predictor, by_area=by_area)
        used.add(res["stats"]["model"])
        feats[t.name] = res["features"]
        with rasterio.open(t.mask_path) as src:
            ref = src.read(1) > 0
            pred = rasterize_features(res["features"], ref.shape, src.transform) > 0
        tot.add(compare(pred, ref))
    s = tot.summary()
    keys = ("object_f1", "object_precision", "object_recall", "pixel_iou", "objects_true",
            "objects_pred", "false_objects", "missed_objects")
    return {"metrics": {k: (round(s[k], 4) if isinstance(s[k], float) else s[k])
                        for k in keys}, "features": feats, "models": sorted(used)}


def _pool(*metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Object F1 / precision / recall pooled over folds: their object counts summed
    into one :class:`~protocol.metrics.Counts` (None where undefined)."""
    from protocol.metrics import Counts
    tot = Counts()
    for m in metrics:
        tot.add(Counts(tp_obj=m["objects_true"] - m["missed_objects"],
                       fp_obj=m["false_objects"], fn_obj=m["missed_objects"]))
    s = tot.summary()
    keys = ("object_f1", "object_precision", "object_recall", "objects_true",
            "objects_pred", "false_objects", "missed_objects")
    return {k: (None if isinstance(s[k], float) and s[k] != s[k] else
                round(s[k], 4) if isinstance(s[k], float) else s[k]) for k in keys}


def correct_tiles(model_id: str, tiles) -> Tuple[List[Dict[str, Any]],
                                                 List[Dict[str, Any]], Dict[str, int], str]:
    """Detect with ``model_id`` on each tile and correct it as a user would
    (:func:`simulate_user`); returns ``(features, reviewed areas, edit counts, CRS)``:
    each tile is a reviewed area (its whole extent), its features carry its index."""
    import rasterio
    features, reviewed = [], []
    counts = {"deleted": 0, "reshaped": 0, "added": 0, "kept": 0}
    crs = ""
    for i, t in enumerate(tiles):
        res = detect(model_id, t.image_path)
        crs = res["crs"]
        sim = simulate_user(res["features"], reference_polygons(t), i)
        features += sim["features"]
        for k in counts:
            counts[k] += sim[k]
        with rasterio.open(t.image_path) as ds:
            b = ds.bounds
        reviewed.append({"extent": [b.left, b.bottom, b.right, b.top],
                         "source": {"kind": "file", "path": str(t.image_path)}})
    return features, reviewed, counts, crs


def retrain(params: RetrainParams, keep: Optional[Dict[str, Any]] = None
            ) -> Tuple[Dict[str, Any], float, str]:
    """Run a retrain job in this process as the daemon would; returns ``(report, seconds,
    the active model id afterwards)``. ``keep`` receives the candidate (see
    :func:`backend.learning.retrain.run_retrain`)."""
    from backend.learning.retrain import run_retrain
    from backend.models import versions as V
    t0 = time.monotonic()
    out = run_retrain(params.to_header(), [], lambda f, m: None, keep=keep)
    return out["retrain"], time.monotonic() - t0, V.active_id(base_model())


def _outcome(rep: Dict[str, Any]) -> str:
    return (f"{'accepted: ' + str(rep['model']) if rep['accepted'] else rep['verdict']}"
            f" ({rep['reason']})")


def pv01_experiment(budget_s: float, steps: Optional[int] = None, fold: str = "AB",
                    progress=print) -> Dict[str, Any]:
    """Experiment 1 (see the module docstring) for one fold: ``"AB"`` corrects clusters
    A and measures on B, ``"BA"`` the reverse. The user folder must be set already;
    ``steps``: a fixed number of fine-tuning steps (reproducible), ``budget_s`` caps
    the time."""
    from backend.models import versions as V
    a_tiles, b_tiles = cluster_split()
    if fold == "BA":
        a_tiles, b_tiles = b_tiles, a_tiles
    src, dst = fold[0], fold[1]
    active0 = V.active_id(base_model())
    progress(f"[1 {fold}] detect on clusters {src} ({len(a_tiles)} tiles) with {active0}")
    features, reviewed, counts, crs = correct_tiles(active0, a_tiles)
    progress(f"[1 {fold}] simulated user: {counts}; detect on clusters {dst} "
             f"({len(b_tiles)} tiles)")
    before_b = score_tiles(active0, b_tiles)
    # measured on other sites: the question is a general-purpose version
    params = RetrainParams(reviewed[0]["source"], active0, features, crs=crs,
                           reviewed=reviewed, budget_s=budget_s,
                           steps=int(steps) if steps else None, scope="general")
    progress(f"[1 {fold}] retrain {active0}: {steps or 'no fixed'} steps, at most "
             f"{budget_s:g} s")
    keep: Dict[str, Any] = {}
    rep, secs, active1 = retrain(params, keep)
    progress(f"[1 {fold}] {_outcome(rep)}; detect on clusters {dst} with {active1}")
    after_b = score_tiles(active1, b_tiles)
    extra = {}
    if not rep["accepted"] and keep.get("predictor") is not None:
        progress(f"[1 {fold}] the rejected candidate on {dst} (for the record; not registered)")
        extra["b_rejected_candidate"] = score_tiles(active0, b_tiles,
                                                    predictor=keep["predictor"])["metrics"]
    return {**extra, "fold": fold, "tiles_a": [t.name for t in a_tiles],
            "tiles_b": [t.name for t in b_tiles],
            "user_edits": counts, "features": len(features), "budget_s": budget_s,
            "steps": steps, "job_seconds": round(secs, 1), "retrain": _brief(rep),
            "model_before": active0, "model_after": active1,
            "b_before": before_b["metrics"], "b_after": after_b["metrics"],
            "_features_b": {"before": before_b["features"], "after": after_b["features"]}}


def control_experiment(budget_s: float, model_id: str, steps: Optional[int] = None,
                       fold: str = "AB", progress=print) -> Dict[str, Any]:
    """Fine-tune ``model_id`` on the replay data only (no corrections), same steps and
    budget; metrics of the candidate on the fold's measured clusters (in memory, not
    registered)."""
    from backend.inference.predictors import TorchPredictor
    from backend.learning.finetune import RetrainConfig, finetune
    from backend.models.catalog import load_card
    a_tiles, b_tiles = cluster_split()
    dst_tiles = b_tiles if fold == "AB" else a_tiles
    card = load_card(model_id)
    cfg = RetrainConfig(budget_s=budget_s, steps=steps, replay_fraction=1.0)
    progress(f"[1c {fold}] control: replay-only fine-tune of {model_id}")
    model, info = finetune(card, [], cfg)
    s = score_tiles(model_id, dst_tiles, predictor=TorchPredictor(card, model=model))
    return {"steps": info["steps"], "seconds": info["seconds"], "b_after": s["metrics"],
            "note": "same pipeline as detect, candidate in memory, not registered"}


@contextlib.contextmanager
def _env(**values: str):
    """Set environment variables for a block, restoring them afterwards."""
    prev = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in prev.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def site_split() -> Tuple[List[Any], List[Any]]:
    """``(tiles the user corrects, the rest of the site)`` of :data:`SITE`.

    The site's tiles are grouped into blocks (site clusters at half the site radius,
    :func:`backend.learning.data.clusters`); the user corrects the block whose size is
    closest to :data:`SITE_SHARE` of the site (the larger on a tie), the rest measures.
    """
    site = pvdata.site_of(SITE, pvdata.list_tiles("train"))
    blocks = pvdata.clusters(site, 0.0004)
    user = min(blocks, key=lambda b: (abs(len(b) - SITE_SHARE * len(site)), -len(b)))
    names = {t.name for t in user}
    return (sorted(user, key=lambda t: t.name),
            [t for t in site if t.name not in names])


def gate_on(keep: Dict[str, Any], predictor, scope: str = "area",
            max_iou_drop: float = 0.02) -> Dict[str, Any]:
    """Put another candidate (``engine``) through the gate a retrain used (``keep``, see
    :func:`backend.learning.retrain.run_retrain`): the same held-out corrections and
    guard, the same rule; returns ``{verdict, reason, warnings, change, before,
    after}``."""
    from backend.learning.evaluation import gate
    g = gate(keep["card"], keep["current"], predictor, keep["corrections"], keep["guard"],
             max_iou_drop, scope, lambda f, m: None)
    v = g.verdict
    return {"verdict": v.verdict, "reason": v.reason, "warnings": v.warnings,
            "change": g.change, "before": g.before, "after": g.after}


def site_experiment(budget_s: float, steps: Optional[int] = None, control: bool = True,
                    progress=print) -> Dict[str, Any]:
    """Experiment 0: a site the model never saw (see the module docstring).

    The model trained without :data:`SITE` (:func:`site_model`); the simulated user
    corrects a third of the site (:func:`site_split`) and retrains it for that area;
    detection, as the plugin asks for it (``by_area``), is then measured on the rest of
    the site and on the other sites (the pv01 held-out split), against the model before
    and the replay-only control, whose candidate goes through the same gate. Finally
    the version is taken out of use and detection on the rest of the site must give
    exactly the features it gave before. The user folder must be set already.
    """
    from backend.inference.predictors import TorchPredictor
    from backend.learning.finetune import RetrainConfig, finetune
    from backend.models import versions as V
    card0 = site_model(progress=progress)
    with _env(ORTHOLENS_MODELS=str(card0.path.parent)):
        mid = card0.id
        user, rest = site_split()
        other = pvdata.list_tiles("heldout")
        progress(f"[0] site of {SITE}: the user corrects {len(user)} tiles with {mid}")
        features, reviewed, counts, crs = correct_tiles(mid, user)
        progress(f"[0] simulated user: {counts}; detect on the rest of the site "
                 f"({len(rest)} tiles) and on other sites ({len(other)} held-out tiles)")
        before = score_tiles(mid, rest)
        other_before = score_tiles(mid, other)
        params = RetrainParams(reviewed[0]["source"], mid, features, crs=crs,
                               reviewed=reviewed, budget_s=budget_s,
                               steps=int(steps) if steps else None, scope="area")
        keep: Dict[str, Any] = {}
        progress(f"[0] retrain {mid} for this area: {steps or 'no fixed'} steps")
        t0 = time.monotonic()
        from backend.learning.retrain import run_retrain
        rep = run_retrain(params.to_header(), [], lambda f, m: None, keep=keep)["retrain"]
        secs = time.monotonic() - t0
        progress(f"[0] {_outcome(rep)}; detect by area on the rest of the site")
        after = score_tiles(mid, rest, by_area=True)
        other_after = score_tiles(mid, other, by_area=True)
        cand = score_tiles(mid, rest, predictor=keep["predictor"])
        other_cand = score_tiles(mid, other, predictor=keep["predictor"])
        out: Dict[str, Any] = {
            "site": SITE, "model": mid, "site_tiles": len(user) + len(rest),
            "tiles_user": [t.name for t in user], "tiles_rest": [t.name for t in rest],
            "user_edits": counts, "features": len(features), "steps": steps,
            "job_seconds": round(secs, 1), "retrain": _brief(rep),
            "rest_before": before["metrics"], "rest_after": after["metrics"],
            "rest_after_models": after["models"], "rest_candidate": cand["metrics"],
            "other_tiles": len(other),
            "other_before": other_before["metrics"], "other_after": other_after["metrics"],
            "other_after_models": other_after["models"],
            "other_candidate": other_cand["metrics"],
            "other_identical": other_after["features"] == other_before["features"]}
        if control:
            progress(f"[0c] control: replay-only fine-tune of {mid}, then the same gate")
            card = keep["card"]
            model, info = finetune(card, [], RetrainConfig(budget_s=budget_s, steps=steps,
                                                           replay_fraction=1.0))
            predictor = TorchPredictor(card, model=model)
            out["control"] = {"steps": info["steps"],
                              "rest": score_tiles(mid, rest, predictor=predictor)["metrics"],
                              "gate": gate_on(keep, predictor)}
        if rep["accepted"]:
            d = V.rollback(rep["model"])  # out of use in its area
            again = score_tiles(mid, rest, by_area=True)
            out["rollback"] = {"version": rep["model"], "in_use_after": rep["model"] in
                               V.area_ids(V.split_id(mid)[0]),
                               "models": again["models"],
                               "identical_features": again["features"] ==
                               before["features"], "active": d["active"]}
            progress(f"[0] {rep['model']} taken out of use: features on the rest of the "
                     f"site identical to before: {out['rollback']['identical_features']}")
    return out


def vienna_experiment(budget_s: float, steps: Optional[int] = None,
                      progress=print) -> Dict[str, Any]:
    """Experiment 2 (see the module docstring)."""
    from backend.models import versions as V
    import rasterio
    path = str(vienna_scene())
    with rasterio.open(path) as src:
        crs = src.crs.to_wkt()
    active0 = V.active_id(base_model())
    # The simulated user deletes every detection in the west half, so the corrected
    # layer is empty there (the job runs the model there itself; its report counts them).
    progress(f"[2] Vienna: detect on the east half with {active0}")
    east0 = detect(active0, path, VIENNA_UNSEEN)
    params = RetrainParams(FileSource(path), active0, (), crs=crs,
                           reviewed=[{"extent": VIENNA_TRAIN}], budget_s=budget_s,
                           steps=int(steps) if steps else None, scope="general")
    progress(f"[2] retrain {active0}: {steps or 'no fixed'} steps, at most {budget_s:g} s")
    rep, secs, active1 = retrain(params)
    progress(f"[2] {_outcome(rep)}; detect on the east half with {active1}")
    east1 = detect(active1, path, VIENNA_UNSEEN)
    rollback = None
    if rep["accepted"]:
        d = V.rollback(base_model())
        east2 = detect(d["active"], path, VIENNA_UNSEEN)
        rollback = {"from": active1, "to": d["active"],
                    "identical_features": east2["features"] == east0["features"]}
        progress(f"[2] rollback {active1} -> {d['active']}: east-half features identical "
                 f"to its earlier output: {rollback['identical_features']}")
    km2 = east0["stats"]["area_km2"]
    c = rep["corrections"]
    deleted = c["train"]["deleted"] + c["holdout"]["deleted"]
    return {"deleted_in_west": deleted, "budget_s": budget_s, "steps": steps,
            "rollback": rollback,
            "job_seconds": round(secs, 1), "retrain": _brief(rep),
            "model_before": active0, "model_after": active1, "east_km2": km2,
            "east_false_polygons_before": len(east0["features"]),
            "east_false_polygons_after": len(east1["features"]),
            "east_fp_per_km2_before": round(len(east0["features"]) / km2, 1),
            "east_fp_per_km2_after": round(len(east1["features"]) / km2, 1),
            "east_fp_m2_before": round(sum(f["area_m2"] for f in east0["features"]), 1),
            "east_fp_m2_after": round(sum(f["area_m2"] for f in east1["features"]), 1)}


def rollback_experiment(folds: Dict[str, Dict[str, Any]], user_models: Path,
                        progress=print) -> Dict[str, Any]:
    """Experiment 3: rolling back every version a fold accepted restores the parent's
    outputs exactly, on the tiles that fold measured (each fold's lineage lives in its
    own user model folder, see :func:`run`)."""
    from backend.models import versions as V
    by_name = {t.name: t for t in pvdata.list_tiles("heldout")}
    steps = []
    prev = os.environ.get("ORTHOLENS_USER_MODELS")
    try:
        for i, (fold, pv) in enumerate(folds.items()):
            os.environ["ORTHOLENS_USER_MODELS"] = str(
                user_models if i == 0 else user_models / f"fold-{fold}")
            dst = [by_name[n] for n in pv["tiles_b"]]
            recorded = {pv["model_before"]: pv["_features_b"]["before"],
                        pv["model_after"]: pv["_features_b"]["after"]}
            while V.active_id(base_model()) != base_model():
                cur = V.active_id(base_model())
                d = V.rollback(base_model())
                got = score_tiles(d["active"], dst)["features"]
                step = {"fold": fold, "from": cur, "to": d["active"],
                        "features": sum(len(v) for v in got.values())}
                if d["active"] in recorded:
                    step["identical_features"] = got == recorded[d["active"]]
                steps.append(step)
                progress(f"[3 {fold}] rollback {cur} -> {d['active']}: features identical "
                         f"to its earlier output: {step.get('identical_features', 'not recorded')}")
    finally:
        if prev is None:
            os.environ.pop("ORTHOLENS_USER_MODELS", None)
        else:
            os.environ["ORTHOLENS_USER_MODELS"] = prev
    return {"steps": steps}


def _brief(rep: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("accepted", "verdict", "reason", "model", "parent", "active", "in_use",
            "scope", "change", "pending", "rule", "warnings")
    out = {k: rep.get(k) for k in keys}
    out["train"] = {k: rep["train"].get(k) for k in ("steps", "seconds", "device",
                                                      "train_encoder", "replay_tiles")}
    out["before"], out["after"] = rep["before"], rep["after"]
    out["corrections"] = rep["corrections"]
    return out


def run(budget_s: float = 900.0, vienna_budget_s: Optional[float] = None,
        control: bool = True, user_models: Optional[Path] = None,
        steps: Optional[int] = STEPS, folds: Sequence[str] = ("AB", "BA"),
        progress=print, site: bool = True, site_control: bool = True) -> Dict[str, Any]:
    """Run experiments 0-3 (and the controls) in ``user_models`` (default: a fresh
    temporary folder); returns the measurements.

    Experiment 0 (``site``; its control with ``site_control``) runs in the sub-folder
    ``site`` of ``user_models``.

    Fold ``AB`` runs in ``user_models`` itself (its version is the one experiments 2
    and 3 build on); fold ``BA`` starts again from the shipped model in a sub-folder,
    so each fold measures one retrain of the shipped model. ``steps`` (default
    :data:`STEPS`) fixes the fine-tuning length so that the figures repeat;
    ``budget_s`` only caps the time."""
    prev = os.environ.get("ORTHOLENS_USER_MODELS")
    tmp = None
    if user_models is None:
        tmp = tempfile.TemporaryDirectory(prefix="ortholens-retrain-eval-")
        user_models = Path(tmp.name)
    os.environ["ORTHOLENS_USER_MODELS"] = str(user_models)
    try:
        import torch
        t0 = time.monotonic()
        res: Dict[str, Any] = {"device": "cuda" if torch.cuda.is_available() else "cpu",
                               "threads": train_threads(),
                               "folds": {}, "controls": {}}
        if site:
            with _env(ORTHOLENS_USER_MODELS=str(user_models / "site")):
                res["site"] = site_experiment(budget_s, steps, site_control, progress)
        for fold in folds:
            if fold != folds[0]:
                os.environ["ORTHOLENS_USER_MODELS"] = str(user_models / f"fold-{fold}")
            res["folds"][fold] = pv01_experiment(budget_s, steps, fold, progress)
            if control:
                res["controls"][fold] = control_experiment(
                    budget_s, res["folds"][fold]["model_before"], steps, fold, progress)
        os.environ["ORTHOLENS_USER_MODELS"] = str(user_models)
        fl = list(res["folds"].values())
        res["pooled"] = {"before": _pool(*[f["b_before"] for f in fl]),
                         "after": _pool(*[f["b_after"] for f in fl])}
        if control and res["controls"]:
            res["pooled"]["control"] = _pool(*[c["b_after"] for c in res["controls"].values()])
        res["pv01"] = fl[0]
        # from the shipped model too: the pv01 version may have learned Vienna's roofs
        os.environ["ORTHOLENS_USER_MODELS"] = str(user_models / "vienna")
        res["vienna"] = vienna_experiment(vienna_budget_s or budget_s, steps, progress)
        os.environ["ORTHOLENS_USER_MODELS"] = str(user_models)
        res["rollback"] = rollback_experiment(res["folds"], user_models, progress)
        res["seconds"] = round(time.monotonic() - t0, 1)
        return res
    finally:
        if prev is None:
            os.environ.pop("ORTHOLENS_USER_MODELS", None)
        else:
            os.environ["ORTHOLENS_USER_MODELS"] = prev
        if tmp is not None:
            tmp.cleanup()


def _f(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _row(name: str, m: Dict[str, Any]) -> str:
    return (f"    | {name} | {_f(m['object_f1'])} | {_f(m['object_precision'])} | "
            f"{_f(m['object_recall'])} | {_f(m.get('pixel_iou', '-'))} | {m['objects_true']} | "
            f"{m['objects_pred']} | {m['false_objects']} | {m['missed_objects']} |")


_HEAD = ["    | {} | object F1 | precision | recall | pixel IoU | true | pred | false | "
         "missed |", "    |---|---|---|---|---|---|---|---|---|"]


def site_table(si: Dict[str, Any]) -> List[str]:
    """Experiment 0 as a Markdown table (README, Retrain): object and pixel figures on
    the rest of the site and on the other sites, with the gate's verdict."""
    r = si["retrain"]
    ch = r.get("change") or {}
    head = ["| on the rest of the site ({} tiles) | object F1 | precision | recall | "
            "pixel IoU | false | missed | gate's verdict |".format(len(si["tiles_rest"])),
            "|---|---|---|---|---|---|---|---|"]

    def row(name, m, verdict=""):
        return (f"| {name} | {_f(m['object_f1'])} | {_f(m['object_precision'])} | "
                f"{_f(m['object_recall'])} | {_f(m['pixel_iou'])} | {m['false_objects']} | "
                f"{m['missed_objects']} | {verdict} |")
    used = ", ".join(si["rest_after_models"])
    lines = head + [row(f"before ({si['model']})", si["rest_before"])]
    lines.append(row(f"after: detection by area (ran {used})", si["rest_after"],
                     f"**{r['verdict']}**"))
    if not r["accepted"]:
        lines.append(row("the candidate itself (not used)", si["rest_candidate"]))
    if "control" in si:
        g = si["control"]["gate"]
        lines.append(row("control: replay only, same steps", si["control"]["rest"],
                         f"**{g['verdict']}**"))
    lines += ["", "| on other sites (pv01 held-out split, {} tiles) | object F1 | "
              "precision | recall | pixel IoU | false | missed | |".format(si["other_tiles"]),
              "|---|---|---|---|---|---|---|---|",
              row(f"before ({si['model']})", si["other_before"]),
              row(f"after: detection by area (ran {', '.join(si['other_after_models'])})",
                  si["other_after"]),
              row("the candidate itself, were it used there", si["other_candidate"])]
    if ch.get("f1_change") is not None:
        lines += ["", f"Held-out corrections (the strips of the corrected tiles): "
                      f"{ch['objects']} objects, object F1 {_f(ch['object_f1'][0])} -> "
                      f"{_f(ch['object_f1'][1])}, change {ch['f1_change']:+.3f} "
                      f"({ch['confidence']:.0%} interval {ch['f1_interval'][0]:+.3f} to "
                      f"{ch['f1_interval'][1]:+.3f})."]
    return lines


def report(res: Dict[str, Any]) -> str:
    """The printed summary."""
    vi = res["vienna"]
    lines = [f"Retrain evaluation on {res['device']} ({res['threads']} threads), "
             f"{res.get('seconds', '?')} s in all", ""]
    if "site" in res:
        si = res["site"]
        r = si["retrain"]
        lines += [
            f"(0) a site the model never saw: {si['model']} (trained without the "
            f"{si['site_tiles']} tiles of the site of {si['site']}); the user corrects "
            f"{len(si['tiles_user'])} of them ({si['user_edits']['deleted']} deleted, "
            f"{si['user_edits']['reshaped']} reshaped, {si['user_edits']['added']} "
            f"added, {si['user_edits']['kept']} kept) and retrains for this area: "
            f"{r['train']['steps']} steps, job {si['job_seconds']} s -> "
            f"{r['verdict'].upper()}: {r['reason']}"]
        for w in r.get("warnings") or []:
            lines.append(f"    warning: {w}")
        if "control" in si:
            g = si["control"]["gate"]
            lines.append(f"    control (replay only) through the same gate -> "
                         f"{g['verdict'].upper()}: {g['reason']}")
        if "rollback" in si:
            rb = si["rollback"]
            lines.append(f"    {rb['version']} taken out of use: the rest of the site "
                         f"gives the features it gave before: {rb['identical_features']}")
        lines += ["    " + x for x in site_table(si)] + [""]
    for fold, pv in res["folds"].items():
        r = pv["retrain"]
        src, dst = fold[0], fold[1]
        lines += [
            f"(1 {fold}) pv01: corrections on clusters {src} ({len(pv['tiles_a'])} tiles), "
            f"measured on clusters {dst} ({len(pv['tiles_b'])} tiles: "
            f"{', '.join(pv['tiles_b'])})",
            f"    simulated user: {pv['user_edits']['deleted']} deleted, "
            f"{pv['user_edits']['reshaped']} reshaped, {pv['user_edits']['added']} added, "
            f"{pv['user_edits']['kept']} kept ({pv['features']} features)",
            f"    retrain {pv['model_before']}: {r['train']['steps']} steps in "
            f"{r['train']['seconds']} s (cap {pv['budget_s']:g} s; job {pv['job_seconds']} s,"
            f" encoder trained: {r['train']['train_encoder']})"
            f" -> {'ACCEPTED as ' + str(r['model']) if r['accepted'] else r['verdict'].upper()}"
            f": {r['reason']}",
            f"    user's held-out corrections: object F1 "
            f"{_f(r['before']['user_holdout']['object_f1'])} -> "
            f"{_f(r['after']['user_holdout']['object_f1'])}, object errors "
            f"{r['before']['user_holdout']['object_errors']} -> "
            f"{r['after']['user_holdout']['object_errors']}",
        ]
        if "guard" in r["before"]:
            lines.append(f"    guard, pv01 validation tiles ({r['before']['guard']['tiles']}):"
                         f" pixel IoU {_f(r['before']['guard']['pixel_iou'])} -> "
                         f"{_f(r['after']['guard']['pixel_iou'])}")
        lines.append(_HEAD[0].format(f"clusters {dst}"))
        lines.append(_HEAD[1])
        lines.append(_row(f"before ({pv['model_before']})", pv["b_before"]))
        lines.append(_row(f"after ({pv['model_after']})", pv["b_after"]))
        if "b_rejected_candidate" in pv:
            lines.append(_row("rejected candidate (not registered)",
                              pv["b_rejected_candidate"]))
        if fold in res.get("controls", {}):
            lines.append(_row("control: replay only, same steps",
                              res["controls"][fold]["b_after"]))
        lines.append("")
    if len(res["folds"]) > 1:
        po = res["pooled"]
        lines.append("(1) pooled over the folds: every held-out object measured once, by "
                     "a retrain that never saw its cluster")
        lines += [_HEAD[0].format("pooled"), _HEAD[1], _row("before", po["before"]),
                  _row("after", po["after"])]
        if "control" in po:
            lines.append(_row("control: replay only", po["control"]))
        lines.append("")
    r = vi["retrain"]
    lines += [
        f"(2) Vienna (no panels): the user deleted all {vi['deleted_in_west']} detections "
        f"in the west half; retrain {vi['model_before']}: {r['train']['steps']} steps "
        f"(job {vi['job_seconds']} s) -> "
        f"{'ACCEPTED as ' + str(r['model']) if r['accepted'] else r['verdict'].upper()}: "
        f"{r['reason']}",
        f"    east half (never reviewed, {vi['east_km2']} km2): false polygons "
        f"{vi['east_false_polygons_before']} -> {vi['east_false_polygons_after']} "
        f"({vi['east_fp_per_km2_before']} -> {vi['east_fp_per_km2_after']} per km2; "
        f"{vi['east_fp_m2_before']} -> {vi['east_fp_m2_after']} m2)",
        "",
        "(3) rollback:"]
    if vi.get("rollback"):
        lines.append(f"    {vi['rollback']['from']} -> {vi['rollback']['to']} (Vienna): "
                     f"east-half features identical to {vi['rollback']['to']}'s earlier "
                     f"output: {vi['rollback']['identical_features']}")
    for s in res["rollback"]["steps"]:
        lines.append(f"    {s['from']} -> {s['to']}: features on B identical to "
                     f"{s['to']}'s earlier output: {s.get('identical_features', 'n/a')} "
                     f"({s['features']} features)")
    if not res["rollback"]["steps"]:
        lines.append("    nothing to roll back (no version was accepted)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="measure the retrain loop on real data")
    ap.add_argument("--steps", type=int, default=STEPS,
                    help=f"fine-tuning steps of every retrain (default {STEPS}; 0: use the "
                         f"time budget alone)")
    ap.add_argument("--budget-s", type=float, default=900.0,
                    help="time cap of every retrain, seconds (default 900: the fixed "
                         "steps fit even on a busy CPU)")
    ap.add_argument("--vienna-budget-s", type=float, default=None,
                    help="time cap of the Vienna retrain (default: --budget-s)")
    ap.add_argument("--folds", default="AB,BA",
                    help="pv01 folds to run: AB (correct A, measure B), BA, or both "
                         "(default AB,BA)")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the replay-only control fine-tunes")
    ap.add_argument("--no-site", action="store_true",
                    help="skip experiment 0 (a site the model never saw; its model is "
                         "trained once, about 10 minutes, into out/site-models)")
    ap.add_argument("--user-models", type=Path, default=None,
                    help="user model folder to write versions to (default: a temporary "
                         "folder, deleted afterwards)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "retrain-eval")
    args = ap.parse_args(argv)
    folds = tuple(f.strip().upper() for f in args.folds.split(",") if f.strip())
    if not folds or folds[0] != "AB" or any(f not in ("AB", "BA") for f in folds):
        ap.error("--folds must start with AB and hold AB and/or BA")
    res = run(args.budget_s, args.vienna_budget_s, not args.no_control, args.user_models,
              args.steps or None, folds, site=not args.no_site,
              site_control=not args.no_control)
    for f in res["folds"].values():
        f.pop("_features_b", None)
    res.pop("pv01", None)  # the same dict as folds["AB"]
    text = report(res)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(res, indent=2, default=str) + "\n",
                                           "utf-8")
    (args.out / "report.md").write_text("```\n" + text + "\n```\n", "utf-8")
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
