"""A GIS analyst's first minutes: the dock starts the daemon and shows its default model
before the first click, that click runs exactly what is shown, a missing engine says
where to set it up, the settings dialog stores what the user types, and the result file
can be found."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QApplication, QPushButton
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsSettings

from helpers import (BACKEND_PYTHON, PV01_HELDOUT, free_port, record_requests, show_layer,
                     wait_until)

SETTING_KEYS = ("endpoint", "repo", "python", "token", "token_authcfg", "results_dir",
                "autostart", "precision")


@pytest.fixture
def clean_settings():
    """The Ortholens QGIS settings (and a stored token) are empty before and after the
    test."""
    from plugin.settings import forget_token

    qs = QgsSettings()
    forget_token()
    for k in SETTING_KEYS:
        qs.remove(f"ortholens/{k}")
    yield qs
    forget_token()
    for k in SETTING_KEYS:
        qs.remove(f"ortholens/{k}")


@pytest.mark.e2e
@pytest.mark.skipif(not BACKEND_PYTHON.is_file(), reason=f"needs {BACKEND_PYTHON}")
def test_first_click_runs_the_default_model_with_the_values_shown(
        qgis_iface, qgis_new_project, tmp_path, monkeypatch, clean_settings):
    """Nothing runs when QGIS starts; the dock starts the daemon, lists its models with
    the daemon's default selected; Detect pressed while it starts waits, then runs that
    model with the threshold and minimum area the dock shows; the layer says so."""
    import plugin

    monkeypatch.setenv("ORTHOLENS_ENDPOINT", f"tcp://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ORTHOLENS_AUTOSTART", "1")
    monkeypatch.setenv("ORTHOLENS_RESULTS", str(tmp_path / "my results"))
    layer = show_layer(qgis_iface, PV01_HELDOUT, "heldout")
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        assert wait_until(lambda: p.status_task is not None, 60)
        assert p.status_task.start and "Starting" in p.dock.status.status_label.text()
        assert p.detect() is None and p.pending_detect  # waits for the model list
        assert not p.dock.detection.detect_button.isEnabled()
        assert wait_until(lambda: p.last_task is not None, 240), p.dock.detection.message()
        task = p.last_task
        assert task.layer is not None, task.error
        default = next(c for c in task.cards if c.get("default"))
        assert task.model_id == default["id"] == task.card["id"]
        shown = p.dock.models.current_card()
        assert shown["id"] == default["id"]
        stats = task.result["stats"]
        assert p.dock.models.threshold_spin.value() == pytest.approx(stats["threshold"])
        assert p.dock.models.min_area_spin.value() == pytest.approx(stats["min_area_m2"])
        assert stats["threshold"] == pytest.approx(default["threshold"])
        assert task.layer.customProperty("ortholens/model") == default["id"]
        assert float(task.layer.customProperty("ortholens/threshold")) == pytest.approx(
            stats["threshold"])
        abstract = task.layer.metadata().abstract()
        assert default["id"] in abstract and f"threshold {stats['threshold']:g}" in abstract
        # the results folder the user chose, shown and copyable
        assert Path(task.out_path).parent == (tmp_path / "my results").resolve()
        assert (p.dock.detection.result_box.isVisibleTo(p.dock)
                or p.dock.detection.result_path == task.out_path)
        p.dock.detection.copy_path_button.click()
        assert QApplication.clipboard().text() == task.out_path
        assert p.dock.detection.result_label.toolTip() == task.out_path
        bar = qgis_iface.messageBar()
        assert wait_until(lambda: any(f"with {default['id']} v" in m
                                      for m in bar.get_messages(Qgis.Success)), 5), \
            bar.get_messages(Qgis.Success)
        proc = p.daemon_process
        assert proc is not None and proc.poll() is None  # the plugin started it...
    finally:
        p.unload()
    assert proc.wait(20) is not None  # ...and stops it again
    assert layer.isValid()


def test_no_engine_says_where_to_set_it_up(qgis_iface, qgis_new_project, tmp_path,
                                          monkeypatch, clean_settings, vienna_path):
    """A zip install without an engine: the dock says so at once, and Detect fails
    without sending a request (so without waiting for an answer) with a message that
    names Settings and carries its button."""
    import plugin
    from plugin.dock.status import NO_ENGINE, NOT_SET_UP

    monkeypatch.setenv("ORTHOLENS_ENDPOINT", f"tcp://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ORTHOLENS_AUTOSTART", "1")
    monkeypatch.setenv("ORTHOLENS_REPO", str(tmp_path))  # holds no backend/
    show_layer(qgis_iface, vienna_path, "vienna")
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        assert wait_until(lambda: p.dock.status.status_label.text() == NOT_SET_UP, 10), \
            p.dock.status.status_label.text()
        bar = qgis_iface.messageBar()
        sent = record_requests(monkeypatch)
        task = p.detect()
        assert task is not None
        assert wait_until(lambda: p.task is None, 60)  # a hang guard
        assert sent == []  # nothing listens on the loopback port: nothing was asked
        assert task.error and "Settings" in task.error and task.unreachable
        assert wait_until(lambda: bar.currentItem() is not None, 5)
        item = bar.currentItem()
        assert item is not None and "Settings" in item.text()
        button = item.findChild(QPushButton, "ortholensMessageSettings")
        assert button is not None and button.text() == "Settings…"
        button.click()
        assert p.settings_dialog.isVisible()
        p.settings_dialog.reject()
        # until an engine is set up, Detect and Retrain wait, saying why
        assert p.dock.detection.progress.value() == 0
        for button in (p.dock.detection.detect_button, p.dock.versions.retrain_button):
            assert not button.isEnabled() and button.toolTip() == NO_ENGINE
    finally:
        p.unload()


def test_settings_dialog_stores_checked_values(qgis_iface, tmp_path, monkeypatch,
                                               clean_settings, qgis_auth):
    """Typed values are checked, stored in QGIS settings (the token in its
    authentication database) and used; a field an environment variable overrides is
    read-only and says so."""
    from plugin.settings import autostart, daemon_settings, results_dir
    from plugin.settings_dialog import OrtholensOptionsFactory, SettingsDialog

    for env in ("ORTHOLENS_REPO", "ORTHOLENS_PYTHON", "ORTHOLENS_BACKEND_PYTHON",
                "ORTHOLENS_RESULTS", "ORTHOLENS_TOKEN", "ORTHOLENS_AUTOSTART",
                "ORTHOLENS_PRECISION"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("ORTHOLENS_ENDPOINT", "tcp://127.0.0.1:1")
    dlg = SettingsDialog()
    form = dlg.form
    assert not form.endpoint.isEnabled()
    assert form.findChild(type(dlg.problems), "ortholensEnvNote_endpoint") is not None
    form.python.setFilePath(str(tmp_path / "missing-python"))
    form.repo.setFilePath(str(tmp_path))
    dlg.accept()
    assert dlg.result() == 0 and "does not exist" in dlg.problems.text()
    assert "backend/" in dlg.problems.text()
    assert QgsSettings().value("ortholens/python", "") == ""  # nothing stored
    (tmp_path / "backend").mkdir()
    form.python.setFilePath(str(BACKEND_PYTHON))
    form.repo.setFilePath(str(tmp_path))
    form.token.setText("s3cret")
    form.results_dir.setFilePath(str(tmp_path / "out"))
    form.autostart.setChecked(False)
    assert not form.fp32.isChecked()  # INT8 graphs where a card keeps them, by default
    form.fp32.setChecked(True)
    dlg.accept()
    assert dlg.result() == 1, dlg.problems.text()
    s = daemon_settings()
    assert s.python == str(BACKEND_PYTHON) and s.repo == str(tmp_path)
    assert s.token == "s3cret" and results_dir() == str(tmp_path / "out")
    assert QgsSettings().value("ortholens/token", "") == ""  # never in plain settings
    assert not autostart()
    assert s.precision == "fp32" and s.start_args()[-2:] == ["--precision", "fp32"]
    # the same form is the Settings > Options page; it never shows the token
    page = OrtholensOptionsFactory().createWidget(None)
    assert page.form.token.text() == "" and "stored" in page.form.token.placeholderText()
    page.apply()  # an empty field keeps it
    assert daemon_settings().token == "s3cret"
    page.form.forget_token.setChecked(True)
    page.apply()
    assert daemon_settings().token is None


def test_settings_are_reachable_from_the_dock_and_options(qgis_iface, clean_settings):
    import plugin

    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        qgis_iface.registerOptionsWidgetFactory.assert_called_with(p.options_factory)
        assert p.options_factory.title() == "Ortholens"
        p.dock.status.settings_button.click()
        QCoreApplication.processEvents()
        assert p.settings_dialog.isVisible()
        assert p.settings_dialog.windowTitle() == "Ortholens settings"
        p.settings_dialog.reject()
    finally:
        p.unload()
    qgis_iface.unregisterOptionsWidgetFactory.assert_called()


def test_dock_shows_the_band_mapping_of_the_active_raster(qgis_iface, qgis_new_project,
                                                          tmp_path, clean_settings):
    """BGR bands named by their colour interpretation: the dock shows 3, 2, 1."""
    from osgeo import gdal

    import plugin

    path = tmp_path / "bgr.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.1, 0, 5339000.0, 0, -0.1))
    for i, ci in enumerate((gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand)):
        ds.GetRasterBand(i + 1).SetColorInterpretation(ci)
    ds = None
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    try:
        layer = QgsRasterLayer(str(path), "bgr", "gdal")
        QgsProject.instance().addMapLayer(layer)
        p._layer_changed(layer)
        assert p.dock.models.bands_label.text() == "3, 2, 1"
        p._layer_changed(None)
        assert p.dock.models.bands_label.text() == ""
    finally:
        p.unload()
