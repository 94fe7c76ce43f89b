"""The dock's model section: the model list, the card's threshold and minimum area
unless the user sets one, the line about the selected model."""

from __future__ import annotations

from helpers import flush_deletes


def test_dock_models_fill_defaults(qgis_iface):
    from plugin.dock.panel import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    models = dock.models
    try:
        assert models.options() == {}  # no card: the daemon's defaults apply
        cards = [{"id": "pv-unet-efl0", "version": "1.0.0", "gsd_m": 0.1, "threshold": 0.35,
                  "min_area_m2": 2.0, "architecture": "Unet", "encoder": "resnet18",
                  "classes": [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]}]
        models.set_models(cards)
        assert models.model_combo.count() == 1
        assert "pv-unet-efl0" in models.model_combo.itemText(0)
        assert "photovoltaic" in models.model_combo.itemText(0)
        assert models.current_model_id() == "pv-unet-efl0"
        # the card's values are shown, and not sent: the daemon applies the card's own
        assert models.threshold_spin.value() == 0.35 and models.min_area_spin.value() == 2.0
        assert models.options() == {}
        assert not models.threshold.button.isEnabled()
        # a value the user sets is sent, and survives the next listing of the models
        models.threshold_spin.setValue(0.4)
        assert models.options() == {"threshold": 0.4}
        models.set_models(cards)
        assert models.options() == {"threshold": 0.4} and models.threshold_spin.value() == 0.4
        models.threshold.button.click()  # "Reset": back to the card's value
        assert models.threshold_spin.value() == 0.35 and models.options() == {}
        models.min_area_spin.setValue(3.0)
        assert models.options() == {"min_area_m2": 3.0}
        # another model shows its own values again
        models.set_models(cards + [dict(cards[0], id="pv-fpn-efl0", threshold=0.45)])
        models.model_combo.setCurrentIndex(models.model_combo.findData("pv-fpn-efl0"))
        assert models.threshold_spin.value() == 0.45 and models.options() == {}
        dock.set_busy(True)
        assert dock.detection.cancel_button.isEnabled()
        assert not dock.detection.detect_button.isEnabled()
    finally:
        dock.deleteLater()
        flush_deletes()


def test_model_selector_describes_members_and_ensembles():
    from plugin.dock.models import describe_card
    single = {"id": "pv-unet-efl0", "architecture": "Unet", "encoder": "resnet18", "gsd_m": 0.1}
    ens = {"id": "pv-ensemble", "kind": "ensemble", "gsd_m": 0.1, "shifts": True,
           "tta": ["identity", "hflip", "vflip", "rot90"],
           "members": [{"id": "pv-unet-efl0"}, {"id": "pv-fpn-efl0"}]}
    assert describe_card(single) == "Unet resnet18, 0.1 m/pixel"
    assert describe_card(ens) == ("Ensemble of pv-unet-efl0, pv-fpn-efl0; 4 test-time "
                                  "augmentations, shifted tilings, 0.1 m/pixel")


def test_model_selector_starts_on_the_daemons_default(qgis_iface):
    """With no earlier choice, the dock selects the card the daemon flags as default."""
    from plugin.dock.panel import OrtholensDock
    dock = OrtholensDock()
    dock.models.set_models([{"id": "pv-dlv3p-efl0", "gsd_m": 0.1},
                            {"id": "pv-ensemble", "kind": "ensemble", "gsd_m": 0.1},
                            {"id": "pv-unet-efl0", "gsd_m": 0.1, "default": True}])
    assert dock.models.current_model_id() == "pv-unet-efl0"
