"""Retrain on the user's corrections, and the model versions, from QGIS.

The flow:

1. every detection remembers, on its result layer (custom layer properties, saved with
   the project), the raster it searched, the extent it covered and the model it used
   (:func:`remember_detection`);
2. the user edits that layer: deletes false detections, draws missed panels, reshapes
   or re-classes polygons;
3. **Retrain on corrections…** (dock button, Raster menu, or the layer's context menu)
   checks the layer (:func:`prepare_retrain`, UI thread) and opens the
   :class:`RetrainDialog`: the time budget (minutes), what will be used (number of
   corrected features per class, reviewed area), invalid-geometry handling, and
   whether to use the new version next;
4. a :class:`RetrainTask` (``QgsTask``, progress bar and Cancel in the dock) sends the
   features (WKT + the layer CRS) and the reviewed extent to the daemon's ``retrain``
   job; when it ends the before/after metrics are shown (:class:`RetrainResultDialog`,
   the dock and the message bar) and, when a new version was accepted, the dock selects
   it for the next detection;
5. the dock's **Make active** / **Roll back** buttons switch versions through the
   daemon (:class:`VersionsTask`).

Inside the reviewed area the corrected layer is the truth: what no polygon covers is
background (so deleting every polygon teaches "nothing here").

Nothing here imports torch or ``backend``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAction,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
)
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsMapLayer,
    QgsMessageLog,
    QgsProject,
    QgsRectangle,
    QgsTask,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .settings import DaemonSettings, daemon_settings
from .tasks import (
    LOG_TAG,
    ValidationError,
    connect_daemon,
    describe_error,
    job_fraction,
    pixel_source,
    prepare_detect,
    render_pixels,
    run_reporting,
)

PROP = "ortholens/"
#: Custom layer properties written by :func:`remember_detection`.
PROPS = ("model", "raster_layer_id", "source", "reviewed", "render_crs", "render_extent")
RETRAIN_ACTION = "OrtholensRetrainAction"


# ---------------------------------------------------------------------------- layers

def remember_detection(layer: QgsMapLayer, plan: Any, model_id: str) -> None:
    """Store on a result layer what the detection searched (UI thread).

    Args:
        layer: the result layer.
        plan: the ``DetectPlan`` of the detection.
        model_id: the model it used.
    """
    layer.setCustomProperty(PROP + "model", str(model_id))
    layer.setCustomProperty(PROP + "raster_layer_id", str(plan.layer_id))
    if plan.source is not None:
        layer.setCustomProperty(PROP + "source", json.dumps(plan.source))
        reviewed = [{"extent": [float(v) for v in plan.extent] if plan.extent else None,
                     "extent_crs": plan.extent_crs}]
    else:  # rendered pixels: the extent in the render CRS
        r = plan.render
        ext = [r.extent.xMinimum(), r.extent.yMinimum(), r.extent.xMaximum(),
               r.extent.yMaximum()]
        layer.setCustomProperty(PROP + "source", "")
        layer.setCustomProperty(PROP + "render_crs", r.crs_wkt)
        layer.setCustomProperty(PROP + "render_extent", json.dumps(ext))
        reviewed = [{"extent": ext, "extent_crs": r.crs_wkt}]
    layer.setCustomProperty(PROP + "reviewed", json.dumps(reviewed))


def is_result_layer(layer: Optional[QgsMapLayer]) -> bool:
    """True for a vector layer written by a detection (see :func:`remember_detection`)."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and bool(layer.customProperty(PROP + "model", "")))


def _crs(text: str) -> QgsCoordinateReferenceSystem:
    crs = QgsCoordinateReferenceSystem.fromWkt(text or "")
    if not crs.isValid():
        crs = QgsCoordinateReferenceSystem(text or "")
    return crs


