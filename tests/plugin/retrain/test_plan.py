"""What a retrain sends: a corrected result layer becomes a plan (the polygons, the
reviewed areas clipped to the raster and the map view, the edits), with clear errors for
what cannot be retrained."""

from __future__ import annotations

import json

import pytest
from qgis.core import QgsProject, QgsRectangle

from helpers import CLASSES, DEFAULT_MODEL

MODEL = DEFAULT_MODEL


def test_result_layer_remembers_its_detection_and_becomes_a_plan(plugin_with_result, correct):
    from plugin.retrain.dialogs import RetrainDialog
    from plugin.retrain.memory import PROP
    from plugin.retrain.plan import prepare_retrain
    from protocol.errors import InputError
    p, layer = plugin_with_result
    assert layer.customProperty(PROP + "model") == MODEL
    reviewed = json.loads(layer.customProperty(PROP + "reviewed"))
    assert reviewed[0]["extent"] == [-1610, 338490, -1590, 338510]
    correct(layer)
    plan = prepare_retrain(layer, CLASSES)
    assert plan.model == MODEL and plan.source.kind == "file"
    assert len(plan.features) == 4 and plan.by_class == {"photovoltaic": 4}
    assert plan.invalid == 1 and "2 feature(s) without a class" in plan.notes[0]
    assert abs(plan.reviewed_m2 - 400.0) < 1e-6
    # the user's edits are counted, not the layer's features
    assert "Your edits: 1 deleted, 2 added, 0 reshaped, 0 reclassified." in plan.summary()
    assert "400 m²" in plan.summary() and "4 polygons" in plan.summary()
    dlg = RetrainDialog(plan)
    assert dlg.budget_s() == 120.0 and dlg.options() == {"invalid_geometry": "repair",
                                                         "activate": True, "scope": "area",
                                                         "mode": "extent"}
    assert "1 with an invalid geometry" in dlg.summary_label.text()
    assert "whole retrain" in dlg.budget_note.text()
    # only the part of the extent in the map view
    part = prepare_retrain(layer, CLASSES, view_extent=QgsRectangle(-1600, 338490, -1580, 338510),
                           view_crs=layer.crs())
    assert part.reviewed[0].extent == (-1600, 338490, -1590, 338510)
    with pytest.raises(InputError, match="no reviewed area|No reviewed area"):
        prepare_retrain(layer, CLASSES, view_extent=QgsRectangle(0, 0, 1, 1),
                        view_crs=layer.crs())
    # a class the model does not know, or a layer that is no result layer
    layer.startEditing()
    f = next(layer.getFeatures())
    layer.changeAttributeValue(f.id(), layer.fields().indexOf("class"), "roof")
    layer.commitChanges()
    with pytest.raises(InputError, match="Unknown class"):
        prepare_retrain(layer, CLASSES)
    with pytest.raises(InputError, match="not an Ortholens result layer"):
        prepare_retrain(QgsProject.instance().mapLayersByName("vienna")[0], CLASSES)


def test_reviewed_area_is_clipped_to_the_raster(plugin_with_result, vienna_layer):
    """A detection in a map view larger than the 500 m x 500 m raster (and one in a map
    view of another CRS): the reviewed area is the raster's 0.25 km², not the view's."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    from plugin.detect.plan import prepare_detect
    from plugin.retrain.memory import PROP, remember_detection
    from plugin.retrain.plan import prepare_retrain
    _, layer = plugin_with_result
    raster_m2 = vienna_layer.extent().width() * vienna_layer.extent().height()
    assert abs(raster_m2 - 250000.0) < 1.0
    view = QgsRectangle(-1900, 338200, -1100, 338900)  # 0.56 km² of canvas
    remember_detection(layer, prepare_detect(vienna_layer, view, vienna_layer.crs()), MODEL)
    plan = prepare_retrain(layer, CLASSES)
    assert abs(plan.reviewed_m2 - raster_m2) < 0.001 * raster_m2, plan.reviewed_m2
    assert "0.250 km²" in plan.summary()
    # the canvas in Web Mercator, wider than the raster
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    to_merc = QgsCoordinateTransform(vienna_layer.crs(), merc, QgsProject.instance())
    remember_detection(layer, prepare_detect(vienna_layer, to_merc.transformBoundingBox(view),
                                             merc), MODEL)
    plan = prepare_retrain(layer, CLASSES)
    assert abs(plan.reviewed_m2 - raster_m2) < 0.001 * raster_m2, plan.reviewed_m2
    # a layer remembered with the unclipped view (before clipping was done) is clipped too
    layer.setCustomProperty(PROP + "reviewed", json.dumps([{"extent": [-1900, 338200, -1100,
                                                                       338900]}]))
    plan = prepare_retrain(layer, CLASSES)
    assert abs(plan.reviewed_m2 - raster_m2) < 0.001 * raster_m2, plan.reviewed_m2


def test_a_partial_review_sends_the_review_states_and_only_vouched_candidates(
        plugin_with_result):
    """Reviewed in the queue: one polygon accepted, one deleted (it stays in the layer),
    one candidate miss still pending. The plan is a partial review sending every
    polygon with its state; a whole-extent review leaves the pending candidate out."""
    from qgis.core import QgsGeometry

    from helpers import square
    from plugin.layers.review import add_polygon, set_review
    from plugin.retrain.dialogs import RetrainDialog
    from plugin.retrain.plan import prepare_retrain
    from protocol.params import FileSource
    p, layer = plugin_with_result
    ids = [f.id() for f in layer.getFeatures()]
    set_review(layer, ids[0], "accepted")
    set_review(layer, ids[1], "deleted")
    cand = add_polygon(layer, QgsGeometry.fromWkt(square(-1595, 338495, 2.0)),
                       {"class": "photovoltaic", "class_id": 1, "origin": "candidate",
                        "review": "pending"})
    assert cand >= 0
    plan = prepare_retrain(layer, CLASSES)
    assert plan.mode == "review" and plan.queued == 2
    assert (plan.reviewed_count, plan.pending_count) == (2, len(ids) - 1)
    assert "You reviewed 2 polygons" in plan.summary() and "2 m" in plan.summary()
    params = plan.params(FileSource("/x.tif"), 60.0)
    states = [f.review for f in params.features]
    assert params.mode == "review" and len(states) == len(ids) + 1
    assert states.count("accepted") == 1 and states.count("deleted") == 1
    whole = plan.params(FileSource("/x.tif"), 60.0, mode="extent")
    assert whole.mode == "extent" and len(whole.features) == len(ids)
    dlg = RetrainDialog(plan)
    assert dlg.options()["mode"] == "review"
    dlg.mode_combo.setCurrentIndex(1)
    assert dlg.options()["mode"] == "extent" and "are the truth" in dlg.summary_label.text()
