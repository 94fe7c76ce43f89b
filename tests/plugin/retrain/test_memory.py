"""What a result layer remembers of its detection, and the user's edits counted
against it."""

from __future__ import annotations

from qgis.core import QgsFeature, QgsGeometry

from helpers import CLASSES, square

CLASSES2 = CLASSES + [{"id": 2, "name": "solar_thermal", "color": "#1f77b4"}]


def test_edits_are_counted_against_the_detection(plugin_with_result):
    """One of each edit on the three detected polygons, plus one drawn: the dialog counts
    exactly those, saved or still in the edit buffer."""
    from plugin.retrain.dialogs import RetrainDialog
    from plugin.retrain.memory import count_edits
    from plugin.retrain.plan import prepare_retrain
    _, layer = plugin_with_result
    assert count_edits(layer).total == 0
    plan = prepare_retrain(layer, CLASSES)
    assert "You have not edited this layer" in plan.summary()
    a, b, c = sorted(layer.getFeatures(), key=lambda f: f.geometry().boundingBox().xMinimum())
    layer.startEditing()
    layer.deleteFeature(c.id())                                               # deleted
    layer.changeGeometry(a.id(), QgsGeometry.fromWkt(square(-1608, 338492, 3)))   # reshaped
    layer.changeAttributeValue(b.id(), layer.fields().indexOf("class"), "solar_thermal")
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromWkt(square(-1592, 338505, 2)))
    f.setAttribute("class", "photovoltaic")
    layer.addFeature(f)                                                       # added
    e = count_edits(layer)  # unsaved edits count too
    assert (e.deleted, e.added, e.reshaped, e.reclassified, e.kept) == (1, 1, 1, 1, 0)
    assert layer.commitChanges()
    plan = prepare_retrain(layer, CLASSES2)
    assert plan.edits.text() == "1 deleted, 1 added, 1 reshaped, 1 reclassified"
    assert len(plan.features) == 3
    dlg = RetrainDialog(plan)
    assert "Your edits: 1 deleted, 1 added, 1 reshaped, 1 reclassified." in \
        dlg.summary_label.text()
    assert "95" not in dlg.summary_label.text()