@dataclass
class RetrainPlan:
    """What a retrain will send (built on the UI thread by :func:`prepare_retrain`).

    Attributes:
        layer_id, layer_name: the corrected result layer.
        model: the model (version) to fine-tune.
        source: the raster ``source`` (file) or None when pixels must be rendered.
        render: a ``RenderPlan`` for non-file rasters, else None.
        crs: the layer CRS (WKT): the CRS of ``features``.
        features: ``[{"wkt", "class"}]``: every polygon of the layer.
        reviewed: ``[{"extent", "extent_crs"}]``.
        by_class: feature count per class name.
        reviewed_m2: surface of the reviewed area(s), m².
        invalid: number of features with an invalid geometry.
        notes: remarks for the user (classes filled in, ...).
    """

    layer_id: str
    layer_name: str
    model: str
    source: Optional[Dict[str, Any]]
    render: Any
    crs: str
    features: List[Dict[str, Any]]
    reviewed: List[Dict[str, Any]]
    by_class: Dict[str, int] = field(default_factory=dict)
    reviewed_m2: float = 0.0
    invalid: int = 0
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph: features per class and reviewed area."""
        n = len(self.features)
        classes = ", ".join(f"{v} {k}" for k, v in sorted(self.by_class.items())) or "none"
        area = (f"{self.reviewed_m2 / 1e6:.3f} km²" if self.reviewed_m2 >= 1e5
                else f"{self.reviewed_m2:,.0f} m²")
        inv = f"; {self.invalid} with an invalid geometry" if self.invalid else ""
        return (f"{n} corrected feature{'s' if n != 1 else ''} ({classes}){inv} in "
                f"{len(self.reviewed)} reviewed area{'s' if len(self.reviewed) != 1 else ''}"
                f" of {area}. Inside the reviewed area, whatever no polygon covers counts "
                f"as background; a quarter of it is kept apart to check the new version.")


def _extent_area_m2(ext: List[float], ext_crs: str, layer_crs: QgsCoordinateReferenceSystem,
                    project: QgsProject) -> float:
    rect = QgsRectangle(*ext)
    src = _crs(ext_crs) if ext_crs else layer_crs
    if src.isValid() and layer_crs.isValid() and src != layer_crs:
        try:
            rect = QgsCoordinateTransform(src, layer_crs, project).transformBoundingBox(rect)
        except QgsCsException:
            pass
    return rect.width() * rect.height()


def prepare_retrain(layer: Optional[QgsMapLayer], classes: Optional[List[Dict[str, Any]]] = None,
                    model: Optional[str] = None, project: Optional[QgsProject] = None,
                    view_extent: Optional[QgsRectangle] = None,
                    view_crs: Optional[QgsCoordinateReferenceSystem] = None) -> RetrainPlan:
    """Check a corrected result layer and collect what a retrain sends (UI thread).

    Args:
        layer: the corrected result layer.
        classes: the model card's classes (to fill a missing ``class`` when the model
            has a single class, and to check names).
        model: the model to fine-tune (default: the one the layer was detected with).
        project: default ``QgsProject.instance()``.
        view_extent, view_crs: when given, only the part of the detection extent inside
            this map view counts as reviewed.

    Raises:
        ValidationError: not a result layer, a raster that is gone, features without a
            class in a multi-class model, an unknown class name, no reviewed area.
    """
    project = project or QgsProject.instance()
    if layer is None:
        raise ValidationError("Select the corrected Ortholens result layer first.")
    if not is_result_layer(layer):
        raise ValidationError(
            f"'{layer.name()}' is not an Ortholens result layer of this project: retrain "
            "from a layer made by 'Detect in extent' (its detection extent and raster are "
            "remembered there).")
    if QgsWkbTypes.geometryType(layer.wkbType()) != QgsWkbTypes.PolygonGeometry:
        raise ValidationError(f"'{layer.name()}' is not a polygon layer.")
    model = model or str(layer.customProperty(PROP + "model"))
    names = [str(c.get("name")) for c in (classes or []) if c.get("name")]
    source_txt = str(layer.customProperty(PROP + "source", "") or "")
    source = json.loads(source_txt) if source_txt else None
    render = None
    if source is None:
        raster = project.mapLayer(str(layer.customProperty(PROP + "raster_layer_id", "")))
        if raster is None:
            raise ValidationError(
                "The raster this layer was detected in is no longer in the project; add "
                "it again (it was rendered by QGIS, so the daemon needs QGIS to read it).")
        r_crs = _crs(str(layer.customProperty(PROP + "render_crs", "")))
        r_ext = QgsRectangle(*json.loads(str(layer.customProperty(PROP + "render_extent"))))
        render = prepare_detect(raster, r_ext, r_crs, project.transformContext(),
                                force_pixels=True).render
    try:
        reviewed = json.loads(str(layer.customProperty(PROP + "reviewed", "[]")))
    except ValueError:
        reviewed = []
    if view_extent is not None and view_crs is not None:
        reviewed = _clip_reviewed(reviewed, view_extent, view_crs, project)
    if not reviewed:
        raise ValidationError("No reviewed area: the map view does not overlap the "
                              "detection extent of this layer.")
    feats, by_class, invalid, missing, unknown = [], {}, 0, 0, set()
    ci = layer.fields().indexOf("class")
    for f in layer.getFeatures():
        g = f.geometry()
        if g is None or g.isNull() or g.isEmpty():
            continue
        name = f.attribute(ci) if ci >= 0 else None
        name = None if name is None or str(name) in ("", "NULL") else str(name)
        if name is None:
            if len(names) == 1:
                name = names[0]
                missing += 1
            else:
                raise ValidationError(
                    f"Feature {f.id()} has no 'class'; set it to one of "
                    f"{', '.join(names) or 'the model classes'} before retraining.")
        if names and name not in names:
            unknown.add(name)
        if not g.isGeosValid():
            invalid += 1
        feats.append({"wkt": g.asWkt(3), "class": name})
        by_class[name] = by_class.get(name, 0) + 1
    if unknown:
        raise ValidationError(f"Unknown class(es) {', '.join(sorted(unknown))}: the model "
                              f"knows {', '.join(names)}. Fix the 'class' attribute.")
    plan = RetrainPlan(layer_id=layer.id(), layer_name=layer.name(), model=model,
                       source=source, render=render, crs=layer.crs().toWkt(),
                       features=feats, reviewed=reviewed, by_class=by_class,
                       invalid=invalid)
    plan.reviewed_m2 = sum(_extent_area_m2(r["extent"], r.get("extent_crs"), layer.crs(),
                                           project) for r in reviewed if r.get("extent"))
    if missing:
        plan.notes.append(f"{missing} feature(s) without a class count as "
                          f"'{names[0]}'.")
    return plan


def _clip_reviewed(reviewed: List[Dict[str, Any]], view: QgsRectangle,
                   view_crs: QgsCoordinateReferenceSystem, project: QgsProject
                   ) -> List[Dict[str, Any]]:
    out = []
    for r in reviewed:
        if not r.get("extent"):
            continue
        r_crs = _crs(r.get("extent_crs") or "")
        v = QgsRectangle(view)
        if r_crs.isValid() and r_crs != view_crs:
            try:
                v = QgsCoordinateTransform(view_crs, r_crs, project).transformBoundingBox(v)
            except QgsCsException:
                continue
        inter = QgsRectangle(*r["extent"]).intersect(v)
        if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
            continue
        out.append(dict(r, extent=[inter.xMinimum(), inter.yMinimum(), inter.xMaximum(),
                                   inter.yMaximum()]))
    return out


# ---------------------------------------------------------------------------- dialogs

class RetrainDialog(QDialog):
    """Budget and options of a retrain, with what will be used.

    After ``exec_()`` / ``accept()``: :meth:`budget_s`, :meth:`options`,
    :meth:`use_view_only`.
    """

    def __init__(self, plan: RetrainPlan, parent=None, has_view_option: bool = True):
        super().__init__(parent)
        self.setObjectName("OrtholensRetrainDialog")
        self.setWindowTitle("Ortholens: retrain on corrections")
        self.plan = plan
        lay = QVBoxLayout(self)
        head = QLabel(f"Fine-tune <b>{plan.model}</b> from its current weights on the "
                      f"corrections in <b>{plan.layer_name}</b>.", self)
        head.setWordWrap(True)
        lay.addWidget(head)
        self.summary_label = QLabel(plan.summary() + ("<br>" + " ".join(plan.notes)
                                                      if plan.notes else ""), self)
        self.summary_label.setObjectName("ortholensRetrainSummary")
        self.summary_label.setWordWrap(True)
        lay.addWidget(self.summary_label)
        form = QFormLayout()
        self.budget_spin = QSpinBox(self)
        self.budget_spin.setObjectName("ortholensRetrainBudget")
        self.budget_spin.setRange(1, 120)
        self.budget_spin.setValue(2)
        self.budget_spin.setSuffix(" min")
        self.budget_spin.setToolTip("Training time; reading the corrections and checking "
                                    "the result come on top (about a minute on a CPU)")
        form.addRow("Training budget", self.budget_spin)
        self.area_combo = QComboBox(self)
        self.area_combo.addItem("the whole detection extent", False)
        if has_view_option:
            self.area_combo.addItem("only its part in the current map view", True)
        form.addRow("Reviewed area", self.area_combo)
        self.invalid_combo = QComboBox(self)
        self.invalid_combo.addItem("repair them (make valid) and warn", "repair")
        self.invalid_combo.addItem("refuse the retrain", "refuse")
        form.addRow("Invalid geometries", self.invalid_combo)
        self.activate_check = QCheckBox("Use the new version for the next detection", self)
        self.activate_check.setChecked(True)
        form.addRow("", self.activate_check)
        lay.addLayout(form)
        rule = QLabel("A new version is kept only if it does not get worse on the part "
                      "of your corrections it was not trained on, nor on reference "
                      "validation tiles it never trained on, and has learned from your "
                      "corrections; otherwise you are told why.", self)
        rule.setWordWrap(True)
        lay.addWidget(rule)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttons.button(QDialogButtonBox.Ok).setText("Retrain")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def budget_s(self) -> float:
        return float(self.budget_spin.value() * 60)

    def use_view_only(self) -> bool:
        return bool(self.area_combo.currentData())

    def options(self) -> Dict[str, Any]:
        return {"invalid_geometry": self.invalid_combo.currentData(),
                "activate": self.activate_check.isChecked()}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report_html(report: Dict[str, Any]) -> str:
    """Before/after metrics of a retrain report as an HTML table."""
    b, a = report.get("before") or {}, report.get("after") or {}
    rows = []
    parts = (("user_holdout", "your held-out corrections"),
             ("user_train", "your corrections it trained on"),
             ("guard", "reference validation tiles (pv01)"))
    for key, label in parts:
        if key not in b or key not in a:
            continue
        for m, name in (("object_f1", "object F1"), ("object_errors", "object errors"),
                        ("pixel_iou", "pixel IoU"),
                        ("false_polygons_per_km2", "false polygons / km²")):
            if b[key].get(m) is None and a[key].get(m) is None:
                continue
            rows.append(f"<tr><td>{label}</td><td>{name}</td><td>{_fmt(b[key].get(m))}</td>"
                        f"<td>{_fmt(a[key].get(m))}</td></tr>")
    verdict = (f"<b>New version {report.get('model')}</b>"
               + (" (now active)" if report.get("active") == report.get("model") else "")
               if report.get("accepted") else "<b>Rejected</b>: no new version was kept")
    train = report.get("train") or {}
    corr = report.get("corrections") or {}
    return (f"<p>{verdict}. {report.get('reason', '')}</p>"
            f"<p>Fine-tuned {report.get('parent')} for {train.get('seconds', '?')} s "
            f"({train.get('steps', '?')} steps, budget {report.get('budget_s', '?')} s) on "
            f"{corr.get('features', '?')} corrected features.</p>"
            "<table border='1' cellpadding='3' cellspacing='0'><tr><th>measured on</th>"
            "<th>metric</th><th>before</th><th>after</th></tr>" + "".join(rows) + "</table>"
            + "".join(f"<p><i>{w}</i></p>" for w in (report.get("warnings") or [])[:5])
            + f"<p><small>{report.get('rule', '')}</small></p>")


class RetrainResultDialog(QDialog):
    """Non-modal window with a retrain's before/after metrics."""

    def __init__(self, report: Dict[str, Any], parent=None):
        super().__init__(parent)
        self.setObjectName("OrtholensRetrainResult")
        self.setWindowTitle("Ortholens: retrain result")
        lay = QVBoxLayout(self)
        self.browser = QTextBrowser(self)
        self.browser.setHtml(report_html(report))
        lay.addWidget(self.browser)
        box = QDialogButtonBox(QDialogButtonBox.Close, self)
        box.rejected.connect(self.close)
        lay.addWidget(box)
        self.resize(560, 420)


