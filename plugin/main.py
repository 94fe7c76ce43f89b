"""The QGIS plugin object: action, toolbar, Raster menu entry and dock.

``Detect in extent`` checks the inputs on the UI thread (messages in the message bar
and the dock), then runs a :class:`~.detect.task.DetectTask` through QGIS's task
manager; the result layer is added on top of the layer tree when the task finishes.
Retrain and model versions are wired by :class:`~.retrain.controller.RetrainController`,
*Add model…* by :class:`~.importing.controller.ImportController`, the Processing
algorithms by :class:`~.processing.OrtholensProvider`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QPushButton
from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsProject

from protocol.errors import InputError

from .detect.plan import prepare_detect
from .detect.repeat import run_key, same_run
from .detect.task import DetectTask
from .dock.panel import OrtholensDock
from .dock.status import NO_ENGINE, NOT_RUNNING, NOT_SET_UP, STARTING, pong_text
from .layers.naming import default_result_path
from .messages import push_message
from .settings import (autostart, daemon_settings, migrate_plain_token, resource_path,
                       results_dir)
from .tasks import LOG_TAG, DaemonStatusTask

MENU = "&Ortholens"
ACTION_NAME = "OrtholensDetectAction"
TOOLBAR_NAME = "OrtholensToolbar"


class OrtholensPlugin:
    """Ortholens for one QGIS session.

    Args:
        iface: the ``QgisInterface``.

    Attributes (after ``initGui``): ``action`` (QAction "Detect in extent"), ``toolbar``,
    ``dock`` (:class:`~.dock.panel.OrtholensDock`), ``task`` (the running
    :class:`~.detect.task.DetectTask` or None), ``last_task`` (the last finished one).
    """

    def __init__(self, iface: Any):
        self.iface = iface
        self.action: Optional[QAction] = None
        self.toolbar = None
        self.dock: Optional[OrtholensDock] = None
        self.task: Optional[DetectTask] = None
        self.last_task: Optional[DetectTask] = None
        self.status_task: Optional[DaemonStatusTask] = None
        #: the daemon process this plugin started (stopped again on unload), or None.
        self.daemon_process = None
        #: the Ortholens Processing provider while registered (``initProcessing``).
        self.provider = None
        #: retrain and model versions (:class:`~.retrain.controller.RetrainController`).
        self.retrain = None
        #: the dock's *Add model…* (:class:`~.importing.controller.ImportController`).
        self.importer = None
        #: the job table (:class:`~.jobs.controller.JobsController`).
        self.jobs = None
        #: the review queue (:class:`~.review.controller.ReviewController`).
        self.review = None
        #: the *Settings > Options > Ortholens* page factory while registered.
        self.options_factory = None
        #: Detect was pressed while the daemon was being started to list its models:
        #: the detection runs once they are known, with the model the dock then shows.
        self.pending_detect = False
        #: the run key of a detection the project holds already, after the press that
        #: said so (:mod:`.detect.repeat`): the next press with it runs it anyway.
        self.repeat_key: Optional[str] = None

    # lifecycle -----------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """Register the Ortholens Processing provider (``ortholens:*`` algorithms); QGIS
        calls this for ``qgis_process`` too, where there is no GUI."""
        if self.provider is None:
            from .processing import OrtholensProvider
            self.provider = OrtholensProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """Create the action, toolbar, menu entry and dock; ask the daemon's status."""
        self.initProcessing()
        main = self.iface.mainWindow()
        self.action = QAction(QIcon(resource_path("icon.svg")), "Detect in extent", main)
        self.action.setObjectName(ACTION_NAME)
        self.action.setToolTip("Ortholens: detect rooftop solar panels in the visible "
                               "part of the active raster layer")
        self.action.triggered.connect(self.detect)

        self.toolbar = self.iface.addToolBar("Ortholens")
        self.toolbar.setObjectName(TOOLBAR_NAME)
        self.toolbar.addAction(self.action)
        self.iface.addPluginToRasterMenu(MENU, self.action)

        self.dock = OrtholensDock(main)
        self.dock.detection.detectRequested.connect(self.detect)
        self.dock.detection.cancelRequested.connect(self.cancel)
        self.dock.detection.inventoryRequested.connect(self.open_inventory)
        self.dock.status.refreshRequested.connect(lambda: self.refresh_status(start=True))
        self.dock.status.settingsRequested.connect(self.open_settings)
        self.dock.status.setupRequested.connect(self.open_setup)
        self.dock.visibilityChanged.connect(self._dock_visibility)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.iface.currentLayerChanged.connect(self._layer_changed)
        self.iface.addPluginToRasterMenu(MENU, self.dock.toggleViewAction())
        from .settings_dialog import OrtholensOptionsFactory
        self.options_factory = OrtholensOptionsFactory(QIcon(resource_path("icon.svg")))
        self.iface.registerOptionsWidgetFactory(self.options_factory)
        from .retrain.controller import RetrainController
        self.retrain = RetrainController(self, MENU)
        from .importing.controller import ImportController
        self.importer = ImportController(self)
        from .jobs.controller import JobsController
        self.jobs = JobsController(self)
        from .review.controller import ReviewController
        self.review = ReviewController(self)
        from .install.zmqcheck import zmq_available
        if not zmq_available():  # say so now, not at the first click
            self.warn_pyzmq()
        # the dock opens with QGIS: start the daemon (when allowed) so that its default
        # model and that model's values are shown before the first detection
        QTimer.singleShot(0, lambda: self.refresh_status(start=autostart()))
        # a token an earlier version kept in plain settings goes to the auth database
        problem = migrate_plain_token()
        if problem:
            QgsMessageLog.logMessage(f"Ortholens: the engine token stays in the plain "
                                     f"settings for now: {problem}", LOG_TAG, Qgis.Warning)

    def unload(self) -> None:
        """Remove every GUI element and cancel a running detection."""
        if self.dock is not None:
            try:
                self.iface.currentLayerChanged.disconnect(self._layer_changed)
            except (TypeError, RuntimeError):  # never connected
                pass
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        if self.status_task is not None:
            self.status_task.on_done = None
            self.status_task = None
        for name in ("retrain", "importer", "jobs", "review"):  # the controllers
            controller = getattr(self, name)
            if controller is not None:
                controller.unload()
                setattr(self, name, None)
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        setup, self.setup_dialog = getattr(self, "setup_dialog", None), None
        if setup is not None:  # a running setup stops with its pip command
            if setup.task is not None:
                setup.task.on_done = None
                setup.task.cancel()
            setup.close()
            setup.deleteLater()
        if self.dock is not None:
            self.iface.removePluginRasterMenu(MENU, self.dock.toggleViewAction())
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            if self.toolbar is not None:
                self.toolbar.removeAction(self.action)
            self.action.deleteLater()
            self.action = None
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        self.stop_started_daemon()

    def stop_started_daemon(self) -> None:
        """Terminate the daemons this plugin started, by whichever task (a daemon that
        was already running when QGIS needed it is left alone), and wait up to 5 s for
        each to exit (then kill it), so that the next status check finds them gone."""
        import subprocess

        from .tasks import started_engines
        procs = started_engines()
        proc, self.daemon_process = self.daemon_process, None
        if proc is not None and all(p is not proc for p in procs):
            procs.append(proc)
        for proc in procs:
            if proc.poll() is not None:
                continue
            QgsMessageLog.logMessage(f"stopping the daemon it started (pid {proc.pid})",
                                     LOG_TAG, Qgis.Info)
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    # settings --------------------------------------------------------------------
    def open_settings(self):
        """Open the settings dialog (window-modal, not blocking); on OK the daemon's
        status is asked again (and the daemon started when allowed).

        Returns:
            The :class:`~.settings_dialog.SettingsDialog` shown.
        """
        from .settings_dialog import SettingsDialog
        dlg = SettingsDialog(self.iface.mainWindow())
        dlg.accepted.connect(lambda: self.refresh_status(start=autostart()))
        dlg.open()
        self.settings_dialog = dlg
        return dlg

    def open_setup(self):
        """Open the *Set up the detection engine* dialog (not modal; a running setup
        goes on when it is closed, and this shows it again). When the engine was
        installed, repaired or removed, its status is asked again (and it is started
        when allowed).

        Returns:
            The :class:`~.install.dialog.EngineSetupDialog` shown.
        """
        dlg = getattr(self, "setup_dialog", None)
        if dlg is None:
            from .install.dialog import EngineSetupDialog
            dlg = EngineSetupDialog(self.iface.mainWindow(),
                                    before_change=self.stop_started_daemon)
            dlg.engineChanged.connect(lambda: self.refresh_status(start=autostart()))
            self.setup_dialog = dlg
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()
        return dlg

    def warn_pyzmq(self) -> None:
        """pyzmq is missing from QGIS's Python: say so with the command that fixes it
        and an *Install pyzmq…* button (pip into the user's site-packages, after
        asking)."""
        from .install.zmqcheck import missing_message
        text = missing_message()
        if self.dock is not None:
            self.dock.status.set_status(text)
        bar = self.iface.messageBar()
        item = bar.createMessage("Ortholens", text)
        button = QPushButton("Install pyzmq…", item)
        button.setObjectName("ortholensInstallPyzmq")
        button.clicked.connect(self.install_pyzmq)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Warning, 0)
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.Warning)

    def install_pyzmq(self, confirm: bool = True) -> bool:
        """Install pyzmq into the user's site-packages with QGIS's Python's pip, after
        the user agreed to the command shown; on success the engine's status is asked
        again (no restart needed).

        Args:
            confirm: ask first (tests pass False).

        Returns:
            True when ``import zmq`` works afterwards.
        """
        from qgis.PyQt.QtWidgets import QApplication, QMessageBox

        from .install.plan import shell_command
        from .install.zmqcheck import install_command, install_pyzmq, user_site
        cmd = shell_command(install_command())
        if confirm and QMessageBox.question(
                self.iface.mainWindow(), "Install pyzmq",
                f"Install pyzmq into your user site-packages ({user_site()}) with pip?\n\n"
                f"It runs:\n{cmd}") != QMessageBox.Yes:
            return False
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            ok, text = install_pyzmq()
        finally:
            QApplication.restoreOverrideCursor()
        if ok:
            self.notify("pyzmq is installed: Ortholens can talk to its engine now.",
                        Qgis.Success)
            self.refresh_status(start=autostart())
        else:
            self.notify(f"pyzmq could not be installed ({text[-600:]}). Install it "
                        f"yourself with: {cmd}", Qgis.Critical)
        return ok

    def _layer_changed(self, layer: Any) -> None:
        """The active layer changed: show the band mapping a detection would send and,
        with the automatic model entry, the model for the layer's GSD."""
        if self.dock is None:
            return
        from qgis.core import QgsRasterLayer

        from .detect.crs import layer_gsd
        from .detect.plan import layer_bands
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            self.dock.models.show_bands(layer_bands(layer), layer.name())
            self.dock.models.set_layer_gsd(layer_gsd(layer))
        else:
            self.dock.models.show_bands(None, "")
            self.dock.models.set_layer_gsd(None)

    def _dock_visibility(self, visible: bool) -> None:
        """The dock was opened: list the models (starting the daemon when allowed) if
        none are known yet."""
        if visible and self.dock is not None and self.dock.models.current_card() is None:
            self.refresh_status(start=autostart())

    # messages --------------------------------------------------------------------
    def notify(self, text: str, level: int = Qgis.Info, duration: int = 8,
               short: Optional[str] = None, settings_button: bool = False,
               after_task: bool = False, warnings: Sequence[str] = ()) -> None:
        """Show ``text`` in the message bar and the log (:func:`~.messages.push_message`;
        ``settings_button``: with *Settings…* and *Set up the engine…*), ``short``
        (default ``text``) and ``warnings`` in the dock. ``after_task``: pushed on the next
        turn of the event loop, after QGIS's own "Task complete" notice."""
        if self.dock is not None:
            self.dock.detection.show_message(short or text, level, warnings)
        if after_task:
            QTimer.singleShot(0, lambda: self._push(text, level, duration, settings_button))
        else:
            self._push(text, level, duration, settings_button)

    def _push(self, text: str, level: int, duration: int, settings_button: bool) -> None:
        push_message(self.iface.messageBar(), text, level, duration,
                     (self.open_settings, self.open_setup) if settings_button else None)

    # daemon status -----------------------------------------------------------------
    def refresh_status(self, start: bool = False) -> None:
        """Ping the daemon in the background and list its models.

        Args:
            start: start the daemon when nothing answers and the settings allow it
                (the dock opening with *start the engine* on, *Refresh*).
        """
        if self.dock is None or self.status_task is not None:
            return
        settings = daemon_settings()
        task = DaemonStatusTask(settings, on_done=self._status_done, start=start)
        self.dock.status.set_status(STARTING if task.start
                                    else f"Checking the daemon at {settings.endpoint}…")
        self.status_task = task
        QgsApplication.taskManager().addTask(task)

    def _status_done(self, task: DaemonStatusTask) -> None:
        self.status_task = None
        if task.daemon_process is not None:
            self.daemon_process = task.daemon_process
        if self.dock is None:
            return
        missing = task.pong is None and not task.error and not task.settings.can_start()
        self.dock.set_engine(NO_ENGINE if missing else None)
        if task.pong is not None:
            self.dock.status.set_status(pong_text(task.pong, task.settings))
            self.dock.models.set_models(task.cards)
        elif task.error:
            self.dock.status.set_status(task.error)
        elif not task.settings.can_start():
            self.dock.status.set_status(NOT_SET_UP)
        else:
            self.dock.status.set_status(NOT_RUNNING)
        if self.pending_detect:
            self.pending_detect = False
            if task.pong is not None:
                self.detect()
            else:
                self.dock.set_busy(False)
                self.notify(task.error or task.settings.start_hint(), Qgis.Critical,
                            settings_button=True)

    # detection ------------------------------------------------------------------------
    def detect(self) -> Optional[DetectTask]:
        """Check the inputs and start a detection in the visible extent.

        Returns:
            The started :class:`DetectTask`, or None when the inputs were refused (the
            reason is in the message bar and the dock) or a detection is running.
        """
        if self.task is not None:
            self.notify("A detection is already running: wait for it or press Cancel.",
                        Qgis.Warning)
            return None
        layer = self.iface.activeLayer()
        canvas = self.iface.mapCanvas()
        crs = canvas.mapSettings().destinationCrs()
        try:
            plan = prepare_detect(layer, canvas.extent(), crs,
                                  QgsProject.instance().transformContext())
        except InputError as exc:
            self.notify(str(exc), Qgis.Warning)
            return None
        card = self.dock.models.current_card() if self.dock is not None else None
        if card is None and self.status_task is not None and self.status_task.start:
            # the daemon is starting to list its models: detect once the dock shows
            # the default model and its values, so that what runs is what is shown
            self.pending_detect = True
            if self.dock is not None:
                self.dock.set_busy(True)
                self.dock.detection.show_message("Waiting for the daemon to start…", Qgis.Info)
            return None
        model_id = str(card["id"]) if card else None
        options = self.dock.models.options() if self.dock is not None else {}
        key = run_key(plan, card, options)
        repeat = same_run(key)
        if repeat is not None and self.repeat_key != key:  # a second press runs it
            self.repeat_key = key
            self.notify(f"'{repeat.name()}' already holds this detection (same raster, "
                        f"extent, model and values): press Detect in extent again to run "
                        f"it anyway.", Qgis.Warning)
            return None
        self.repeat_key = None
        try:
            out = default_result_path(f"{layer.name()}_{model_id or 'detections'}",
                                      folder=results_dir())
        except OSError as exc:
            self.notify(f"The results folder cannot be written ({exc}): choose another "
                        "one in Settings….", Qgis.Critical, settings_button=True)
            return None
        task = DetectTask(plan, daemon_settings(), out, model_id=model_id, options=options,
                          on_done=self._detect_done, run_key=key)
        self.task = task
        if self.dock is not None:
            self.dock.set_busy(True)
            self.dock.detection.show_message(f"Detecting in '{layer.name()}'…", Qgis.Info)
            task.progressChanged.connect(self._progress)
            task.message.connect(self._task_message)
        QgsApplication.taskManager().addTask(task)
        return task

    def open_inventory(self):
        """Open the *Solar inventory* dialog (``ortholens:solarinventory``) with the
        current result layer as its detections (``inventory_alg.current_result_layer``);
        returns the dialog shown."""
        from .processing.inventory_alg import current_result_layer, open_dialog
        last = self.last_task.layer if self.last_task is not None else None
        layer = current_result_layer(self.iface.activeLayer(), last)
        self.inventory_dialog = open_dialog(layer, self.iface.mainWindow())
        return self.inventory_dialog

    def _progress(self, value: float) -> None:
        if self.dock is not None:
            self.dock.detection.set_progress(value)

    def _task_message(self, text: str) -> None:
        if self.dock is not None and self.task is not None:
            self.dock.detection.show_progress(text, self.task.time_left)

    def cancel(self) -> None:
        """Cancel the running detection (it stops at the daemon's next batch)."""
        if self.pending_detect:
            self.pending_detect = False
            if self.dock is not None:
                self.dock.set_busy(False)
                self.dock.detection.show_message("Detection cancelled.", Qgis.Info)
        if self.task is not None:
            self.task.cancel()
            if self.dock is not None:
                self.dock.detection.show_message("Cancelling…", Qgis.Info)

    def _detect_done(self, task: DetectTask) -> None:
        self.task = None
        self.last_task = task
        if task.daemon_process is not None:
            self.daemon_process = task.daemon_process
        if self.dock is not None:
            self.dock.set_busy(False)
            if task.card is not None:  # show the model that ran (the daemon's default
                self.dock.models.prefer_model(str(task.card.get("id")))  # if none was listed)
            if task.cards:
                self.dock.models.set_models(task.cards)
            if task.layer is None:
                self.dock.detection.set_progress(0)
            QTimer.singleShot(0, self.refresh_status)
        if task.layer is not None:
            if self.retrain is not None:  # its extent becomes the reviewed area
                self.retrain.remember_detection(task)
            if self.dock is not None:
                self.dock.detection.set_progress(100)
                self.dock.detection.show_result(task.out_path)
            for note in task.notes:
                self.notify(note, Qgis.Warning, after_task=True)
            # the dock keeps only the last message: the warnings follow it, in amber
            self.notify(task.summary(), Qgis.Success, short=task.summary(full_path=False),
                        after_task=True, warnings=task.notes)
        elif task.cancelled:
            self.notify("Detection cancelled.", Qgis.Info, after_task=True)
        elif self.jobs is None or not self.jobs.offer_batch(task):
            self.notify(task.error or "The detection failed.", Qgis.Critical,
                        settings_button=task.unreachable, after_task=True)


__all__ = ["OrtholensPlugin", "ACTION_NAME", "TOOLBAR_NAME", "MENU"]
