""":class:`DetectTask`: one detection off the UI thread, its result layer on it.

The task connects to the daemon (starting it when needed), picks the model card, runs
the detection with progress and cancellation, and writes the GeoPackage, all in the
worker thread; ``finished()`` (UI thread) loads the result layer.

How the raster reaches the engine: a file layer goes by path when the engine runs on
this computer. When it runs on another one (:meth:`~..settings.DaemonSettings.is_remote`),
or answers that it may not or cannot read the file (``forbidden`` / ``not_found`` about
the ``source``: outside its ``ORTHOLENS_ROOTS``, or a file system of its own), and for
layers that are not files, the plugin renders the extent at the card's ``gsd_m`` and
streams it window by window (``OrtholensClient.upload``): a large extent is never held
whole in memory.

Which model runs: the dock's. Unless the dock shows a version taught on one area, the
request asks for ``by_area``: where a version of the model's lineage was retrained on
this area and covers the extent, the daemon runs that version instead, and the result
says so (``stats["model"]``, ``stats["model_choice"]``); the task then takes that
version's card for the layer and the message.
"""

from __future__ import annotations

import json

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import QgsTask

from protocol.errors import DaemonError, DaemonUnavailable
from protocol.params import DetectParams

from ..cards import pick_card
from ..connection import START_BY_HAND, daemon_notes, describe_error, source_unreadable
from ..layers.editing import DRAWN_NOTE
from ..layers.gpkg import write_result_gpkg
from ..layers.load import load_result_layer
from ..layers.naming import next_result_run, result_layer_name, safe_name
from ..settings import DaemonSettings
from ..tasks import progress_callback, run_reporting, task_client
from ..timeleft import TimeLeft
from .plan import DetectPlan
from .render import render_grid, render_window, upload_spec
from .repeat import RUN_KEY


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
        run_key: the request's :func:`~.repeat.run_key`, stored on the result layer.

    After ``finished``: ``layer`` (the result layer or None), ``error`` (a message or
    None), ``cancelled`` (bool), ``result`` (the daemon's dict), ``card`` (model card),
    ``cards`` (all the daemon offers), ``notes`` (warnings for the user: a capped render
    size, the daemon's ``stats["warnings"]`` such as a resampled GSD), ``n_features``,
    ``table`` (the GeoPackage table), ``daemon_process`` (the ``Popen`` of a daemon this
    task started, else None), ``transfer`` (``"file"``: the engine read the file;
    ``"pixels"``: the plugin sent the pixels), ``file_refused`` (the engine's answer
    when it could not read the file and the pixels were sent instead, else None).
    """

    #: A progress message for the dock (worker thread -> UI thread).
    message = pyqtSignal(str)

    def __init__(self, plan: DetectPlan, settings: DaemonSettings, out_path: str,
                 model_id: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                 job_timeout_s: float = 600.0,
                 on_done: Optional[Callable[["DetectTask"], None]] = None,
                 add_to_project: bool = True, timeout_s: float = 5.0, run_key: str = ""):
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
        self.run_key = run_key
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
        #: no daemon answered, or it refused the token (the fix is in the settings).
        self.unreachable = False
        self.transfer: Optional[str] = None
        self.file_refused: Optional[str] = None
        #: side of the windows the pixels are streamed in, pixels; None: the engine's
        #: default (``protocol.framing.DEFAULT_WINDOW_PX``).
        self.window_px: Optional[int] = None
        #: elapsed time and time left, added to the progress messages
        self.time_left = TimeLeft()

    # worker thread -------------------------------------------------------------
    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Do the work; never raises (QGIS would crash), errors go to ``self.error``.

        Returns False only when cancelled: an error is reported by the plugin in its
        own words, and QGIS's generic "Task failed" notice would push it out of sight.
        """
        ok = run_reporting(self, self._run,
                           lambda exc: describe_error(exc, settings=self.settings))
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
        except DaemonError as exc:
            self.unreachable = exc.field == "token"
            raise

    def _detect(self, client) -> bool:
        self.cards = list(client.models())
        self.card = pick_card(self.cards, self.model_id)
        model_id = str(self.card["id"])
        # a version taught on one area runs as chosen; any other model lets the daemon
        # pick the version of its lineage taught on this area
        self.options.setdefault("by_area", not is_area_version(self.card))
        if self.isCanceled():
            raise InterruptedError
        self.setProgress(5)
        gsd = float(self.card["gsd_m"])
        if self.plan.source is not None and not self.settings.is_remote():
            options = dict(self.options)
            options.setdefault("bands", self.plan.bands)  # as the layer shows R, G, B
            params = DetectParams(self.plan.source, model_id, extent=self.plan.extent,
                                  extent_crs=self.plan.extent_crs, **options)
            try:
                self.result = self._run_job(client, params, start=10)
                self.transfer = "file"
            except DaemonError as exc:
                if not source_unreadable(exc):
                    raise
                self.file_refused = str(exc)
                self.message.emit(f"The engine cannot read the file ({exc}); sending its "
                                  "pixels…")
                self.result = self._detect_pixels(client, model_id, gsd)
        else:  # a layer that is no file, or an engine on another computer
            self.result = self._detect_pixels(client, model_id, gsd)
        if self.isCanceled():
            raise InterruptedError
        used = ((self.result or {}).get("stats") or {}).get("model")
        if used and used != model_id:  # a version taught on this area ran
            self.card = next((c for c in self.cards if c.get("id") == used),
                             dict(self.card, id=used, version=(self.result.get("stats") or
                                                              {}).get("model_version")))
            model_id = str(used)
        self.notes.extend(daemon_notes(self.result))
        self.setProgress(96)
        self.message.emit("Writing the GeoPackage…")
        self.table = safe_name(f"{model_id}_{self.plan.layer_name}", 60)
        written = write_result_gpkg(self.result, self.out_path, self.table)
        self.n_features = written - len(self.result.get("candidates") or [])
        self.setProgress(100)
        return True

    def _detect_pixels(self, client, model_id: str, gsd_m: float) -> Dict[str, Any]:
        """Render the extent at ``gsd_m`` window by window, stream it to the engine
        (progress 5-25 %), then detect in it (25-95 %); returns the ``result``.

        Raises:
            InputError: a file layer that cannot be rendered.
            DaemonError, DaemonUnavailable, JobCancelled, InterruptedError: as
                :meth:`_run_job` and ``OrtholensClient.upload``.
        """
        plan = self.plan.pixels_plan()
        grid = render_grid(plan, gsd_m)
        if grid.capped:
            self.notes.append(
                f"The map view is too large to send at the model's {gsd_m:g} m/pixel; it "
                f"was rendered at {grid.pixel_size:.2f} m/pixel ({grid.width} x "
                f"{grid.height} pixels), which lowers detection quality. Zoom in for best "
                "results.")
        self.message.emit(f"Sending the pixels ({grid.width} x {grid.height})…")
        spec = dataclasses.replace(upload_spec(plan, grid), window_px=self.window_px)
        source = client.upload(
            spec, lambda window: render_window(plan, grid, window, self.isCanceled),
            on_progress=progress_callback(self, 5, 20, self._show_message, self.time_left),
            is_cancelled=self.isCanceled)
        self.transfer = "pixels"
        params = DetectParams(source, model_id, **self.options)
        return self._run_job(client, params, start=25)

    def _run_job(self, client, params: DetectParams, start: float) -> Dict[str, Any]:
        """Run the detection ``params`` (progress ``start``-95 %); returns its result.

        Raises:
            DaemonUnavailable: the daemon died or hangs mid-job (the message says what
                to do next).
            DaemonError, JobCancelled: as ``OrtholensClient.detect``.
        """
        self.setProgress(start)
        self.message.emit(f"Detecting with {params.model}…")
        try:
            return client.detect(
                params, is_cancelled=self.isCanceled,
                on_progress=progress_callback(self, start, 95 - start, self._show_message,
                                              self.time_left),
                job_timeout_s=self.job_timeout_s)
        except DaemonUnavailable as exc:
            # the daemon died (or hangs) mid-job: say so, and what happens next
            again = ("run Detect in extent again: the daemon is restarted automatically"
                     if self.settings.can_start() and not self.settings.is_remote() else
                     f"start the daemon again ({START_BY_HAND}), then run Detect in "
                     "extent again")
            raise DaemonUnavailable(f"The Ortholens daemon stopped during the detection "
                                    f"({exc}). Nothing was saved; {again}.") from None

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
                thr, _ = ran_with(self.card or {}, (self.result or {}).get("stats") or {})
                name = result_layer_name(str(self.card.get("id", "ortholens")),
                                         self.card.get("version"), self.plan.layer_name, run,
                                         threshold=thr)
                self.layer = load_result_layer(self.out_path, self.table, classes,
                                               display_name=name, run=run,
                                               add_to_project=self.add_to_project)
                record_run(self.layer, self.card or {}, (self.result or {}).get("stats") or {})
                if self.run_key:
                    self.layer.setCustomProperty(RUN_KEY, self.run_key)
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


def is_area_version(card: Optional[Dict[str, Any]]) -> bool:
    """True for a card of a version retrained for one area (its ``lineage`` has a
    ``scope``)."""
    return bool(((card or {}).get("lineage") or {}).get("scope"))


def ran_with(card: Dict[str, Any], stats: Dict[str, Any]) -> Tuple[Any, Any]:
    """``(threshold, min_area_m2)`` a detection ran with: the daemon's ``stats``, else
    the card's (either may be None when neither says)."""
    return (stats.get("threshold", card.get("threshold")),
            stats.get("min_area_m2", card.get("min_area_m2")))


def run_description(card: Dict[str, Any], stats: Dict[str, Any]) -> str:
    """``"pv-unet-efl0 v2.0.0 (INT8), threshold 0.5, minimum area 2 m²"``: the model
    (and its INT8 graph, where that ran) and the values a detection ran with
    (:func:`ran_with`).

    Args:
        card: the model card that ran.
        stats: the result's ``stats`` (``threshold`` 0..1, ``min_area_m2`` m²,
            ``precision``).
    """
    thr, area = ran_with(card, stats)
    parts = [f"{card.get('id', '?')} v{card.get('version', '?')}"]
    if is_area_version(card) and stats.get("model") == card.get("id"):
        parts[0] += " (taught on this area)"
    if stats.get("precision") == "int8":
        parts[0] += " (INT8)"
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
    thr, area = ran_with(card, stats)
    layer.setCustomProperty("ortholens/model", str(card.get("id", "")))
    layer.setCustomProperty("ortholens/model_version", str(card.get("version", "")))
    if isinstance(thr, (int, float)):
        layer.setCustomProperty("ortholens/threshold", float(thr))
    if isinstance(area, (int, float)):
        layer.setCustomProperty("ortholens/min_area_m2", float(area))
    stretch = stats.get("stretch") or {}
    how = ""
    if stretch.get("ranges"):
        ranges = ", ".join(f"{a:g}-{b:g}" for a, b in stretch["ranges"])
        how = (f" Bands {stats.get('bands')} ({stretch.get('dtype')}) stretched to 8 bits "
               f"({stretch.get('mode')}: {ranges}).")
        layer.setCustomProperty("ortholens/stretch", json.dumps(stretch))
    md = layer.metadata()
    md.setAbstract(f"Detected by Ortholens with {run_description(card, stats)}.{how} "
                   f"{DRAWN_NOTE}")
    layer.setMetadata(md)


__all__ = ["DetectTask", "ran_with", "run_description", "record_run", "is_area_version"]
