"""The plugin loads into QGIS, adds its action, toolbar and dock, and unloads cleanly."""

from __future__ import annotations

import configparser

from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar

import plugin
from plugin.dock import NOT_RUNNING
from plugin.main import ACTION_NAME, TOOLBAR_NAME
from plugin.settings import resource_path

from helpers import REPO, wait_until


def _flush_deletes():
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


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
        assert p.dock.detect_button.text() == "Detect in extent"
        # before the daemon lists its models no number that is not the model's is shown
        assert not p.dock.threshold_spin.isEnabled()
        assert p.dock.threshold_spin.text() == "model's value"
        assert p.dock.min_area_spin.text() == "model's value"
        assert p.dock.options() == {}
        assert not p.dock.cancel_button.isEnabled()
        # The status ping (no daemon at ORTHOLENS_ENDPOINT) ends with the "not running" line.
        assert wait_until(lambda: p.status_task is None and "Checking" not in p.dock.status_label.text())
        assert p.dock.status_label.text() == NOT_RUNNING
    finally:
        p.unload()
    _flush_deletes()
    assert p.action is None and p.dock is None and p.toolbar is None
    assert main.findChild(QAction, ACTION_NAME) is None
    assert main.findChild(QToolBar, TOOLBAR_NAME) is None
    assert main.findChild(QDockWidget, "OrtholensDock") is None


def test_dock_models_fill_defaults(qgis_iface):
    from plugin.dock import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    try:
        assert dock.options() == {}  # no card: the daemon's defaults apply
        cards = [{"id": "pv-unet-efl0", "version": "1.0.0", "gsd_m": 0.1, "threshold": 0.35,
                  "min_area_m2": 2.0, "architecture": "Unet", "encoder": "resnet18",
                  "classes": [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]}]
        dock.set_models(cards)
        assert dock.model_combo.count() == 1
        assert "pv-unet-efl0" in dock.model_combo.itemText(0)
        assert "photovoltaic" in dock.model_combo.itemText(0)
        assert dock.current_model_id() == "pv-unet-efl0"
        # the card's values are shown, and not sent: the daemon applies the card's own
        assert dock.threshold_spin.value() == 0.35 and dock.min_area_spin.value() == 2.0
        assert dock.options() == {}
        assert not dock.threshold.button.isEnabled()
        # a value the user sets is sent, and survives the next listing of the models
        dock.threshold_spin.setValue(0.4)
        assert dock.options() == {"threshold": 0.4}
        dock.set_models(cards)
        assert dock.options() == {"threshold": 0.4} and dock.threshold_spin.value() == 0.4
        dock.threshold.button.click()  # "Reset": back to the card's value
        assert dock.threshold_spin.value() == 0.35 and dock.options() == {}
        dock.min_area_spin.setValue(3.0)
        assert dock.options() == {"min_area_m2": 3.0}
        # another model shows its own values again
        dock.set_models(cards + [dict(cards[0], id="pv-fpn-efl0", threshold=0.45)])
        dock.model_combo.setCurrentIndex(dock.model_combo.findData("pv-fpn-efl0"))
        assert dock.threshold_spin.value() == 0.45 and dock.options() == {}
        dock.set_busy(True)
        assert dock.cancel_button.isEnabled() and not dock.detect_button.isEnabled()
    finally:
        dock.deleteLater()
        _flush_deletes()


def test_model_selector_describes_members_and_ensembles():
    from plugin.dock import describe_card
    single = {"id": "pv-unet-efl0", "architecture": "Unet", "encoder": "resnet18", "gsd_m": 0.1}
    ens = {"id": "pv-ensemble", "kind": "ensemble", "gsd_m": 0.1, "shifts": True,
           "tta": ["identity", "hflip", "vflip", "rot90"],
           "members": [{"id": "pv-unet-efl0"}, {"id": "pv-fpn-efl0"}]}
    assert describe_card(single) == "Unet resnet18, 0.1 m/pixel"
    assert describe_card(ens) == ("Ensemble of pv-unet-efl0, pv-fpn-efl0; 4 test-time "
                                  "augmentations, shifted tilings, 0.1 m/pixel")


def test_model_selector_starts_on_the_daemons_default(qgis_iface):
    """With no earlier choice, the dock selects the card the daemon flags as default."""
    from plugin.dock import OrtholensDock
    dock = OrtholensDock()
    dock.set_models([{"id": "pv-dlv3p-efl0", "gsd_m": 0.1},
                     {"id": "pv-ensemble", "kind": "ensemble", "gsd_m": 0.1},
                     {"id": "pv-unet-efl0", "gsd_m": 0.1, "default": True}])
    assert dock.current_model_id() == "pv-unet-efl0"
