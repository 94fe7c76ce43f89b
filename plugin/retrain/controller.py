"""The retrain and versions actions of the plugin: menu entries, the result layers'
context menu and the dock's buttons, connected to the dialogs and tasks."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QAction, QMessageBox
from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject

from protocol.errors import InputError
from protocol.importing import onnx_only_message

from ..detect.crs import crs_wkt, extent_tuple
from ..dock.version_table import in_use
from ..settings import daemon_settings
from .dialogs import RetrainDialog, RetrainResultDialog, main_reason
from .memory import is_result_layer, remember_detection
from .plan import prepare_retrain
from .task import RetrainTask, VersionsTask

#: Object name of the "Retrain on corrections…" action.
RETRAIN_ACTION = "OrtholensRetrainAction"


class RetrainController:
    """The retrain and versions actions of the plugin (``main.OrtholensPlugin``).

    Adds **Retrain on corrections…** to the Raster menu and to the context menu of
    vector layers (QGIS shows it for Ortholens result layers), and connects the dock's
    retrain / make-active / roll-back buttons.

    Args:
        plugin: the plugin object (``iface``, ``dock``, ``notify``, ``refresh_status``,
            ``daemon_process``).
        menu: the Raster menu entry the action goes under.

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
            except Exception:  # noqa: BLE001 - a QGIS without it: the menu entry remains
                self._layer_menu = False
        if self._layer_menu:  # result layers of a project opened later get it too
            QgsProject.instance().layersAdded.connect(self._layers_added)
            self._layers_added(list(QgsProject.instance().mapLayers().values()))
        #: asks the user a yes/no question (deleting a version in use); tests replace it
        self.confirm: Callable[[str], bool] = lambda text: QMessageBox.question(
            self.iface.mainWindow(), "Ortholens", text) == QMessageBox.Yes
        #: the running ``versions`` listing of the versions panel, or None
        self.listing_task: Optional[VersionsTask] = None
        self._list_timer = QTimer()
        self._list_timer.setSingleShot(True)
        self._list_timer.timeout.connect(self.list_versions)
        dock = plugin.dock
        if dock is not None:
            dock.versions.retrainRequested.connect(lambda: self.retrain())
            dock.versions.activateRequested.connect(self.activate)
            dock.versions.rollbackRequested.connect(self.rollback)
            dock.versions.deleteRequested.connect(self.delete)
            dock.models.modelChanged.connect(lambda: self._list_timer.start(300))
            self.iface.mapCanvas().extentsChanged.connect(lambda: self._list_timer.start(800))

    # layers ---------------------------------------------------------------------------
    def _offer_action(self, layer: QgsMapLayer) -> None:
        """Put the retrain action in ``layer``'s context menu."""
        try:
            self.iface.addCustomActionForLayer(self.action, layer)
        except Exception:  # noqa: BLE001 - the menu entry is a convenience; never fail
            pass

    def _layers_added(self, layers: List[QgsMapLayer]) -> None:
        for layer in layers:
            if is_result_layer(layer):
                self._offer_action(layer)

    def remember_detection(self, task: Any) -> None:
        """Record a finished detection on its result layer (and offer the context menu
        action there)."""
        if task.layer is None:
            return
        remember_detection(task.layer, task.plan, str((task.card or {}).get("id", "")))
        if self._layer_menu:
            self._offer_action(task.layer)

    # retrain ----------------------------------------------------------------------------
    def _notify(self, text: str, level: int = Qgis.Info, short: Optional[str] = None) -> None:
        self.plugin.notify(text, level, short=short)

    def _fail(self, text: str, level: int = Qgis.Warning) -> None:
        """Tell the user why nothing (more) happens, with the progress bar at 0 (not a
        finished job's 100 % beside the message)."""
        dock = self.plugin.dock
        if dock is not None and self.task is None and \
                getattr(self.plugin, "task", None) is None:
            dock.detection.set_progress(0)
        self._notify(text, level)

    def _job_running(self) -> Optional[str]:
        """Why a retrain or version switch must wait now, or None."""
        if self.task is not None:
            return "A retrain is running: wait for it or press Cancel."
        if getattr(self.plugin, "task", None) is not None:
            return "A detection is running: wait for it or press Cancel."
        return None

    @staticmethod
    def model_for(card: Optional[Dict[str, Any]]) -> Optional[str]:
        """The model a retrain fine-tunes: the one the dock shows (None: none shown yet,
        the layer's own model is used).

        Raises:
            InputError: the dock shows an ensemble or a model imported from an ONNX
                file, which cannot be fine-tuned.
        """
        if not card:
            return None
        if card.get("format"):
            raise InputError(onnx_only_message(str(card.get("id"))) + ".")
        if card.get("kind") == "ensemble":
            members = ", ".join(str(m.get("id")) for m in card.get("members") or [])
            raise InputError(f"The dock shows the ensemble {card.get('id')}, which cannot "
                             f"be fine-tuned: select one of its members ({members}) in the "
                             f"dock, then retrain.")
        return str(card["id"])

    def retrain(self, layer: Optional[QgsMapLayer] = None) -> Optional[RetrainTask]:
        """Check the layer, ask for the budget, and start a :class:`RetrainTask`.

        Args:
            layer: the corrected result layer (default: the active layer).

        Returns:
            The started task, or None (refused, dialog cancelled, one already running).
        """
        busy = self._job_running()
        if busy:
            self._notify(busy, Qgis.Warning)
            return None
        layer = layer or self.iface.activeLayer()
        dock = self.plugin.dock
        card = dock.models.current_card() if dock is not None else None
        classes = (card or {}).get("classes") if card else None
        try:
            plan = prepare_retrain(layer, classes, self.model_for(card))
        except InputError as exc:
            self._fail(str(exc))
            return None
        dlg = RetrainDialog(plan, self.iface.mainWindow())
        if not self.exec_dialog(dlg):
            return None
        if dlg.use_view_only():
            canvas = self.iface.mapCanvas()
            try:
                plan = prepare_retrain(layer, classes, plan.model,
                                       view_extent=canvas.extent(),
                                       view_crs=canvas.mapSettings().destinationCrs())
            except InputError as exc:
                self._fail(str(exc))
                return None
        task = RetrainTask(plan, daemon_settings(), dlg.budget_s(), dlg.options(),
                           on_done=self._retrain_done)
        self.task = task
        if dock is not None:
            dock.set_busy(True)
            dock.detection.show_message(
                f"Retraining {plan.model} (budget {dlg.budget_s() / 60:g} min)…", Qgis.Info)
            task.progressChanged.connect(self._progress)
            task.message.connect(self._task_message)
            dock.detection.cancelRequested.connect(self.cancel)
        QgsApplication.taskManager().addTask(task)
        return task

    def _progress(self, value: float) -> None:
        if self.plugin.dock is not None and self.task is not None:
            self.plugin.dock.detection.set_progress(value)

    def _task_message(self, text: str) -> None:
        """Show the retrain's phase and time left in the dock."""
        if self.plugin.dock is not None and self.task is not None:
            self.plugin.dock.detection.show_progress(
                f"Retraining {self.task.plan.model}: {text}", self.task.time_left)

    def cancel(self) -> None:
        """Cancel the running retrain (the daemon stops at its next step)."""
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
                dock.detection.cancelRequested.disconnect(self.cancel)
            except (TypeError, RuntimeError):
                pass
            dock.set_busy(False)
        if dock is not None:
            dock.detection.set_progress(100 if task.report is not None else 0)
        if task.report is not None:
            r = task.report
            if r.get("accepted") and r.get("scope"):
                # the dock keeps its model: detections in this area pick the version
                text = (f"Retrain: new version {r.get('model')} for this area — "
                        f"{main_reason(r)}")
                self._notify(text, Qgis.Success, short=f"New version {r.get('model')}"
                             + (" (used in this area)" if r.get("in_use") else ""))
            elif r.get("accepted"):
                text = f"Retrain: new version {r.get('model')} — {main_reason(r)}"
                if dock is not None:
                    dock.models.prefer_model(str(r.get("active") or r.get("model")))
                self._notify(text, Qgis.Success, short=f"New version {r.get('model')}"
                             + (" (active)" if r.get("active") == r.get("model") else ""))
            elif r.get("verdict") == "undecided":
                self._notify(f"Retrain: no verdict — {main_reason(r)}", Qgis.Warning,
                             short="Retrain: no verdict; you may keep the version")
            else:
                self._notify(f"Retrain: the candidate was rejected — {main_reason(r)}",
                             Qgis.Warning, short="Retrain: rejected, no new version")
            self.show_result(r)
            self.plugin.refresh_status()
        elif task.cancelled:
            self._fail("Retrain cancelled; nothing was changed.", Qgis.Info)
        else:
            self._fail(task.error or "The retrain failed.", Qgis.Critical)

    def show_result(self, report: Dict[str, Any]) -> RetrainResultDialog:
        """Show a retrain report in a non-modal window (replacing an earlier one)."""
        if self.result_dialog is not None:
            self.result_dialog.close()
        parent = str(report.get("parent") or "")
        self.result_dialog = RetrainResultDialog(
            report, self.iface.mainWindow(),
            on_keep=(lambda pending: self.keep(parent, pending)) if parent else None)
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

    def delete(self, model_id: str) -> Optional[VersionsTask]:
        """Delete the user version ``model_id``; one in use only after the user said
        yes (:attr:`confirm`): it is then rolled back first."""
        version = self.plugin.dock.versions.picked_version() if self.plugin.dock else None
        extra = None
        if version is not None and version.get("id") == model_id and in_use(version):
            if not self.confirm(f"{model_id} is in use. Delete it for good? It is rolled "
                                f"back first (its parent becomes active, or it is taken "
                                f"out of use in its area), then its files are removed."):
                return None
            extra = {"roll_back": True}
        return self._versions("delete", model_id, extra)

    def list_versions(self) -> Optional[VersionsTask]:
        """Ask the engine for the versions of the model the dock shows and the one in
        use in the map view, for the versions panel (once the models are listed: it
        never starts the engine for this)."""
        dock = self.plugin.dock
        card = dock.models.current_card() if dock is not None else None
        if card is None:
            return None
        if self.listing_task is not None:  # one at a time: ask again when it is done
            self._list_timer.start(300)
            return None
        canvas = self.iface.mapCanvas()
        view, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        extra = ({"extent": extent_tuple(view), "extent_crs": crs_wkt(crs)}
                 if crs.isValid() and view.width() > 0 and view.height() > 0 else {})
        task = VersionsTask("versions", str(card["id"]), daemon_settings(),
                            on_done=self._listed, extra=extra)
        self.listing_task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _listed(self, task: VersionsTask) -> None:
        self.listing_task = None
        dock = self.plugin.dock
        if dock is not None and task.result is not None:
            dock.versions.show_versions(task.result)

    def keep(self, model_id: str, pending: str) -> Optional[VersionsTask]:
        """Keep the retrain candidate ``pending`` of ``model_id``'s lineage that the rule
        did not accept (the result window's **Keep this version anyway**); its lineage
        records that the user kept it against the rule's verdict."""
        return self._versions("keep", model_id, {"pending": pending,
                                                 "note": "kept from the result window"})

    def _versions(self, action: str, model_id: str,
                  extra: Optional[Dict[str, Any]] = None) -> Optional[VersionsTask]:
        if not model_id:
            self._fail("Choose a model first.")
            return None
        busy = self._job_running()
        if busy:  # the buttons are disabled then; this is for other callers
            self._notify(busy, Qgis.Warning)
            return None
        if self.versions_task is not None:
            return None
        task = VersionsTask(action, model_id, daemon_settings(), on_done=self._versions_done,
                            extra=extra)
        self.versions_task = task
        if self.plugin.dock is not None:
            self.plugin.dock.versions.set_versions_running(True)
        QgsApplication.taskManager().addTask(task)
        return task

    def _versions_done(self, task: VersionsTask) -> None:
        self.versions_task = None
        if self.plugin.dock is not None:
            self.plugin.dock.versions.set_versions_running(False)
        self._list_timer.start(100)  # the panel shows the versions as they are now
        if task.result is None:
            self._fail(f"{task.action.capitalize()} failed: {task.error}")
            return
        active = str(task.result.get("active"))
        dock = self.plugin.dock
        if task.action == "delete":
            first = " was rolled back, then" if task.result.get("rolled_back") else ""
            if dock is not None:
                dock.models.prefer_model(active)
            self._notify(f"{task.model}{first} deleted; active version: {active}.",
                         Qgis.Success)
            self.plugin.refresh_status()
            return
        changed = task.result.get("kept") or task.model
        version = next((v for v in task.result.get("versions") or []
                        if v.get("id") == changed), {})
        if version.get("scope"):  # an area version: the dock keeps its model
            use = "now used in its area" if version.get("in_use") else "no longer used"
            text = (f"Kept {changed} against the rule's verdict (recorded in its lineage); "
                    f"{use}" if task.action == "keep" else f"{changed} is {use}")
            self._notify(text + ".", Qgis.Success)
            self.plugin.refresh_status()
            return
        if dock is not None:
            dock.models.prefer_model(active)
        verb = {"rollback": "Rolled back to", "keep": f"Kept {changed} against the rule's "
                "verdict (recorded in its lineage); active version:"}.get(
                    task.action, "Active version:")
        self._notify(f"{verb} {active}", Qgis.Success)
        self.plugin.refresh_status()

    def unload(self) -> None:
        """Cancel running tasks, close the result window, remove the actions."""
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        if self.versions_task is not None:
            self.versions_task.on_done = None
            self.versions_task = None
        self._list_timer.stop()
        if self.listing_task is not None:
            self.listing_task.on_done = None
            self.listing_task = None
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
            except Exception:  # noqa: BLE001 - unloading goes on regardless
                pass
        self.iface.removePluginRasterMenu(self.menu, self.action)
        self.action.deleteLater()


__all__ = ["RETRAIN_ACTION", "RetrainController"]
