"""The dock: its sections in order, room for more, and a running job disabling what
must wait."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QLabel

from helpers import flush_deletes


def test_sections_in_order_and_a_new_one_goes_last(qgis_iface):
    from plugin.dock.panel import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    try:
        column = dock.body().layout()
        sections = [dock.status, dock.models, dock.detection, dock.versions]
        assert [column.itemAt(i).widget() for i in range(4)] == sections
        extra = dock.add_section(QLabel("more", dock.body()))
        assert column.itemAt(4).widget() is extra
        assert column.itemAt(5).spacerItem() is not None  # the free space stays last
    finally:
        dock.deleteLater()
        flush_deletes()


def test_a_running_job_disables_detect_retrain_and_the_version_buttons(qgis_iface):
    from plugin.dock.panel import OrtholensDock

    dock = OrtholensDock(qgis_iface.mainWindow())
    try:
        dock.models.set_models([{"id": "m@1", "lineage": {"number": 1}},
                                {"id": "m", "lineage": {"active": True, "number": 0}}])
        dock.models.prefer_model("m@1")
        versions = dock.versions
        assert versions.activate_button.isEnabled() and versions.retrain_button.isEnabled()
        dock.detection.set_progress(40)
        dock.set_busy(True)
        assert dock.detection.cancel_button.isEnabled()
        assert dock.detection.progress.value() == 0
        assert not dock.detection.detect_button.isEnabled()
        assert not versions.retrain_button.isEnabled()
        assert not versions.activate_button.isEnabled()
        assert versions.activate_button.toolTip() == "Wait until the running job has finished"
        dock.set_busy(False)
        assert versions.activate_button.isEnabled() and dock.detection.detect_button.isEnabled()
    finally:
        dock.deleteLater()
        flush_deletes()
