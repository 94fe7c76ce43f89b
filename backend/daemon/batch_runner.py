"""Batch jobs driven by the job store: record a job, run or resume it exactly once, and
describe it.

:func:`submit` checks a job's parameters and records it in the
:class:`~backend.daemon.jobstore.JobStore`; :func:`run_batch` runs (or resumes) a stored
job: it plans the grid at the first start (``backend.inference.batch.regions.make_plan``,
stored with the job), reconciles the output with the store, picks the executor (``local``
or ``ray``) for the regions still to do and appends each region's polygons to the
GeoPackage before recording the region as done.

Exactly once: the GeoPackage append (one SQLite transaction, every row carrying its
``region``) comes before the store's record of the region. On (re)start,
:func:`reconcile_output` deletes the rows of regions the store does not list as done and
those regions run again: no polygon is lost or written twice, whenever the daemon was
killed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import protocol as P
from backend.daemon.jobstore import CANCELLED, DONE, ERROR, QUEUED, RUNNING, JobStore
from backend.inference.batch.regions import RegionResult, grid_from_plan, local_results, make_plan
from backend.inference.batch.distributed import ray_results
from backend.inference.batch.gpkg import DEFAULT_LAYER, GpkgWriter
from backend.inference.detect import model_for
from backend.inference.pipeline import input_errors, model_errors
from backend.inference.raster import open_source
from backend.inference.predictors import Predictor
from backend.models.catalog import load_card
from protocol.errors import JobCancelled, JobError
from protocol.params import BatchParams

log = logging.getLogger("ortholens.batch")

Progress = Callable[[float, str], None]

#: The state a ``jobs`` reply gives a stored job that is queued or running in the store
#: but not in this daemon: a killed daemon left it; ``resume`` continues it.
INTERRUPTED = "interrupted"

#: Header fields that belong to one request, not to the job.
_NOT_STORED = ("v", "id", "type", "token", "arrays")


def submit(store: JobStore, params: BatchParams, job_id: Optional[str] = None) -> str:
    """Check a batch job and record it (state ``queued``); it does not run it.

    Args:
        store: the job store.
        params: the job; ``out_path`` is stored as an absolute path.
        job_id: the id to use (default: a fresh one, 32 hex characters).

    Returns:
        The job id.

    Raises:
        JobError: ``invalid_input`` for an output that exists (without ``overwrite``)
            or a corrupt model; ``not_found`` for a missing output folder, raster file
            or model.
        ProtocolError: ``bad_request`` for parameters outside the ``batch`` schema (not a
            file source, not a ``.gpkg``).
    """
    out = os.path.abspath(params.out_path)
    if os.path.exists(out) and not params.overwrite:
        raise JobError(f"{out} exists: choose a new file or set overwrite",
                       P.E_INVALID_INPUT)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise JobError(f"the output folder {parent} does not exist", P.E_NOT_FOUND)
    raster = params.detect.source.path
    if not os.path.isfile(raster):
        raise JobError(f"raster file not found: {raster}", P.E_NOT_FOUND)
    with model_errors():
        if params.detect.model is not None:
            card = load_card(params.detect.model)
        else:
            with input_errors(), open_source(params.detect.source) as ds:
                card, _ = model_for(params.detect, ds)
    # a job stores the model it runs: one chosen by the layer's GSD stays when it resumes
    detect = dataclasses.replace(params.detect, model=card.id)
    header = dataclasses.replace(params, out_path=out, detect=detect).to_header()
    job_id = job_id or uuid.uuid4().hex
    store.create(job_id, {k: v for k, v in header.items() if k not in _NOT_STORED})
    return job_id


def reconcile_output(writer: GpkgWriter, store: JobStore, job_id: str) -> Dict[int, int]:
    """Make the output agree with the store before (re)starting; returns the done regions
    as ``{region index: polygons}``.

    * no output yet: create it (and forget any region the store lists: it must rerun);
    * rows of regions the store does not list as done (a crash after the write, before
      the record) or whose row count differs: deleted, and those regions rerun.
    """
    done = store.done_regions(job_id)
    if not writer.exists():
        if done:
            log.warning("job %s: output %s is missing; restarting all regions", job_id,
                        writer.path)
            store.clear_regions(job_id)
        writer.create()
        return {}
    present = writer.region_counts()
    bad = {c for c, n in present.items() if done.get(c) != n}
    bad |= {c for c, n in done.items() if n and present.get(c, 0) != n}
    if bad:
        removed = writer.delete_regions(bad)
        log.info("job %s: removed %d row(s) of %d unfinished region(s)", job_id, removed,
                 len(bad))
        keep = {c for c in done if c not in bad}
        store.clear_regions(job_id, keep)
        done = {c: n for c, n in done.items() if c in keep}
    return done


def _results(executor: str, params: BatchParams, plan: Dict[str, Any],
             pending: Sequence[int], cancelled: Optional[Callable[[], bool]],
             predictor: Optional[Predictor]) -> Iterator[RegionResult]:
    """The region results of ``pending`` from the chosen executor."""
    if executor == "ray":
        return ray_results(params, plan, pending, cancelled=cancelled)
    if executor == "local":
        return local_results(params, plan, pending, cancelled, predictor)
    raise JobError(f"unknown executor {executor!r}", P.E_BAD_REQUEST)


@dataclass
class _Tally:
    """What the regions of one run produced, for the job's stats."""

    written: int = 0
    tiles_run: int = 0
    tiles_cached: int = 0
    grown: int = 0
    truncated: int = 0
    empty: int = 0
    warnings: List[str] = field(default_factory=list)
    unreadable: Dict[str, List[int]] = field(default_factory=dict)  # file -> regions


