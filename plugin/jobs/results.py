"""A batch job's GeoPackage as a result layer: styled by class like the dock's results
and named like them (``"#4 thr 0.5 · pv01_block · pv-unet-efl0 v2.0.0 · batch 14:05"``),
with what produced it in its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import QgsProject, QgsVectorLayer

from ..detect.task import ran_with, record_run
from ..layers.load import load_result_layer
from ..layers.naming import next_result_run, result_layer_name


def batch_name(card: Dict[str, Any], stats: Dict[str, Any], source_name: str,
               run: int) -> str:
    """The Layers panel name of a batch job's result (:func:`~..layers.naming.
    result_layer_name` with ``batch``), the threshold from ``stats``, else the card's."""
    thr, _ = ran_with(card, stats)
    return result_layer_name(str(card.get("id", "ortholens")), card.get("version"),
                             source_name, run, threshold=thr, batch=True)


def job_card(job: Dict[str, Any], cards: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The card of the model a job ran (from the engine's ``models``), or a stand-in
    with its id only (no classes: the layer then gets the fallback colour)."""
    return next((c for c in cards if c.get("id") == job.get("model")),
                {"id": job.get("model") or "ortholens"})


def open_batch_result(job: Dict[str, Any], cards: List[Dict[str, Any]],
                      project: Optional[QgsProject] = None) -> QgsVectorLayer:
    """Add a job's GeoPackage (``out_path``, table ``layer``) on top of the layer tree,
    styled and named as a result (UI thread).

    Args:
        job: an entry of the ``jobs`` reply.
        cards: the engine's model cards.
        project: default ``QgsProject.instance()``.

    Raises:
        ResultLayerError: the GeoPackage cannot be opened.
    """
    project = project or QgsProject.instance()
    card = job_card(job, cards)
    stats = {"threshold": job["threshold"]} if job.get("threshold") is not None else {}
    run = next_result_run(project)
    layer = load_result_layer(str(job["out_path"]), str(job.get("layer") or "detections"),
                              list(card.get("classes") or []),
                              display_name=batch_name(card, stats,
                                                      Path(str(job.get("source"))).stem, run),
                              run=run, project=project)
    record_run(layer, card, stats)
    return layer


__all__ = ["batch_name", "job_card", "open_batch_result"]
