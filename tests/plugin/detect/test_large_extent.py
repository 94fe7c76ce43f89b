"""An extent too large for Detect in extent: the refusal names the algorithm that takes
it, and the message bar offers Run as a batch job… (Detect objects on that layer and
extent)."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QPushButton
from qgis.core import Qgis

from helpers import CARD, FakeClient, show_layer, wait_until

TOO_LARGE = ("the extent is too large for one in-extent detection: 47194 x 8195 px at "
             "0.1 m (387 Mpx > 64 Mpx); zoom in, or run it as a batch job (Processing › "
             "Ortholens › Detect objects)")


class _Refusing(FakeClient):
    def detect(self, *args, **kw):
        from protocol.errors import DaemonError
        raise DaemonError(TOO_LARGE, "invalid_input")


def test_a_large_extent_is_refused_with_a_batch_job_offered(qgis_iface, vienna_path,
                                                            qgis_new_project, monkeypatch):
    import plugin
    from plugin import tasks
    monkeypatch.setattr(tasks, "connect_daemon", lambda *a, **k: _Refusing([CARD], {}))
    layer = show_layer(qgis_iface, vienna_path, "vienna")
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    opened = []
    try:
        p.jobs.batch_dialog = opened.append  # what the button opens, without a dialog
        p.dock.models.set_models([CARD])
        assert p.detect() is not None
        assert wait_until(lambda: p.task is None, 30)
        assert "Processing › Ortholens › Detect objects" in p.dock.detection.message()
        bar = qgis_iface.messageBar()
        assert wait_until(lambda: bar.currentItem() is not None and bar.currentItem()
                          .findChild(QPushButton, "ortholensRunAsBatch") is not None, 5)
        item = bar.currentItem()
        assert "as a batch job" in item.text() and item.level() == Qgis.Warning
        button = item.findChild(QPushButton, "ortholensRunAsBatch")
        assert button.text() == "Run as a batch job…"
        button.click()
        assert opened and opened[0].layer_id == layer.id() and opened[0].extent is not None
    finally:
        p.unload()
