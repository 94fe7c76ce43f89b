""":class:`DetectTask`: one detection off the UI thread, its result layer on it.

The task connects to the daemon (starting it when needed), picks the model card,
renders pixels for a :class:`~.plan.RenderPlan` at the card's ``gsd_m``, runs the
detection with progress and cancellation, and writes the GeoPackage, all in the
worker thread; ``finished()`` (UI thread) loads the result layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import QgsTask

from protocol.errors import DaemonUnavailable
from protocol.params import DetectParams

from ..engine import START_BY_HAND, daemon_notes, describe_error, pick_card
from ..layers import (load_result_layer, next_result_run, result_layer_name, safe_name,
                      write_result_gpkg)
from ..settings import DaemonSettings
from ..tasks import progress_callback, run_reporting, task_client
from .plan import DetectPlan
from .render import pixel_source, render_pixels


class DetectTask(QgsTask):
    """Runs one detection off the UI thread and loads its result on the UI thread.

    Args:
        plan: from :func:`~.plan.prepare_detect`.
        settings: how to reach/start the daemon.
        out_path: the GeoPackage to write (see ``layers.default_result_path``).
        model_id: the model card id, or None for the daemon's default model.
        options: further :class:`~protocol.params.DetectParams` fields (``threshold``,
            ``min_area_m2``, ``simplify_m``...); a field left out or None is the model
            card's value, chosen by the daemon.
        job_timeout_s: give up on a job after this many seconds without news.
        on_done: called on the UI thread with this task after ``finished``.
        add_to_project: add the result layer to the project in ``finished``.
        timeout_s: per-request timeout of the daemon client (ping, models, accept), s.

    After ``finished``: ``layer`` (the result layer or None), ``error`` (a message or
    None), ``cancelled`` (bool), ``result`` (the daemon's dict), ``card`` (model card),
    ``cards`` (all the daemon offers), ``notes`` (warnings for the user: a capped render
    size, the daemon's ``stats["warnings"]`` such as a resampled GSD), ``n_features``,
    ``table`` (the GeoPackage table), ``daemon_process`` (the ``Popen`` of a daemon this
    task started, else None).
    """

    #: A progress message for the dock (worker thread -> UI thread).
    message = pyqtSignal(str)

    def __init__(self, plan: DetectPlan, settings: DaemonSettings, out_path: str,
                 model_id: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                 job_timeout_s: float = 600.0,
                 on_done: Optional[Callable[["DetectTask"], None]] = None,
                 add_to_project: bool = True, timeout_s: float = 5.0):
        super().__init__(f"Ortholens: detect in {plan.layer_name}", QgsTask.CanCancel)
        self.plan = plan
        self.settings = settings
        self.out_path = out_path
        self.model_id = model_id
        self.options = dict(options or {})
        self.job_timeout_s = job_timeout_s
        self.on_done = on_done
        self.add_to_project = add_to_project
        self.timeout_s = timeout_s
        self.layer = None
        self.error: Optional[str] = None
        self.cancelled = False
        self.result: Optional[Dict[str, Any]] = None
        self.card: Optional[Dict[str, Any]] = None
        self.cards: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.n_features = 0
        self.table = "detections"
        self.daemon_process = None
        #: no daemon answered (the user may need the settings to point to one).
        self.unreachable = False

    # worker thread -------------------------------------------------------------
    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Do the work; never raises (QGIS would crash), errors go to ``self.error``.

        Returns False only when cancelled: an error is reported by the plugin in its
        own words, and QGIS's generic "Task failed" notice would push it out of sight.
        """
        ok = run_reporting(self, self._run)
        return ok or self.error is not None

    def _run(self) -> bool:
        self.setProgress(1)
        self.message.emit("Connecting to the daemon…")
        try:
            with task_client(self) as client:
                return self._detect(client)
        except DaemonUnavailable:
            self.unreachable = not self.cards  # never connected
            raise

    def _detect(self, client) -> bool:
        self.cards = list(client.models())
        self.card = pick_card(self.cards, self.model_id)
        model_id = str(self.card["id"])
        if self.isCanceled():
            raise InterruptedError
        self.setProgress(5)
        pixels = None
        if self.plan.render is not None:
            self.message.emit("Rendering the layer…")
            rendered = render_pixels(self.plan.render, float(self.card["gsd_m"]),
                                     is_cancelled=self.isCanceled)
            if rendered.capped:
                self.notes.append(
                    f"The map view is too large to send at the model's "
                    f"{self.card['gsd_m']:g} m/pixel; it was rendered at "
                    f"{rendered.gsd_m:.2f} m/pixel ({rendered.width} x {rendered.height} "
                    "pixels), which lowers detection quality. Zoom in for best results.")
            params = DetectParams(pixel_source(self.plan.render, rendered), model_id,
                                  **self.options)
            pixels = rendered.array
        else:
            params = DetectParams(self.plan.source, model_id, extent=self.plan.extent,
                                  extent_crs=self.plan.extent_crs, **self.options)
        self.setProgress(10)
        self.message.emit(f"Detecting with {model_id}…")
        try:
            self.result = client.detect(
                params, pixels=pixels, is_cancelled=self.isCanceled,
                on_progress=progress_callback(self, 10, 85, self._show_message),
                job_timeout_s=self.job_timeout_s)
        except DaemonUnavailable as exc:
            # the daemon died (or hangs) mid-job: say so, and what happens next
            again = ("run Detect in extent again: the daemon is restarted automatically"
                     if self.settings.can_start() else
                     f"start the daemon again ({START_BY_HAND}), then run Detect in "
                     "extent again")
            raise DaemonUnavailable(f"The Ortholens daemon stopped during the detection "
                                    f"({exc}). Nothing was saved; {again}.") from None
        if self.isCanceled():
            raise InterruptedError
        self.notes.extend(daemon_notes(self.result))
        self.setProgress(96)
        self.message.emit("Writing the GeoPackage…")
        self.table = safe_name(f"{model_id}_{self.plan.layer_name}", 60)
        self.n_features = write_result_gpkg(self.result, self.out_path, self.table)
        self.setProgress(100)
        return True

    def _show_message(self, message: Any) -> None:
        if message:
            self.message.emit(str(message))

    # UI thread -----------------------------------------------------------------
    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Load the result layer (UI thread), then call ``on_done``."""
        if self.isCanceled():
            self.cancelled = True
        if ok and not self.cancelled and self.error is None:
            try:
                classes = list((self.card or {}).get("classes") or [])
                run = next_result_run()
                name = result_layer_name(str(self.card.get("id", "ortholens")),
                                         self.card.get("version"), self.plan.layer_name, run)
                self.layer = load_result_layer(self.out_path, self.table, classes,
                                               display_name=name, run=run,
                                               add_to_project=self.add_to_project)
                record_run(self.layer, self.card or {}, (self.result or {}).get("stats") or {})
            except Exception as exc:  # noqa: BLE001 - reported to the user
                self.error = describe_error(exc)
        elif not self.cancelled and not self.error:
            self.error = "The detection stopped without a result (see the Ortholens log)."
        if self.on_done is not None:
            self.on_done(self)

    def summary(self, full_path: bool = True) -> str:
        """A one-line success message: count, total area (m²), seconds, the model and
        the values it ran with, and the file (full path, or the file name only when
        ``full_path`` is False)."""
        stats = (self.result or {}).get("stats") or {}
        area = sum(float(f.get("area_m2", 0.0)) for f in (self.result or {}).get("features", []))
        secs = stats.get("seconds") or stats.get("elapsed_s")
        t = f" in {float(secs):.1f} s" if isinstance(secs, (int, float)) else ""
        noun = "object" if self.n_features == 1 else "objects"
        where = self.out_path if full_path else Path(self.out_path).name
        return (f"{self.n_features} {noun} detected ({area:.1f} m²){t} with "
                f"{run_description(self.card or {}, stats)}; saved to {where}")


def run_description(card: Dict[str, Any], stats: Dict[str, Any]) -> str:
    """``"pv-unet-efl0 v2.0.0, threshold 0.5, minimum area 2 m²"``: the model and the
    values a detection ran with (the daemon's ``stats``, else the card's).

    Args:
        card: the model card that ran.
        stats: the result's ``stats`` (``threshold`` 0..1, ``min_area_m2`` m²).
    """
    thr = stats.get("threshold", card.get("threshold"))
    area = stats.get("min_area_m2", card.get("min_area_m2"))
    parts = [f"{card.get('id', '?')} v{card.get('version', '?')}"]
    if isinstance(thr, (int, float)):
        parts.append(f"threshold {thr:g}")
    if isinstance(area, (int, float)):
        parts.append(f"minimum area {area:g} m²")
    return ", ".join(parts)


def record_run(layer, card: Dict[str, Any], stats: Dict[str, Any]) -> None:
    """Write what produced a result layer into the layer: custom properties
    ``ortholens/model``, ``ortholens/model_version``, ``ortholens/threshold``,
    ``ortholens/min_area_m2``, and the layer metadata's abstract (Layer Properties >
    Metadata), which reads :func:`run_description`.

    Args:
        layer: the result ``QgsVectorLayer``.
        card: the model card that ran.
        stats: the result's ``stats``.
    """
    thr = stats.get("threshold", card.get("threshold"))
    area = stats.get("min_area_m2", card.get("min_area_m2"))
    layer.setCustomProperty("ortholens/model", str(card.get("id", "")))
    layer.setCustomProperty("ortholens/model_version", str(card.get("version", "")))
    if isinstance(thr, (int, float)):
        layer.setCustomProperty("ortholens/threshold", float(thr))
    if isinstance(area, (int, float)):
        layer.setCustomProperty("ortholens/min_area_m2", float(area))
    md = layer.metadata()
    md.setAbstract(f"Detected by Ortholens with {run_description(card, stats)}.")
    layer.setMetadata(md)


__all__ = ["DetectTask", "run_description", "record_run"]