def run_batch(store: JobStore, job_id: str, progress: Optional[Progress] = None,
              cancelled: Optional[Callable[[], bool]] = None,
              predictor: Optional[Predictor] = None,
              executor: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) a stored batch job to completion.

    Args:
        store: the job store holding ``job_id``.
        progress: receives (fraction 0..1, message) after every region.
        cancelled: polled between model batches and regions; the job then stops and
            stays resumable (state ``cancelled``).
        predictor: predictor for the local executor (tests, benchmarks).
        executor: ``"local"`` or ``"ray"`` (``backend.inference.batch.distributed``;
            ``RAY_ADDRESS`` picks the cluster); default: the job's, else local.

    Returns:
        ``{"crs", "features": [], "stats"}`` (the polygons are in the GeoPackage;
        ``stats`` holds ``out_path``, ``layer``, ``count``, ``regions``...).

    Raises:
        JobError: unknown job (``not_found``), unusable raster or model, unknown
            executor.
        JobCancelled: ``cancelled()`` turned true.
    """
    t0 = time.perf_counter()
    progress = progress or (lambda f, m: None)
    job = store.get(job_id)
    if job is None:
        raise JobError(f"no batch job {job_id}", P.E_NOT_FOUND)
    store.set_state(job_id, RUNNING, "starting")
    try:
        params = BatchParams.from_header(job["request"])
        executor = executor or params.executor or "local"
        with model_errors():
            card = load_card(params.detect.model)
        plan = job["plan"]
        if plan is None:
            progress(0.0, "planning")
            plan = make_plan(params, card)
            store.set_plan(job_id, plan, plan["n_regions"])
        n = int(plan["n_regions"])
        writer = GpkgWriter(params.out_path, params.layer or DEFAULT_LAYER,
                            _output_crs(plan), plan.get("detected_at", ""))
        done = reconcile_output(writer, store, job_id)
        resumed = len(done)
        pending = [i for i in range(n) if i not in done]
        tally = _Tally(written=sum(done.values()), warnings=list(plan.get("warnings", [])))
        progress(len(done) / max(n, 1), f"{len(done)}/{n} regions done")
        results = _results(executor, params, plan, pending, cancelled, predictor)
        _write_results(results, writer, store, job_id, plan, done, tally, progress,
                       cancelled)
        count = writer.count()
        if count != tally.written or len(done) != n:  # pragma: no cover - a bug
            raise JobError(f"output holds {count} polygons, regions recorded "
                           f"{tally.written} ({len(done)}/{n} regions)", P.E_INTERNAL)
    except JobCancelled:
        store.set_state(job_id, CANCELLED, "cancelled; resumable")
        raise
    except JobError as exc:
        store.set_state(job_id, ERROR, exc.message)
        raise
    except BaseException as exc:
        store.set_state(job_id, ERROR, f"{type(exc).__name__}: {exc}")
        raise
    skipped = sum(len(v) for v in tally.unreadable.values())
    store.set_state(job_id, DONE, f"{count} polygons" + (
        f"; {skipped} region(s) unreadable in {', '.join(sorted(tally.unreadable))}"
        if skipped else ""))
    stats = _stats(plan, card, writer, count, n, resumed, tally, executor,
                   time.perf_counter() - t0)
    progress(1.0, f"{count} polygons in {writer.path}")
    return {"crs": _output_crs(plan), "features": [], "stats": stats}


def _write_results(results, writer: GpkgWriter, store: JobStore, job_id: str,
                   plan: Dict[str, Any], done: Dict[int, int], tally: _Tally,
                   progress: Progress, cancelled: Optional[Callable[[], bool]]) -> None:
    """Append each region's polygons to the GeoPackage, then record the region as done
    (the exactly-once order), updating ``done`` and ``tally``.

    Raises:
        JobCancelled: ``cancelled()`` turned true before the last region.
    """
    n = int(plan["n_regions"])
    try:
        for res in results:
            if res.unreadable:
                tally.unreadable.setdefault(res.unreadable, []).append(res.index)
            tally.written += writer.append(res)
            store.mark_done(job_id, res.index, len(res.features))
            done[res.index] = len(res.features)
            tally.tiles_run += res.tiles_run
            tally.tiles_cached += res.tiles_cached
            tally.grown += int(res.halo_px > int(plan["halo_px"]))
            tally.truncated += res.truncated
            tally.empty += int(res.empty)
            tally.warnings.extend(w for w in res.warnings if w not in tally.warnings)
            progress(len(done) / max(n, 1),
                     f"{len(done)}/{n} regions, {tally.written} polygons")
            if cancelled and cancelled() and len(done) < n:
                raise JobCancelled()
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _stats(plan: Dict[str, Any], card, writer: GpkgWriter, count: int, n: int,
           resumed: int, tally: _Tally, executor: str, elapsed: float) -> Dict[str, Any]:
    """The ``stats`` of a finished batch job's reply."""
    g = grid_from_plan(plan)
    return {"out_path": writer.path, "layer": writer.layer, "count": count,
            "regions": n, "regions_resumed": resumed, "regions_empty": tally.empty,
            "region_px": plan["region_px"],
            "halo_px": plan["halo_px"], "regions_halo_grown": tally.grown,
            "objects_cut": tally.truncated, "tiles_run": tally.tiles_run,
            "tiles_cached": tally.tiles_cached,
            "width": g.width, "height": g.height, "model": card.id, "gsd_m": card.gsd_m,
            "area_km2": round(g.width * g.height * card.gsd_m ** 2 / 1e6, 6),
            "seconds": round(elapsed, 3), "executor": executor,
            "regions_unreadable": sum(len(v) for v in tally.unreadable.values()),
            "damaged_files": {k: sorted(v) for k, v in sorted(tally.unreadable.items())},
            "warnings": tally.warnings}


