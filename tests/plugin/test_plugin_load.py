"""The plugin loads into QGIS, adds its action, toolbar and dock, and unloads cleanly."""

from __future__ import annotations

import configparser

from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar

import plugin
from plugin.dock.status import NOT_RUNNING
from plugin.main import ACTION_NAME, TOOLBAR_NAME
from plugin.settings import resource_path

from helpers import REPO, flush_deletes, wait_until


def test_metadata_is_complete():
    cp = configparser.ConfigParser()
    cp.read(REPO / "metadata.txt", encoding="utf-8")
    g = cp["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "category", "icon"):
        assert g.get(key), key
    assert g["name"] == "Ortholens" and g["qgisMinimumVersion"] == "3.22"
    assert g["version"] == "0.1.0" and g["category"] == "Raster"
    assert (REPO / g["icon"]).is_file()
    assert not QIcon(resource_path("icon.svg")).isNull()


def test_init_gui_and_unload(qgis_iface):
    main = qgis_iface.mainWindow()
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        assert isinstance(p.action, QAction)
        assert p.action.text() == "Detect in extent"
        assert not p.action.icon().isNull()
        assert main.findChild(QAction, ACTION_NAME) is p.action
        assert p.action in p.toolbar.actions()
        assert main.findChild(QToolBar, TOOLBAR_NAME) is p.toolbar
        dock = main.findChild(QDockWidget, "OrtholensDock")
        assert dock is p.dock
        assert p.dock.detection.detect_button.text() == "Detect in extent"
        # before the daemon lists its models no number that is not the model's is shown
        assert not p.dock.models.threshold_spin.isEnabled()
        assert p.dock.models.threshold_spin.text() == "model's value"
        assert p.dock.models.min_area_spin.text() == "model's value"
        assert p.dock.models.options() == {}
        assert not p.dock.detection.cancel_button.isEnabled()
        # The status ping (no daemon at ORTHOLENS_ENDPOINT) ends with the "not running" line.
        assert wait_until(lambda: p.status_task is None
                          and "Checking" not in p.dock.status.status_label.text())
        assert p.dock.status.status_label.text() == NOT_RUNNING
    finally:
        p.unload()
    flush_deletes()
    assert p.action is None and p.dock is None and p.toolbar is None
    assert main.findChild(QAction, ACTION_NAME) is None
    assert main.findChild(QToolBar, TOOLBAR_NAME) is None
    assert main.findChild(QDockWidget, "OrtholensDock") is None
