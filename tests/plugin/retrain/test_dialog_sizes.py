"""The retrain dialogs before and after: a warning, before the budget is spent, when
the held-out part will hold fewer objects than a verdict needs; a result window whose
table is shown whole."""

from __future__ import annotations

from helpers import CLASSES, flush_deletes
from retrain_helpers import UNDECIDED


def test_the_dialog_warns_when_too_few_objects_will_be_held_out(plugin_with_result, correct):
    from plugin.retrain.dialogs import RetrainDialog
    from plugin.retrain.plan import prepare_retrain
    from protocol.holdout import MIN_HOLDOUT_OBJECTS
    _, layer = plugin_with_result
    correct(layer)
    plan = prepare_retrain(layer, CLASSES)
    # one 20 m x 20 m area: its bottom quarter is held out, the engine's own cut
    n = plan.held_out_objects()
    assert 0 < n < MIN_HOLDOUT_OBJECTS
    dlg = RetrainDialog(plan)
    try:
        assert dlg.holdout_label.isVisibleTo(dlg)
        text = dlg.holdout_label.text()
        assert f"about {n} object" in text and f"at least {MIN_HOLDOUT_OBJECTS}" in text
        assert "without a verdict" in text
    finally:
        dlg.deleteLater()
        flush_deletes()


def test_the_result_window_shows_its_whole_table(qgis_iface):
    from qgis.PyQt.QtWidgets import QApplication
    from plugin.retrain.dialogs import RetrainResultDialog
    dlg = RetrainResultDialog(UNDECIDED, qgis_iface.mainWindow(), on_keep=lambda p: None)
    try:
        dlg.show()
        QApplication.processEvents()
        label = dlg.label
        assert label.height() >= label.heightForWidth(label.width())
        assert label.height() >= label.sizeHint().height()
    finally:
        dlg.close()
        dlg.deleteLater()
        flush_deletes()
