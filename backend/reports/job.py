"""An ``inventory`` job: read the layers, compute, write the GeoPackage, CSV and report.

:func:`run_inventory` is the daemon's job function (``backend.daemon.jobs.JobFn``); its
result carries no polygons (``features`` is empty: the outputs are files) and its
``stats`` say where the files are and what they add up to. :func:`build_inventory`
computes an :class:`InventoryResult` without writing anything (the tests use it).
"""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from protocol.errors import E_INVALID_INPUT, JobCancelled, JobError
from protocol.inventory import InventoryParams, VectorLayer

from . import outputs
from .change import Change, compare, counts
from .crs import reproject, working_crs
from .inventory import (Installation, Places, Totals, make_installations, overall, place,
                        polygon_names, totals_by)
from .layers import PolygonLayer, read_polygons

#: The files an inventory writes into its output folder, by kind.
OUTPUT_FILES = {"gpkg": "solar_inventory.gpkg", "csv": "solar_inventory.csv",
                "html": "solar_inventory.html"}

Progress = Callable[[float, str], None]


@dataclass
class InventoryResult:
    """Everything an inventory found, in the working CRS.

    Attributes:
        params: the request.
        crs: the working CRS (pyproj); crs_note: why it differs from the detections'
            CRS ("" when it does not).
        installations: the installations (``backend.reports.inventory``).
        per_class: class -> totals; total: the totals of all.
        buildings, zones: :class:`~backend.reports.inventory.Places`, or None.
        changes: the change table (``backend.reports.change``), or None;
        earlier_geoms, earlier_fids, earlier_name: the earlier installations.
        models: ``(model, model_version)`` -> installations detected with it.
        inputs: request field -> "path (layer)" of each layer read.
        warnings: sentences for the report and the reply.
        created: when it was made (UTC, ISO 8601); version: the engine's version.
    """

    params: InventoryParams
    crs: Any
    crs_note: str
    installations: List[Installation]
    per_class: Dict[str, Totals]
    total: Totals
    buildings: Optional[Places] = None
    zones: Optional[Places] = None
    changes: Optional[List[Change]] = None
    earlier_geoms: List[Any] = field(default_factory=list)
    earlier_fids: List[int] = field(default_factory=list)
    earlier_name: str = ""
    models: Dict[Tuple[str, str], int] = field(default_factory=dict)
    inputs: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    created: str = ""
    version: str = ""


def _note(r: InventoryResult, layer: PolygonLayer, role: str) -> None:
    """Record a layer read in ``r``'s inputs, and its features left out in its
    warnings."""
    r.inputs[role] = f"{layer.path} (layer {layer.name}, {len(layer.geoms)} polygons)"
    if layer.dropped:
        r.warnings.append(f"{layer.dropped} features of the {role} layer have no area "
                          f"(points, lines or empty) and were left out.")


def _read(ref: VectorLayer, role: str, r: InventoryResult
          ) -> Tuple[PolygonLayer, List[Any]]:
    """A layer read and moved to the working CRS (noted in ``r``)."""
    layer = read_polygons(ref, role)
    _note(r, layer, role)
    return layer, reproject(layer.geoms, layer.crs, r.crs)


def _start(params: InventoryParams) -> InventoryResult:
    """Read the detections, choose the working CRS and make the installations."""
    from backend import __version__
    det = read_polygons(params.detections, "detections")
    try:
        crs, note = working_crs(det.crs, det.geoms) if det.geoms else (det.crs, "")
    except ValueError as exc:
        raise JobError(f"no metre CRS for the detections: {exc}", E_INVALID_INPUT,
                       field="detections") from None
    insts = make_installations(det, reproject(det.geoms, det.crs, crs), crs, params)
    r = InventoryResult(params, crs, note, insts,
                        totals_by(insts, lambda i: i.cls), overall(insts),
                        created=dt.datetime.now(dt.timezone.utc).isoformat(
                            timespec="seconds"), version=__version__)
    _note(r, det, "detections")
    r.models = dict(collections.Counter(
        (i.model, i.model_version or "") for i in insts if i.model))
    return r