def _output_crs(plan: Dict[str, Any]) -> str:
    """The CRS of a job's polygons, WKT: the raster's own (the grid's is a UTM view
    of a raster in degrees)."""
    return plan.get("source_crs_wkt") or plan["crs_wkt"]


def job_summary(job: Dict[str, Any], live: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A ``jobs`` reply entry for a stored job (see ``docs/protocol.md``).

    Args:
        job: the job as :meth:`JobStore.get` returns it.
        live: the job's ``Job.public()`` when this daemon has it queued or running.
    """
    params = BatchParams.from_header(job["request"])
    n = job["n_regions"]
    state = job["state"]
    plan = job.get("plan") or {}
    t = plan.get("transform") or [0.0] * 6
    area = (round(plan["width"] * plan["height"] * abs(t[0] * t[4]) / 1e6, 6)
            if plan.get("width") else None)
    running = live is not None
    if state in (RUNNING, QUEUED) and not running:
        state = INTERRUPTED
    return {"job_id": job["job_id"], "state": state, "running": running,
            "resumable": state != DONE and not running,
            "regions_done": job["regions_done"], "regions_total": n,
            "fraction": round(job["regions_done"] / n, 4) if n else 0.0,
            "polygons": job["n_features"], "out_path": params.out_path,
            "layer": params.layer or DEFAULT_LAYER, "model": params.detect.model,
            "threshold": params.detect.threshold, "area_km2": area,
            "source": params.detect.source.path,
            "executor": params.executor or "local",
            "created": job["created"], "updated": job["updated"],
            "message": (live or {}).get("message") or job["message"]}


__all__ = ["INTERRUPTED", "submit", "reconcile_output", "run_batch", "job_summary"]