# ---------------------------------------------------------------------------- tasks

class RetrainTask(QgsTask):
    """Runs a ``retrain`` job off the UI thread.

    After ``finished``: ``report`` (the daemon's retrain report or None), ``error``
    (message or None), ``cancelled``; then ``on_done(self)`` on the UI thread.
    """

    def __init__(self, plan: RetrainPlan, settings: DaemonSettings, budget_s: float,
                 options: Optional[Dict[str, Any]] = None,
                 on_done: Optional[Callable[["RetrainTask"], None]] = None,
                 timeout_s: float = 5.0, job_timeout_s: float = 900.0):
        super().__init__(f"Ortholens: retrain {plan.model}", QgsTask.CanCancel)
        self.plan, self.settings, self.budget_s = plan, settings, float(budget_s)
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.on_done = on_done
        self.timeout_s, self.job_timeout_s = timeout_s, job_timeout_s
        self.report: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.cancelled = False
        self.message = ""
        self.daemon_process = None

    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Connect, retrain; never raises, errors go to ``self.error``."""
        def work() -> bool:
            client = connect_daemon(self.settings, start=True, timeout_s=self.timeout_s)
            self.daemon_process = getattr(client, "process", None)
            try:
                return self._run(client)
            finally:
                client.close()
        return run_reporting(self, work, lambda exc: describe_error(exc).replace(
            "run the detection", "retrain"))

    def _run(self, client) -> bool:
        self.setProgress(2)
        pixels, source, reviewed = None, self.plan.source, self.plan.reviewed
        if self.plan.render is not None:
            cards = client.models()
            gsd = next((float(c["gsd_m"]) for c in cards if c.get("id") == self.plan.model),
                       0.1)
            rendered = render_pixels(self.plan.render, gsd, is_cancelled=self.isCanceled)
            source, pixels = pixel_source(self.plan.render, rendered), rendered.array
        if self.isCanceled():
            raise InterruptedError
        self.setProgress(5)
        res = client.retrain(source, self.plan.model, self.plan.features, crs=self.plan.crs,
                             reviewed=reviewed, budget_s=self.budget_s, pixels=pixels,
                             on_progress=self._progress, is_cancelled=self.isCanceled,
                             job_timeout_s=self.job_timeout_s, **self.options)
        self.report = dict(res.get("retrain") or {})
        self.setProgress(100)
        return True

    def _progress(self, fraction: Any = None, message: Any = None, *_: Any) -> None:
        f = job_fraction(fraction)
        if f is None:
            return
        self.message = str(message or "")
        self.setProgress(5 + 94 * f)

    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        if self.isCanceled():
            self.cancelled = True
        if not ok and not self.cancelled and not self.error:
            self.error = "The retrain stopped without a result (see the Ortholens log)."
        if self.on_done is not None:
            self.on_done(self)


class VersionsTask(QgsTask):
    """``versions`` / ``activate`` / ``rollback`` on the daemon (worker thread).

    After ``finished``: ``result`` ({model, active, versions}) or ``error``.
    """

    def __init__(self, action: str, model: str, settings: DaemonSettings,
                 on_done: Optional[Callable[["VersionsTask"], None]] = None,
                 timeout_s: float = 10.0):
        super().__init__(f"Ortholens: {action} {model}", QgsTask.CanCancel)
        if action not in ("versions", "activate", "rollback"):
            raise ValueError(action)
        self.action, self.model, self.settings = action, model, settings
        self.on_done, self.timeout_s = on_done, timeout_s
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None

    def run(self) -> bool:
        try:
            client = connect_daemon(self.settings, start=True, timeout_s=self.timeout_s)
            try:
                self.result = getattr(client, self.action)(self.model)
            finally:
                client.close()
            return True
        except Exception as exc:  # noqa: BLE001 - shown to the user
            msg = getattr(exc, "message", None)
            self.error = str(msg) if msg else describe_error(exc)
            return False

    def finished(self, ok: bool) -> None:
        if self.on_done is not None:
            self.on_done(self)


# ---------------------------------------------------------------------------- controller

def base_id(model_id: str) -> str:
    """``pv-unet-r18@3`` -> ``pv-unet-r18``."""
    return str(model_id).split("@", 1)[0]


class RetrainController:
    """The retrain and versions actions of :class:`~.main.OrtholensPlugin`.

    Adds **Retrain on corrections…** to the Raster menu and to the context menu of
    vector layers (QGIS shows it for Ortholens result layers), and connects the dock's
    retrain / make-active / roll-back buttons.

    Attributes: ``task`` (running :class:`RetrainTask`), ``last_task``, ``versions_task``,
    ``result_dialog``; ``exec_dialog`` (callable running a :class:`RetrainDialog`,
    returns True to go on: tests replace it).
    """

    def __init__(self, plugin: Any, menu: str):
        self.plugin = plugin
        self.iface = plugin.iface
        self.menu = menu
        self.task: Optional[RetrainTask] = None
        self.last_task: Optional[RetrainTask] = None
        self.versions_task: Optional[VersionsTask] = None
        self.result_dialog: Optional[RetrainResultDialog] = None
        self.exec_dialog: Callable[[RetrainDialog], bool] = lambda d: bool(d.exec_())
        main = self.iface.mainWindow()
        self.action = QAction("Retrain on corrections…", main)
        self.action.setObjectName(RETRAIN_ACTION)
        self.action.setToolTip("Ortholens: fine-tune the model on the corrected result "
                               "layer and keep the new version if it is better")
        self.action.triggered.connect(lambda *_: self.retrain())
        self.iface.addPluginToRasterMenu(menu, self.action)
        self._layer_menu = False
        if hasattr(self.iface, "addCustomActionForLayerType"):
            try:
                from qgis.core import QgsMapLayerType
                self.iface.addCustomActionForLayerType(self.action, "", QgsMapLayerType.VectorLayer,
                                                       False)
                self._layer_menu = True
            except Exception:  # noqa: BLE001 - an older QGIS: the menu entry remains
                self._layer_menu = False
        if self._layer_menu:  # result layers of a project opened later get it too
            QgsProject.instance().layersAdded.connect(self._layers_added)
            self._layers_added(list(QgsProject.instance().mapLayers().values()))
        dock = plugin.dock
        if dock is not None and hasattr(dock, "retrainRequested"):
            dock.retrainRequested.connect(lambda: self.retrain())
            dock.activateRequested.connect(self.activate)
            dock.rollbackRequested.connect(self.rollback)

    # layers ---------------------------------------------------------------------------
    def _layers_added(self, layers: List[QgsMapLayer]) -> None:
        for layer in layers:
            if is_result_layer(layer):
                try:
                    self.iface.addCustomActionForLayer(self.action, layer)
                except Exception:  # noqa: BLE001
                    pass

    def remember_detection(self, task: Any) -> None:
        """Record a finished detection on its result layer (and offer the context menu
        action there)."""
        if task.layer is None:
            return
        remember_detection(task.layer, task.plan, str((task.card or {}).get("id", "")))
        if self._layer_menu:
            try:
                self.iface.addCustomActionForLayer(self.action, task.layer)
            except Exception:  # noqa: BLE001
                pass

    # retrain ----------------------------------------------------------------------------
    def _notify(self, text: str, level: int = Qgis.Info, short: Optional[str] = None) -> None:
        self.plugin.notify(text, level, short=short)

    def retrain(self, layer: Optional[QgsMapLayer] = None) -> Optional[RetrainTask]:
        """Check the layer, ask for the budget, and start a :class:`RetrainTask`.

        Args:
            layer: the corrected result layer (default: the active layer).

        Returns:
            The started task, or None (refused, dialog cancelled, one already running).
        """
        if self.task is not None:
            self._notify("A retrain is already running: wait for it or press Cancel.",
                         Qgis.Warning)
            return None
        layer = layer or self.iface.activeLayer()
        dock = self.plugin.dock
        card = dock.current_card() if dock is not None else None
        model = None
        if card and layer is not None and is_result_layer(layer) and base_id(card["id"]) == \
                base_id(str(layer.customProperty(PROP + "model"))):
            model = str(card["id"])  # the selected version of the layer's lineage
        classes = (card or {}).get("classes") if card else None
        try:
            plan = prepare_retrain(layer, classes, model)
        except ValidationError as exc:
            self._notify(str(exc), Qgis.Warning)
            return None
        dlg = RetrainDialog(plan, self.iface.mainWindow())
        if not self.exec_dialog(dlg):
            return None
        if dlg.use_view_only():
            canvas = self.iface.mapCanvas()
            try:
                plan = prepare_retrain(layer, classes, model, view_extent=canvas.extent(),
                                       view_crs=canvas.mapSettings().destinationCrs())
            except ValidationError as exc:
                self._notify(str(exc), Qgis.Warning)
                return None
        task = RetrainTask(plan, daemon_settings(), dlg.budget_s(), dlg.options(),
                           on_done=self._retrain_done)
        self.task = task
        if dock is not None:
            dock.set_busy(True)
            dock.show_message(f"Retraining {plan.model} on {len(plan.features)} corrected "
                              f"features…", Qgis.Info)
            task.progressChanged.connect(lambda v: dock.set_progress(v) if self.plugin.dock
                                         else None)
            dock.cancelRequested.connect(self.cancel)
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _retrain_done(self, task: RetrainTask) -> None:
        self.task, self.last_task = None, task
        dock = self.plugin.dock
        if task.daemon_process is not None and getattr(self.plugin, "daemon_process",
                                                       None) is None:
            self.plugin.daemon_process = task.daemon_process
        if dock is not None:
            try:
                dock.cancelRequested.disconnect(self.cancel)
            except (TypeError, RuntimeError):
                pass
            dock.set_busy(False)
        if task.report is not None:
            r = task.report
            if r.get("accepted"):
                text = f"Retrain: new version {r.get('model')} — {r.get('reason')}"
                if dock is not None and hasattr(dock, "prefer_model"):
                    dock.prefer_model(str(r.get("active") or r.get("model")))
                self._notify(text, Qgis.Success, short=f"New version {r.get('model')}"
                             + (" (active)" if r.get("active") == r.get("model") else ""))
            else:
                self._notify(f"Retrain: the candidate was rejected — {r.get('reason')}",
                             Qgis.Warning, short="Retrain: rejected, no new version")
            self.show_result(r)
            self.plugin.refresh_status()
        elif task.cancelled:
            self._notify("Retrain cancelled; nothing was changed.", Qgis.Info)
        else:
            self._notify(task.error or "The retrain failed.", Qgis.Critical)

    def show_result(self, report: Dict[str, Any]) -> RetrainResultDialog:
        if self.result_dialog is not None:
            self.result_dialog.close()
        self.result_dialog = RetrainResultDialog(report, self.iface.mainWindow())
        self.result_dialog.setWindowModality(Qt.NonModal)
        self.result_dialog.show()
        return self.result_dialog

    # versions ---------------------------------------------------------------------------
    def activate(self, model_id: str) -> Optional[VersionsTask]:
        """Make ``model_id`` the active version (daemon), then refresh the dock."""
        return self._versions("activate", model_id)

    def rollback(self, model_id: str) -> Optional[VersionsTask]:
        """Roll ``model_id``'s lineage back to the active version's parent."""
        return self._versions("rollback", model_id)

    def _versions(self, action: str, model_id: str) -> Optional[VersionsTask]:
        if not model_id:
            self._notify("Choose a model first.", Qgis.Warning)
            return None
        if self.versions_task is not None:
            return None
        task = VersionsTask(action, model_id, daemon_settings(), on_done=self._versions_done)
        self.versions_task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _versions_done(self, task: VersionsTask) -> None:
        self.versions_task = None
        if task.result is None:
            self._notify(f"{task.action.capitalize()} failed: {task.error}", Qgis.Warning)
            return
        active = str(task.result.get("active"))
        dock = self.plugin.dock
        if dock is not None and hasattr(dock, "prefer_model"):
            dock.prefer_model(active)
        verb = "Rolled back to" if task.action == "rollback" else "Active version:"
        self._notify(f"{verb} {active}", Qgis.Success)
        self.plugin.refresh_status()

    def unload(self) -> None:
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        if self.versions_task is not None:
            self.versions_task.on_done = None
            self.versions_task = None
        if self.result_dialog is not None:
            self.result_dialog.close()
            self.result_dialog.deleteLater()
            self.result_dialog = None
        if self._layer_menu:
            try:
                QgsProject.instance().layersAdded.disconnect(self._layers_added)
            except (TypeError, RuntimeError):
                pass
            try:
                self.iface.removeCustomActionForLayerType(self.action)
            except Exception:  # noqa: BLE001
                pass
        self.iface.removePluginRasterMenu(self.menu, self.action)
        self.action.deleteLater()


__all__ = ["remember_detection", "is_result_layer", "prepare_retrain", "RetrainPlan",
           "RetrainDialog", "RetrainResultDialog", "RetrainTask", "VersionsTask",
           "RetrainController", "report_html", "RETRAIN_ACTION"]