def build_inventory(params: Union[InventoryParams, Mapping[str, Any]],
                    progress: Optional[Progress] = None,
                    cancelled: Optional[Callable[[], bool]] = None) -> InventoryResult:
    """Compute an inventory (nothing is written).

    Raises:
        JobError: ``not_found`` / ``invalid_input`` for a layer that cannot be used
            (its ``field`` names it), a missing building or zone attribute.
        JobCancelled: ``cancelled()`` turned true.
    """
    p = params if isinstance(params, InventoryParams) else InventoryParams.from_header(params)
    progress = progress or (lambda f, m: None)

    def step(fraction: float, message: str) -> None:
        if cancelled is not None and cancelled():
            raise JobCancelled()
        progress(fraction, message)

    step(0.0, "reading the detections")
    r = _start(p)
    for role, ref, attribute in (("buildings", p.buildings, p.building_id),
                                 ("zones", p.zones, p.zone_name)):
        if ref is not None:
            step(0.3 if role == "buildings" else 0.45, f"reading the {role}")
            layer, geoms = _read(ref, role, r)
            places = place(r.installations, role, polygon_names(layer, attribute, role),
                           geoms)
            setattr(r, role, places)
    if p.earlier is not None:
        step(0.6, "comparing with the earlier detections")
        layer, r.earlier_geoms = _read(p.earlier, "earlier", r)
        r.earlier_fids, r.earlier_name = layer.fids, r.inputs["earlier"]
        r.changes = compare(r.earlier_geoms, [i.geom for i in r.installations],
                            p.match_overlap, p.area_tolerance, p.area_tolerance_m2)
    step(0.7, "writing")
    return r


def output_paths(out_dir: Union[str, Path]) -> Dict[str, Path]:
    """kind -> the path of each output file (:data:`OUTPUT_FILES`) in ``out_dir``."""
    return {k: Path(out_dir) / name for k, name in OUTPUT_FILES.items()}


def write_outputs(r: InventoryResult) -> Dict[str, str]:
    """Write the GeoPackage, the CSV and the HTML report into ``r.params.out_dir``
    (created); returns kind -> path.

    Raises:
        JobError: ``invalid_input`` when the folder cannot be written, or when
            ``overwrite`` is False and an output file exists.
    """
    from .report import html_report
    paths = output_paths(r.params.out_dir)
    if r.params.overwrite is False and any(p.exists() for p in paths.values()):
        raise JobError(f"the output folder already holds an inventory "
                       f"({paths['gpkg'].name}); allow overwriting or choose another "
                       f"folder", E_INVALID_INPUT, field="out_dir")
    try:
        Path(r.params.out_dir).mkdir(parents=True, exist_ok=True)
        gpkg = outputs.GpkgOut(paths["gpkg"], r.crs.to_wkt())
        gpkg.layer("installations", [i.geom for i in r.installations],
                   outputs.installation_columns(r.installations))
        for places in (r.buildings, r.zones):
            if places is not None:
                outputs.places_layer(gpkg, places)
        if r.changes is not None:
            outputs.changes_layer(gpkg, r.changes, r.installations, r.earlier_geoms,
                                  r.earlier_fids)
        gpkg.layer("totals", None, outputs.totals_columns(
            "class", list(r.per_class.values()) + [r.total]))
        gpkg.commit()
        outputs.write_csv(paths["csv"], r.installations)
        paths["html"].write_text(html_report(r), encoding="utf-8")
    except OSError as exc:
        raise JobError(f"the output folder cannot be written: {exc}", E_INVALID_INPUT,
                       field="out_dir") from None
    return {k: str(p) for k, p in paths.items()}


def _figures(t: Totals) -> Dict[str, Any]:
    return {"installations": t.installations, "area_m2": round(t.area_m2, 3),
            "module_m2": round(t.module_m2, 3), "modules": t.modules,
            "kwp": round(t.kwp, 3)}


def summary(r: InventoryResult, paths: Dict[str, str]) -> Dict[str, Any]:
    """The ``stats`` of the job's ``result`` (JSON-safe)."""
    stats: Dict[str, Any] = {
        "outputs": paths, "totals": _figures(r.total),
        "per_class": {k: _figures(t) for k, t in r.per_class.items()},
        "crs": r.crs.to_string(), "crs_note": r.crs_note, "warnings": list(r.warnings),
        "models": [{"model": m, "model_version": v, "installations": n}
                   for (m, v), n in r.models.items()],
        "assumptions": r.params.assumptions.to_wire()}
    for places in (r.buildings, r.zones):
        if places is not None:
            stats[places.role] = {"count": len(places.totals),
                                  "with_installations": sum(
                                      1 for t in places.totals.values() if t.installations),
                                  "outside": len(places.outside)}
    if r.changes is not None:
        stats["change"] = {s: c["installations"] for s, c in counts(r.changes).items()}
    return stats


def run_inventory(request: Union[InventoryParams, Mapping[str, Any]], arrays: List[Any],
                  progress: Optional[Progress] = None,
                  cancelled: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
    """The daemon's ``inventory`` job: :func:`build_inventory`, then
    :func:`write_outputs`.

    Returns:
        ``{"crs": WKT of the working CRS, "features": [], "stats": summary}``.

    Raises:
        As :func:`build_inventory` and :func:`write_outputs`.
    """
    r = build_inventory(request, progress, cancelled)
    paths = write_outputs(r)
    if progress is not None:
        progress(1.0, "done")
    return {"crs": r.crs.to_wkt(), "features": [], "stats": summary(r, paths)}


__all__ = ["OUTPUT_FILES", "InventoryResult", "build_inventory", "output_paths",
           "write_outputs", "summary", "run_inventory"]
