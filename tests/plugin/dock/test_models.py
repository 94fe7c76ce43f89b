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


def _gsd_cards():
    base = {"version": "1.0.0", "architecture": "Unet", "encoder": "efficientnet-lite0",
            "threshold": 0.5, "min_area_m2": 1.0,
            "classes": [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]}
    return [dict(base, id="pv-fine", gsd_m=0.1, gsd_range_m=[0.05, 0.15], gsd_candidate=0,
                 default=True),
            dict(base, id="pv-coarse", gsd_m=0.2, gsd_range_m=[0.15, 0.5],
                 gsd_candidate=1, threshold=0.4),
            dict(base, id="pv-other", gsd_m=0.1, gsd_candidate=None)]


def test_automatic_entry_follows_the_layer_gsd_until_a_model_is_chosen(qgis_iface):
    from plugin.dock.models import AUTO, AUTO_TEXT
    from plugin.dock.panel import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    models = dock.models
    try:
        models.set_models(_gsd_cards())
        # the list starts with the automatic entry, selected
        assert models.model_combo.itemText(0) == AUTO_TEXT and models.is_automatic()
        assert models.model_combo.count() == 4
        # no raster layer: the first candidate, and the line says so
        assert models.current_model_id() == "pv-fine"
        assert "until a raster layer is active" in models.model_info.text()
        models.set_layer_gsd(0.1)
        assert models.current_model_id() == "pv-fine"
        assert "pv-fine: the layer's GSD is 0.10 m; pv-fine serves 0.05-0.15 m" in \
            models.model_info.text()
        models.set_layer_gsd(0.3)  # a 0.3 m orthophoto: the coarse model, its threshold
        assert models.current_model_id() == "pv-coarse"
        assert models.threshold_spin.value() == 0.4
        assert "0.30 m" in models.model_info.text() and "pv-coarse" in \
            models.model_info.text()
        assert not models.model_info.text().startswith("Warning")
        models.set_layer_gsd(1.0)  # outside every range: the nearest, with a warning
        assert models.current_model_id() == "pv-coarse"
        info = models.model_info.text()
        assert info.startswith("Warning: pv-coarse: ") and "outside every model's range" in info
        # listing the models again keeps the automatic entry
        models.set_models(_gsd_cards())
        assert models.is_automatic() and models.current_model_id() == "pv-coarse"
        # a model the user picks wins over the layer's GSD
        models.model_combo.setCurrentIndex(models.model_combo.findData("pv-fine"))
        assert not models.is_automatic() and models.current_model_id() == "pv-fine"
        models.set_layer_gsd(0.3)
        assert models.current_model_id() == "pv-fine"
        assert "outside" not in models.model_info.text()
        models.set_models(_gsd_cards())
        assert models.current_model_id() == "pv-fine"
        assert models.model_combo.currentData() != AUTO
    finally:
        dock.deleteLater()
        flush_deletes()


def test_no_automatic_entry_without_gsd_candidates(qgis_iface):
    from plugin.dock.models import AUTO_TEXT
    from plugin.dock.panel import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    try:
        cards = [dict(c, gsd_candidate=None) for c in _gsd_cards()]
        dock.models.set_models(cards)
        assert dock.models.model_combo.count() == 3
        assert AUTO_TEXT not in [dock.models.model_combo.itemText(i) for i in range(3)]
        assert not dock.models.is_automatic()
        one = [dict(c, gsd_candidate=0 if c["id"] == "pv-fine" else None)
               for c in _gsd_cards()]  # the default model alone: nothing to choose
        dock.models.set_models(one)
        assert dock.models.model_combo.count() == 3 and not dock.models.is_automatic()
    finally:
        dock.deleteLater()
        flush_deletes()


def test_layer_gsd_of_real_rasters(qgis_iface, vienna_path):
    """The dock's layer GSD of a pv01 tile (0.1 m, a metre CRS) and the Vienna scene
    (0.3 m), as QGIS opens them."""
    import pytest
    from qgis.core import QgsRasterLayer

    from helpers import PV01_HELDOUT
    from plugin.detect.crs import layer_gsd

    for path, want in ((PV01_HELDOUT, 0.1), (vienna_path, 0.3)):
        if not path.is_file():
            pytest.skip(f"needs {path}")
        layer = QgsRasterLayer(str(path), path.stem)
        assert layer.isValid()
        assert layer_gsd(layer) == pytest.approx(want, rel=0.02)
