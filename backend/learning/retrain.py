"""Retrain: fine-tune a model on the user's corrections; keep the result only when it is
better.

:func:`run_retrain` is what the daemon runs for a ``retrain`` request (see
``protocol.wire``). Its steps, each done where it belongs:

1. **prepare the corrections** (:func:`backend.learning.corrections.build_corrections`):
   read the reviewed areas, run the current model, diff with the corrected polygons,
   split the areas into a train part and a held-out part; choose the guard
   (:func:`backend.learning.evaluation.choose_guard`);
2. **train** (:func:`backend.learning.finetune.finetune`) the selected model from its
   current weights for the part of the time budget the other steps leave
   (:class:`~backend.learning.time_plan.TimePlan`: the budget covers the whole job);
3. **judge** (:func:`backend.learning.evaluation.gate`): evaluate the current model and
   the candidate (its fp16-rounded weights, exactly what would be saved, through the
   predictor ``detect`` would use) on the held-out corrections and the guard, and apply
   the rule (:func:`~backend.learning.acceptance.judge`): a retrain with ``scope``
   ``"area"`` (the default) makes a version for the area it was taught on
   (:mod:`backend.models.area`), judged by
   :data:`~backend.learning.acceptance.AREA_RULE` with the guard as a measured warning;
   ``"general"`` makes one for everywhere, judged by
   :data:`~backend.learning.acceptance.ACCEPTANCE_RULE` with the guard as a veto. The
   rule is written into every new card;
4. **register**: an accepted candidate becomes a new version
   (:func:`backend.models.version_writer.write_version`: atomic, with lineage and
   area), in use in its area (or made active, for a general one); one the rule rejects
   or cannot decide on is kept aside (:func:`backend.models.pending.save_pending`) for
   :data:`~backend.models.version_writer.PENDING_DAYS` days (``pending`` in the
   report) so that the user may keep it after all (``keep`` request).

Every run, accepted, rejected, failed or cancelled, is logged to the MLflow file store
``<user models>/mlruns`` (:mod:`backend.models.tracking`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

import protocol as P
from backend.inference.pipeline import model_errors
from backend.inference.predictors import Predictor, get_predictor
from backend.learning.acceptance import rule_text
from backend.learning.corrections import Corrections, build_corrections
from backend.learning.data import GuardSet
from backend.learning.evaluation import (Gate, candidate_predictor, choose_guard, gate,
                                         guard_known, guard_pixels)
from backend.learning.finetune import RetrainConfig, finetune
from backend.learning.reviewed import file_sources, whole_extents
from backend.learning.time_plan import (MIN_TRAIN_STEPS, Progress, TimedPredictor, TimePlan,
                                        remember_export_s)
from backend.models.area import area_of_extents
from backend.models.card import ModelCard
from backend.models.catalog import load_card
from backend.models.pending import save_pending
from backend.models.tracking import MlflowRun, mlruns_dir
from backend.models.version_writer import candidate_dir, write_version
from backend.models.versions import activate, active_id, area_ids, now_iso, split_id
from protocol.errors import CorrectionsError, JobCancelled, JobError
from protocol.importing import onnx_only_message
from protocol.params import RetrainParams


def run_retrain(request: Dict[str, Any], arrays: List[np.ndarray],
                progress: Optional[Progress] = None,
                cancelled: Optional[Callable[[], bool]] = None,
                root: Optional[Path] = None,
                keep: Optional[Dict[str, Any]] = None,
                clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """Run a ``retrain`` request (the daemon's job function).

    Args:
        request: the header validated by ``protocol.wire.validate_request`` (type
            ``retrain``); read once into :class:`~protocol.params.RetrainParams`.
        arrays: the request's pixel frames (for ``pixels`` sources).
        progress: receives (fraction 0..1, message ``"<phase>: <detail> — about N s
            left"``; see :class:`~backend.learning.time_plan.TimePlan`).
        cancelled: polled between steps and tiles.
        root: the user model folder (default ``backend.models.versions.user_models_dir``).
        keep: for in-process callers such as ``tools.retrain_eval``: a dict that
            receives the candidate's ``predictor`` and ``card`` even when it is rejected,
            the ``corrections`` and ``guard`` it was judged on and the ``current``
            model's predictor (to put another candidate through the same gate).
        clock: the monotonic clock, seconds, of the time budget: the
            :class:`~backend.learning.time_plan.TimePlan` and the training's share.

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
    params = RetrainParams.from_header(request)
    card = _retrainable(params.model)
    cfg = RetrainConfig.from_params(params)
    job = _Job(params, card, cfg, TimePlan(cfg.budget_s, progress, clock),
               _start_run(card, cfg, root), root, cancelled, split_id(card.id)[0])
    status = "FAILED"
    try:
        prepared = _prepare(job, arrays)
        model, info = _train(job, prepared)
        judged = _judge(job, prepared, model, keep)
        report = _register(job, prepared, model, info, judged)
        _record(job, report)
        status = "FINISHED"
        return _result(report, progress)
    except JobCancelled:
        status = "KILLED"
        raise
    except CorrectionsError as exc:
        job.run.set_tag("ortholens.error", exc.message)
        raise JobError(exc.message, exc.code) from None
    finally:
        job.run.end(status)
        if job.cand_dir is not None:
            shutil.rmtree(job.cand_dir, ignore_errors=True)


@dataclass
class _Job:
    """One retrain job: its request, the model retrained, the configuration, the time
    plan, the MLflow run, the user model folder, the cancel poll, the lineage's base
    id and the candidate's folder once it was exported."""

    params: RetrainParams
    card: ModelCard
    cfg: RetrainConfig
    plan: TimePlan
    run: MlflowRun
    root: Optional[Path]
    cancelled: Optional[Callable[[], bool]]
    base: str
    cand_dir: Optional[Path] = None

    def is_cancelled(self) -> bool:
        """Whether the job was cancelled."""
        return bool(self.cancelled and self.cancelled())


@dataclass
class _Prepared:
    """The prepared corrections: the current model's predictor and its seconds spent on
    the reviewed areas, the corrections and their summary, the guard, and the warnings
    so far."""

    predictor: Predictor
    model_s: float
    corr: Corrections
    summary: Dict[str, Any]
    guard: Optional[GuardSet]
    warnings: List[str]


def _retrainable(model_id: str) -> ModelCard:
    """The card of the model to fine-tune.

    Raises:
        JobError: no such model, an ensemble, an imported (ONNX-only) model, or a model
            without weights.
    """
    with model_errors():
        card = load_card(model_id)
    if card.is_ensemble:
        raise JobError(f"{card.id} is an ensemble; retrain one of its members "
                       f"({', '.join(m.id for m in card.members)}) instead",
                       P.E_INVALID_INPUT)
    if card.onnx_only:
        raise JobError(onnx_only_message(card.id), P.E_INVALID_INPUT)
    if not card.weights_path.is_file():
        raise JobError(f"model {card.id!r} has no weights to fine-tune", P.E_NOT_FOUND)
    return card


def _start_run(card: ModelCard, cfg: RetrainConfig, root: Optional[Path]) -> MlflowRun:
    """The MLflow run of a retrain of ``card``, its configuration logged."""
    run = MlflowRun(mlruns_dir(root), f"retrain {card.id}")
    run.log_params({"model": card.id, "model_version": card.version, **asdict(cfg)})
    return run


def _prepare(job: _Job, arrays: List[np.ndarray]) -> _Prepared:
    """Step 1: the corrections (timing the current model on them) and the guard."""
    job.plan.report("preparing data", "loading the model")
    predictor = get_predictor(job.card, layer_gsd_m=_layer_gsd(job.params, arrays))
    timed = TimedPredictor(predictor)
    corr = build_corrections(job.params, arrays, job.card, timed,
                             lambda f, m: job.plan.report("preparing data", m),
                             job.cancelled, job.cfg.mistake_weight, job.cfg.holdout_fraction)
    summary = corr.summary()
    job.run.log_params({"corrections": summary["features"],
                        "reviewed_m2": summary["reviewed_m2"],
                        "areas_train": summary["train"]["areas"],
                        "areas_holdout": summary["holdout"]["areas"]})
    for side in ("train", "holdout"):
        for k in ("fp_objects", "fn_objects", "class_change_objects"):
            job.run.log_metric(f"corrections.{side}.{k}", summary[side][k])
    warnings = list(corr.warnings)
    guard = choose_guard(job.card, job.params.guard, file_sources(job.params), warnings)
    return _Prepared(predictor, timed.seconds, corr, summary, guard, warnings)


def _layer_gsd(params: RetrainParams, arrays: List[np.ndarray]) -> Optional[float]:
    """The GSD (metres per pixel) of the retrain's raster over its first reviewed area,
    which chooses the graph that ran its detection (``ModelCard.graph_path``); None
    when it cannot be read here (reading the corrections then says why)."""
    from backend.inference.grid import layer_gsd
    from backend.inference.raster import open_source
    area = params.reviewed[0] if params.reviewed else None
    extent = area.extent if area is not None else params.extent
    crs = area.extent_crs if area is not None else params.extent_crs
    source = (area.source if area is not None else None) or params.source
    k = area.array if area is not None and area.array is not None else 0
    try:
        with open_source(source, arrays[k] if len(arrays) > k else None) as ds:
            return layer_gsd(ds, extent, crs)
    except Exception:  # noqa: BLE001 - reported by build_corrections with its context
        return None


def _train(job: _Job, prep: _Prepared) -> Tuple[Any, Dict[str, Any]]:
    """Step 2: plan the training's share of the budget, then fine-tune."""
    corr = prep.corr
    area_px = sum(a.valid.size for a in corr.train + corr.holdout)
    device = "cuda" if _cuda() else "cpu"
    runs = 1 if guard_known(job.card, prep.guard) else 2  # the current model's, once
    train_s = job.plan.plan_training(prep.model_s / max(area_px, 1),
                                     area_px + runs * guard_pixels(prep.guard, job.card.gsd_m),
                                     device)
    job.run.log_param("train_budget_s", round(train_s, 1))
    job.plan.report("training", f"up to {train_s:.0f} s")
    model, info = finetune(job.card, corr.train, replace(job.cfg, budget_s=train_s),
                           lambda f, m: job.plan.report("training", m), job.cancelled, device,
                           job.plan.clock)
    job.plan.training_done()
    job.run.log_metric("train.steps", info["steps"])
    if info.get("final_loss") is not None:
        job.run.log_metric("train.final_loss", info["final_loss"], info["steps"])
    return model, info


def _judge(job: _Job, prep: _Prepared, model, keep: Optional[Dict[str, Any]]) -> Gate:
    """Step 3: export the candidate and put it through the gate."""
    job.plan.report("evaluating the gate", "exporting the candidate")
    t_export = time.monotonic()
    job.cand_dir = candidate_dir(job.base, job.root)
    cand = candidate_predictor(job.card, model, job.cand_dir)
    remember_export_s(time.monotonic() - t_export)
    if keep is not None:
        keep.update({"predictor": cand, "card": job.card, "corrections": prep.corr,
                     "guard": prep.guard, "current": prep.predictor})
    judged = gate(job.card, prep.predictor, cand, prep.corr, prep.guard, job.cfg.max_iou_drop,
                  job.cfg.scope, lambda f, m: job.plan.report("evaluating the gate", m),
                  job.cancelled)
    if judged.change.get("f1_change") is not None:
        job.run.log_metric("holdout.f1_change", judged.change["f1_change"])
        job.run.log_metric("holdout.objects", judged.change["objects"])
    for tag, m in (("before", judged.before), ("after", judged.after)):
        for part, s in m.items():
            for k in ("object_f1", "pixel_iou", "object_errors", "false_objects",
                      "missed_objects", "wrong_px", "false_polygons_per_km2"):
                if s.get(k) is not None:
                    job.run.log_metric(f"{tag}.{part}.{k}", s[k])
    return judged


def _register(job: _Job, prep: _Prepared, model, info: Dict[str, Any],
              judged: Gate) -> Dict[str, Any]:
    """Step 4: an accepted candidate becomes a version, another is kept pending (unless
    the job was cancelled); returns the report."""
    cfg, verdict = job.cfg, judged.verdict
    rule = rule_text(cfg.scope, cfg.max_iou_drop, cfg.site_margin_m)
    parts = whole_extents(prep.corr.train + prep.corr.holdout)
    area = (area_of_extents(parts, cfg.site_margin_m).to_dict()
            if cfg.scope == "area" else None)
    report: Dict[str, Any] = {
        "accepted": verdict.accepted, "verdict": verdict.verdict, "reason": verdict.reason,
        "model": None, "parent": job.card.id, "scope": area, "change": judged.change,
        "pending": None, "in_use": None,
        "before": judged.before, "after": judged.after, "corrections": prep.summary,
        "train": info, "budget_s": cfg.budget_s, "rule": rule,
        "warnings": prep.warnings + verdict.warnings,
        "mlflow_run": str(job.run.dir), "active": active_id(job.base, job.root)}
    lineage = _lineage(job, prep, info, judged, area)
    updates = {"acceptance_rule": rule,
               "retrain": {"parent": job.card.id, "reason": verdict.reason,
                           "budget_s": cfg.budget_s, "steps": info["steps"]}}
    if verdict.accepted:
        if job.is_cancelled():
            raise JobCancelled()
        job.plan.report("saving", f"the new version of {job.base}")
        new = write_version(job.card, model.state_dict(), updates, lineage, job.root,
                            prepared=job.cand_dir)
        report["model"] = new.id
        if job.params.activate is not False:
            activate(new.id, job.root)
        report["active"] = active_id(job.base, job.root)
        if area is not None:
            report["in_use"] = new.id in area_ids(job.base, job.root)
        job.run.set_tag("ortholens.model", new.id)
    elif not job.is_cancelled():
        report["pending"] = save_pending(job.card, job.cand_dir, updates, lineage, job.root)
    return report


def _lineage(job: _Job, prep: _Prepared, info: Dict[str, Any], judged: Gate,
             area: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What a new version (or a pending candidate) records of its retrain: the data, the
    numbers, the configuration, the verdict, its area."""
    summary, verdict = prep.summary, judged.verdict
    return {
        "created": now_iso(), "corrections": summary["features"],
        "data": {"sources": file_sources(job.params) or ["pixels sent by the plugin"],
                 "reviewed": [{"area": a.reviewed.index, "part": a.reviewed.part or "whole",
                               "holdout": a.holdout,
                               "bounds": [round(v, 3) for v in a.bounds]}
                              for a in prep.corr.train + prep.corr.holdout],
                 "replay": (f"pv01 train split, fit tiles ({info['replay_tiles']})"
                            if info["replay_tiles"] else "none")},
        "summary": summary, "metrics": {"before": judged.before, "after": judged.after,
                                        "held_out_change": judged.change},
        "config": asdict(job.cfg), "train": info, "decision": verdict.verdict,
        "verdict": verdict.verdict, "reason": verdict.reason, "scope": area,
        "warnings": list(verdict.warnings), "mlflow_run_id": job.run.run_id}


def _record(job: _Job, report: Dict[str, Any]) -> None:
    """The job's time in the report (a warning when it ran past its budget), and the
    report in the MLflow run."""
    report["time"] = times = job.plan.summary()
    if not times["within_budget"]:
        over = times.get("preparing_s", 0.0) + times.get("checking_s", 0.0)
        report["warnings"].append(
            f"the retrain took {times['seconds']:.0f} s, over its "
            f"{job.cfg.budget_s:.0f} s budget: preparing the data and evaluating the gate "
            f"alone took {over:.0f} s here; give a larger budget or review a smaller "
            f"area")
    steps, asked = report["train"].get("steps"), job.params.steps
    if isinstance(steps, int) and steps < MIN_TRAIN_STEPS and (asked is None or steps < asked):
        report["warnings"].append(
            f"training took only {steps} step{'s' if steps != 1 else ''}, fewer than the "
            f"{MIN_TRAIN_STEPS} a retrain needs to learn: preparing the data and the gate "
            f"left {times.get('training_s', 0.0):.0f} s of the {job.cfg.budget_s:.0f} s "
            f"budget (the machine may be busy); give a larger budget")
    job.run.set_tag("ortholens.decision", "accepted" if report["accepted"] else "rejected")
    job.run.set_tag("ortholens.reason", report["reason"])
    job.run.log_artifact_text("report.json", json.dumps(report, indent=2, default=str))


def _result(report: Dict[str, Any], progress: Optional[Progress]) -> Dict[str, Any]:
    """The job's last progress event and its result."""
    if progress is not None:
        progress(1.0, ("new version " + str(report["model"])) if report["accepted"] else
                 "candidate rejected")
    stats = {"seconds": report["time"]["seconds"], "accepted": report["accepted"],
             "model": report["model"]}
    return {"crs": "", "features": [], "stats": stats, "retrain": report}


def _cuda() -> bool:
    import torch
    return bool(torch.cuda.is_available())
