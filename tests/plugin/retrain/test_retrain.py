"""Retrain on the plugin side: the corrected layer's retrain request goes through its
dialog (budget and what is used), the job runs as a QgsTask with progress and cancel
against a daemon, the outcome is shown and the new version selected; versions are
switched and rolled back from the dock. (The plan a corrected layer becomes:
test_plan.py; the edits counted: test_memory.py.)

The daemon here is ``backend.daemon.server.Server`` in a thread with a stand-in retrain
function (the real fine-tuning is tested in tests/backend/learning/test_retrain.py); the
versions requests are the real ones, over a user model folder in ``tmp_path``.
"""

from __future__ import annotations

import json
import time

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAction
from qgis.core import Qgis, QgsFeature, QgsGeometry, QgsProject, QgsRectangle

from helpers import CARD, CLASSES, DEFAULT_MODEL, VIENNA_PATCH, square, wait_until
from retrain_helpers import UNDECIDED, user_version

MODEL = DEFAULT_MODEL


def test_retrain_action_and_buttons_exist(plugin_with_result, qgis_iface):
    from plugin.retrain.controller import RETRAIN_ACTION
    p, _ = plugin_with_result
    act = qgis_iface.mainWindow().findChild(QAction, RETRAIN_ACTION)
    assert act is p.retrain.action and act.text() == "Retrain on corrections…"
    assert p.dock.versions.retrain_button.isEnabled()
    assert p.dock.versions.activate_button.text() == "Make active"
    assert p.dock.versions.rollback_button.text() == "Roll back"


def test_retrain_runs_as_a_task_and_selects_the_new_version(plugin_with_result, daemon,
                                                            qgis_iface, correct):
    p, layer = plugin_with_result
    _, stub, _ = daemon
    correct(layer)
    seen = {}

    def run_dialog(dlg):
        seen["summary"] = dlg.summary_label.text()
        dlg.budget_spin.setValue(1)
        return True

    p.retrain.exec_dialog = run_dialog
    qgis_iface.messageBar().clear_messages()
    qgis_iface.setActiveLayer(layer)
    values = []
    task = p.retrain.retrain()
    assert task is not None and not p.dock.detection.detect_button.isEnabled()
    task.progressChanged.connect(values.append)
    assert wait_until(lambda: p.retrain.task is None, 60)
    assert task.report and task.report["accepted"], task.error
    req = stub.requests[0]
    assert req["model"] == MODEL and req["budget_s"] == 60.0
    assert req["source"]["path"].endswith("vienna_44_2_ortho_2023_30cm.tif")
    assert len(req["features"]) == 4 and {f["class"] for f in req["features"]} == {"photovoltaic"}
    assert req["reviewed"][0]["extent"] == [-1610, 338490, -1590, 338510]
    assert req["invalid_geometry"] == "repair" and req["activate"] is True
    assert "Your edits: 1 deleted, 2 added" in seen["summary"]
    assert values and max(values) >= 50
    # before/after shown; the dock will select the new version at the next listing
    text = p.retrain.result_dialog.text()
    assert text.startswith(f"New version {MODEL}@1 kept and made active: object "
                           "errors on the held-out corrections 2 → 0.")
    assert "0.773" in text and "0.859" in text and "Took 40 s of the 60 s budget" in text
    assert p.retrain.result_dialog.isVisible()
    assert p.dock.detection.progress.value() == 100
    assert any(f"new version {MODEL}@1" in m
               for m in qgis_iface.messageBar().get_messages(Qgis.Success))
    p.dock.models.set_models([CARD, dict(CARD, id=f"{MODEL}@1", version="1.0.0+u1",
                                  lineage={"active": True, "number": 1})])
    assert p.dock.models.current_model_id() == f"{MODEL}@1"
    assert "[active]" in p.dock.models.model_combo.currentText()
    assert p.dock.detection.detect_button.isEnabled()


def test_retrain_cancel_from_the_dock(plugin_with_result, daemon):
    p, layer = plugin_with_result

    def run_dialog(dlg):
        dlg.budget_spin.setValue(59)  # the stub loops until cancelled
        return True

    p.retrain.exec_dialog = run_dialog
    task = p.retrain.retrain(layer)
    assert task is not None
    assert wait_until(lambda: task.progress() > 5, 30)
    p.dock.detection.cancel_button.click()
    assert wait_until(lambda: p.retrain.task is None, 30)
    assert task.cancelled and task.report is None
    assert "cancelled" in p.dock.detection.message().lower()
    assert p.dock.detection.progress.value() == 0  # no stale bar beside the message


def test_versions_make_active_and_roll_back_from_the_dock(plugin_with_result, daemon):
    p, _ = plugin_with_result
    _, _, users = daemon
    user_version(users)
    p.refresh_status()
    assert wait_until(lambda: p.dock.models.model_combo.findData(f"{MODEL}@1") >= 0, 30)
    p.dock.models.model_combo.setCurrentIndex(p.dock.models.model_combo.findData(f"{MODEL}@1"))
    # the shipped model is still active: Make active for @1, nothing to roll back yet
    versions = p.dock.versions
    assert versions.activate_button.isEnabled() and not versions.rollback_button.isEnabled()
    p.dock.versions.activate_button.click()
    assert wait_until(lambda: p.retrain.versions_task is None and p.status_task is None
                 and "[active]" in p.dock.models.model_combo.currentText(), 30)
    assert p.dock.models.current_model_id() == f"{MODEL}@1"
    assert json.loads((users / MODEL / "active.json").read_text())["active"] == f"{MODEL}@1"
    assert versions.rollback_button.isEnabled() and not versions.activate_button.isEnabled()
    p.dock.versions.rollback_button.click()
    assert wait_until(lambda: p.retrain.versions_task is None and p.status_task is None
                 and p.dock.models.current_model_id() == MODEL, 30)
    assert json.loads((users / MODEL / "active.json").read_text())["active"] == MODEL
    assert f"Rolled back to {MODEL}" in p.dock.detection.message()
    # the shipped model is active again: nothing to roll back to, and the button says so
    assert not p.dock.versions.rollback_button.isEnabled()
    assert "no earlier version" in p.dock.versions.rollback_button.toolTip()
    assert not p.dock.versions.activate_button.isEnabled()  # already the active version
    # the daemon's refusal, if asked anyway, comes with the bar at 0
    p.dock.detection.set_progress(100)
    p.retrain.rollback(MODEL)
    assert wait_until(lambda: p.retrain.versions_task is None, 30)
    assert "no earlier version" in p.dock.detection.message()
    assert p.dock.detection.progress.value() == 0


#: The report of the issue's rejected retrain: a held-out part without polygons,
#: the reason given twice, a per-km² rate over 0.005 km².
REJECTED = {
    "accepted": False, "model": None, "parent": MODEL, "active": MODEL,
    "reason": "more object errors on the held-out corrections (0 -> 8); no fewer object "
              "errors (held-out corrections 0 -> 8)",
    "budget_s": 60.0, "train": {"steps": 40, "seconds": 66.0},
    "time": {"budget_s": 60.0, "seconds": 126.0, "training_s": 66.0,
             "within_budget": False},
    "corrections": {"features": 95,
                    "train": {"features": 95, "deleted": 1, "added": 1,
                              "class_change_objects": 0},
                    "holdout": {"features": 0, "deleted": 0, "added": 0,
                                "class_change_objects": 0}},
    "before": {"user_holdout": {"object_f1": None, "object_errors": 0, "false_objects": 0,
                                "pixel_iou": None, "area_km2": 0.004566,
                                "false_polygons_per_km2": 0.0},
               "guard": {"object_f1": 0.8441, "object_errors": 10, "false_objects": 4,
                         "pixel_iou": 0.7734, "area_km2": 0.0059,
                         "false_polygons_per_km2": 677.9}},
    "after": {"user_holdout": {"object_f1": 0.0, "object_errors": 8, "false_objects": 8,
                               "pixel_iou": 0.0, "area_km2": 0.004566,
                               "false_polygons_per_km2": 1751.5},
              "guard": {"object_f1": 0.8512, "object_errors": 9, "false_objects": 3,
                        "pixel_iou": 0.7791, "area_km2": 0.0059,
                        "false_polygons_per_km2": 508.4}},
    "rule": "the rule", "warnings": []}


def test_result_window_says_why_once_then_the_table():
    from qgis.PyQt.QtWidgets import QAbstractScrollArea

    from plugin.retrain.dialogs import RetrainResultDialog, result_rows
    dlg = RetrainResultDialog(REJECTED)
    text = dlg.text()
    first = text.splitlines()[0]
    assert first == ("Rejected, no new version kept: more object errors on the held-out "
                     "corrections (0 → 8).")
    assert text.count("0 → 8") == 1 and "no fewer" not in text and "->" not in text
    # no absurd rates over a few thousand m², no dashes for what could not be measured
    assert "1751" not in text and "677" not in text and "/ km²" not in text
    assert "–" not in text
    assert "Held-out check could not be made" in text and "(0.005 km²)" in text
    rows = result_rows(REJECTED)
    held = [r for r in rows if r[0].startswith("held-out")]
    assert [r[1] for r in held] == ["object errors", "false polygons"]
    assert ("held-out part of your corrections", "object errors", "0", "8") in held
    assert ("reference tiles (pv01 validation)", "pixel IoU", "0.773", "0.779") in rows
    assert "Took 126 s — over the 60 s budget (66 s training, 40 steps); give a larger budget or review a smaller area." in text
    assert "delete 1 object, add 1 and reclassify 0" in text
    # compact: no scrolling widget, the whole text fits a modest window
    assert not dlg.findChildren(QAbstractScrollArea)
    assert dlg.sizeHint().height() < 520
    # a rate is shown where the surface makes it meaningful
    big = json.loads(json.dumps(REJECTED))
    for side in ("before", "after"):
        big[side]["guard"]["area_km2"] = 2.5
    assert ("reference tiles (pv01 validation)", "false polygons / km²", "678", "508") in \
        result_rows(big)


def test_layer_context_menu_offers_retrain_on_result_layers(plugin_with_result, qgis_iface):
    """With a QGIS interface that has layer context-menu actions (the test double of
    pytest-qgis has none), result layers, also ones added later, get the action."""
    from types import SimpleNamespace

    from plugin.retrain.controller import RetrainController
    from plugin.retrain.memory import PROP
    _, result = plugin_with_result
    calls = []

    class Iface:
        def __getattr__(self, name):
            return getattr(qgis_iface, name)

        def addCustomActionForLayerType(self, action, menu, kind, all_layers):  # noqa: N802
            calls.append(("type", all_layers))

        def addCustomActionForLayer(self, action, layer):  # noqa: N802
            calls.append(("layer", layer.id()))

        def removeCustomActionForLayerType(self, action):  # noqa: N802
            calls.append(("removed",))

    host = SimpleNamespace(iface=Iface(), dock=None, notify=lambda *a, **k: None,
                           refresh_status=lambda: None)
    ctl = RetrainController(host, "&Ortholens test")
    try:
        assert ("type", False) in calls and ("layer", result.id()) in calls
        from qgis.core import QgsVectorLayer
        other = QgsVectorLayer("Polygon?crs=EPSG:31256", "copy of detections", "memory")
        other.setCustomProperty(PROP + "model", MODEL)
        plain = QgsVectorLayer("Polygon?crs=EPSG:31256", "roofs", "memory")
        QgsProject.instance().addMapLayers([other, plain])
        assert ("layer", other.id()) in calls and ("layer", plain.id()) not in calls
    finally:
        ctl.unload()
    assert ("removed",) in calls


def test_processing_retrain_algorithm(daemon, vienna_layer):
    """``ortholens:retrain`` (Processing toolbox / qgis_process) sends the corrected
    polygons and the reviewed extent and reports the decision."""
    from qgis.core import (QgsApplication, QgsProcessingContext, QgsProcessingFeedback,
                           QgsVectorLayer)

    from plugin.main import OrtholensPlugin
    _, stub, _ = daemon
    p = OrtholensPlugin(None)
    p.initProcessing()
    try:
        alg = QgsApplication.processingRegistry().createAlgorithmById("ortholens:retrain")
        assert alg is not None
        mem = QgsVectorLayer("Polygon?crs=EPSG:31256&field=class:string", "fixed", "memory")
        for wkt, cls in ((square(-1600, 338500, 2), "photovoltaic"),
                         (square(-1595, 338500, 2), None)):
            f = QgsFeature(mem.fields())
            f.setGeometry(QgsGeometry.fromWkt(wkt))
            f.setAttributes([cls])
            mem.dataProvider().addFeatures([f])
        ctx = QgsProcessingContext()
        ctx.setProject(QgsProject.instance())
        res, ok = alg.run({"INPUT": mem, "RASTER": vienna_layer,
                           "EXTENT": "-1610,-1590,338490,338510 [EPSG:31256]",
                           "BUDGET_MIN": 1, "INVALID": 1}, ctx, QgsProcessingFeedback())
        assert ok and res["ACCEPTED"] == 1 and res["NEW_MODEL"] == f"{MODEL}@1"
        assert "held-out" in res["REASON"] and json.loads(res["REPORT"])["accepted"]
        req = stub.requests[-1]
        assert req["budget_s"] == 60.0 and req["invalid_geometry"] == "refuse"
        assert req["reviewed"] == [{"extent": [-1610.0, 338490.0, -1590.0, 338510.0]}]
        assert [f.get("class", f.get("class_id")) for f in req["features"]] == ["photovoltaic", 1]
    finally:
        p.unload()



def test_dialog_names_the_model_the_dock_shows(plugin_with_result):
    """The dock shows another model than the one the layer was detected with: that model
    is fine-tuned and the dialog says so; an ensemble is refused with a way out."""
    p, layer = plugin_with_result
    other = dict(CARD, id="pv-fpn-r34", version="2.0.0")
    ens = {"id": "pv-ensemble", "version": "1.0.0", "kind": "ensemble", "gsd_m": 0.1,
           "classes": CLASSES, "members": [{"id": MODEL}, {"id": "pv-fpn-r34"}]}
    p.dock.models.set_models([CARD, other, ens])
    p.dock.models.model_combo.setCurrentIndex(p.dock.models.model_combo.findData("pv-fpn-r34"))
    seen = {}

    def run_dialog(dlg):
        seen["head"], seen["model"] = dlg.head_label.text(), dlg.plan.model
        return False

    p.retrain.exec_dialog = run_dialog
    assert p.retrain.retrain(layer) is None
    assert seen["model"] == "pv-fpn-r34"
    assert "Fine-tune <b>pv-fpn-r34</b>" in seen["head"]
    assert f"detected with {MODEL}" in seen["head"]
    seen.clear()
    p.dock.models.model_combo.setCurrentIndex(p.dock.models.model_combo.findData("pv-ensemble"))
    assert p.retrain.retrain(layer) is None and not seen
    message = p.dock.detection.message()
    assert "ensemble pv-ensemble" in message and MODEL in message


def test_refused_retrain_resets_the_bar(plugin_with_result, qgis_iface):
    """After a detection the bar reads 100 %; a refused retrain leaves no full bar beside
    its message."""
    p, _ = plugin_with_result
    p.dock.detection.set_progress(100)
    p.retrain.retrain(QgsProject.instance().mapLayersByName("vienna")[0])
    assert "not an Ortholens result layer" in p.dock.detection.message()
    assert p.dock.detection.progress.value() == 0


def test_phases_and_time_left_are_shown_during_a_retrain(plugin_with_result, daemon):
    p, layer = plugin_with_result
    p.retrain.exec_dialog = lambda dlg: dlg.budget_spin.setValue(1) or True
    shown = set()
    task = p.retrain.retrain(layer)
    assert task is not None
    assert wait_until(lambda: shown.add(p.dock.detection.message()) or p.retrain.task is None, 60)
    assert any(m.startswith(f"Retraining {MODEL}: training: step ") and m.endswith("s left")
               for m in shown), shown


def test_version_buttons_are_disabled_while_a_job_runs(plugin_with_result, daemon,
                                                      monkeypatch, qgis_iface):
    """Make active and Roll back can act (a retrained version is active), but not while
    a retrain or a detection runs."""
    from plugin import tasks
    p, layer = plugin_with_result
    _, _, users = daemon
    user_version(users, active=True)
    p.refresh_status()
    assert wait_until(lambda: p.status_task is None
                      and p.dock.models.model_combo.findData(f"{MODEL}@1") >= 0, 30)
    cards = list(p.dock.models.cards)
    p.dock.models.model_combo.setCurrentIndex(p.dock.models.model_combo.findData(MODEL))
    buttons = (p.dock.versions.activate_button, p.dock.versions.rollback_button)
    assert all(b.isEnabled() for b in buttons), [b.toolTip() for b in buttons]
    # a retrain that runs until cancelled
    p.retrain.exec_dialog = lambda dlg: dlg.budget_spin.setValue(59) or True
    task = p.retrain.retrain(layer)
    assert task is not None and wait_until(lambda: task.progress() > 5, 30)
    assert not any(b.isEnabled() for b in buttons)
    assert not p.dock.versions.retrain_button.isEnabled()
    assert "Wait until the running job has finished" in p.dock.versions.rollback_button.toolTip()
    activated = []
    p.dock.versions.activateRequested.connect(activated.append)
    p.dock.versions.activate_button.click()
    assert p.retrain.versions_task is None and not activated
    p.dock.detection.cancel_button.click()
    assert wait_until(lambda: p.retrain.task is None, 30)
    assert all(b.isEnabled() for b in buttons), [b.toolTip() for b in buttons]

    # a detection that runs until cancelled
    class Slow:
        process = None

        def models(self):
            return cards

        def detect(self, *args, is_cancelled=None, **kw):
            while not is_cancelled():
                time.sleep(0.02)
            from protocol.errors import JobCancelled
            raise JobCancelled()

        def close(self):
            pass

    monkeypatch.setattr(tasks, "connect_daemon", lambda *a, **k: Slow())
    raster = QgsProject.instance().mapLayersByName("vienna")[0]
    qgis_iface.setActiveLayer(raster)
    qgis_iface.mapCanvas().setDestinationCrs(raster.crs())
    qgis_iface.mapCanvas().setExtent(QgsRectangle(*VIENNA_PATCH))
    det = p.detect()
    assert det is not None, p.dock.detection.message()
    assert wait_until(lambda: p.task is not None
                      and not p.dock.detection.detect_button.isEnabled(), 10)
    assert not any(b.isEnabled() for b in buttons)
    p.dock.detection.cancel_button.click()
    assert wait_until(lambda: p.task is None, 30)
    assert all(b.isEnabled() for b in buttons) and p.dock.detection.progress.value() == 0


# ----------------------------------------------------------------------------- area versions



def _pending(users, token):
    """A candidate the daemon kept aside (``backend.models.pending.save_pending``'s
    layout; the weights are not read here)."""
    d = users / MODEL / f".pending-{token}"
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(b"w")
    (d / "model.onnx").write_bytes(b"o")
    (d / "pending.json").write_text(json.dumps({
        "parent": MODEL, "card_updates": {"acceptance_rule": "the area rule"},
        "lineage": {"decision": "undecided", "verdict": "undecided",
                    "reason": UNDECIDED["reason"], "scope": UNDECIDED["scope"]}}))


def test_dialog_offers_a_version_for_this_area_or_everywhere(plugin_with_result, daemon):
    p, layer = plugin_with_result
    _, stub, _ = daemon
    seen = {}

    def run_dialog(dlg):
        seen["default"] = dlg.options()["scope"]
        seen["area_rule"] = dlg.rule_label.text()
        dlg.scope_combo.setCurrentIndex(dlg.scope_combo.findData("general"))
        seen["general_rule"] = dlg.rule_label.text()
        dlg.budget_spin.setValue(1)
        return True

    p.retrain.exec_dialog = run_dialog
    task = p.retrain.retrain(layer)
    assert task is not None and wait_until(lambda: p.retrain.task is None, 60)
    assert seen["default"] == "area" and "used only in this area" in seen["area_rule"]
    assert "measured and shown, not required" in seen["area_rule"]
    assert "reference validation tiles" in seen["general_rule"]
    assert stub.requests[-1]["scope"] == "general"


def test_result_window_shows_the_numbers_and_the_user_may_keep_the_version(
        plugin_with_result, daemon):
    """No verdict: the window says so with the held-out change and its interval, the
    guard and its warning; Keep this version anyway makes it a version of this area,
    recorded as kept by the user; the dock lists it with its area and Roll back takes
    it out of use."""
    from plugin.retrain.dialogs import result_rows
    p, _ = plugin_with_result
    _, _, users = daemon
    _pending(users, UNDECIDED["pending"])
    dlg = p.retrain.show_result(UNDECIDED)
    text = dlg.text()
    assert text.startswith("No verdict, no new version kept yet: not enough held-out "
                           "corrections to decide: the held-out part holds 4 objects")
    assert ("held-out part of your corrections", "object F1 change", "",
            "+0.357 (90% interval +0.000 to +0.667, 4 objects)") in result_rows(UNDECIDED)
    assert ("reference tiles (pv01 validation)", "pixel IoU", "0.881", "0.806") in \
        result_rows(UNDECIDED)
    assert "worse on the original training data" in text
    assert "Area of the new version: 0.27 km² around 48.1846° N, 16.3149° E (1 reviewed " \
           "extent + 250 m)" in text
    assert "you may keep it" in text
    assert dlg.keep_button is not None and dlg.keep_button.isVisible()
    dlg.keep_button.click()
    assert wait_until(lambda: p.retrain.versions_task is None, 30)
    lineage = json.loads((users / MODEL / "1" / "lineage.json").read_text())
    assert lineage["decision"] == "kept by the user" and lineage["verdict"] == "undecided"
    assert lineage["kept"]["note"] == "kept from the result window"
    assert json.loads((users / MODEL / "active.json").read_text())["area_versions"] == \
        [f"{MODEL}@1"]
    assert f"Kept {MODEL}@1 against the rule's verdict (recorded in its lineage); " \
           "now used in its area." == p.dock.detection.message()
    p.refresh_status()
    assert wait_until(lambda: p.status_task is None
                      and p.dock.models.model_combo.findData(f"{MODEL}@1") >= 0, 30)
    idx = p.dock.models.model_combo.findData(f"{MODEL}@1")
    assert "[area 0.27 km², in use]" in p.dock.models.model_combo.itemText(idx)
    assert "Taught on 0.27 km² around 48.1846° N" in p.dock.models.model_combo.itemData(
        idx, Qt.ToolTipRole)
    assert p.dock.models.current_model_id() == MODEL  # the dock keeps its model
    p.dock.models.model_combo.setCurrentIndex(idx)
    versions = p.dock.versions
    assert versions.rollback_button.isEnabled() and not versions.activate_button.isEnabled()
    assert f"Stop using {MODEL}@1 in its area" in p.dock.versions.rollback_button.toolTip()
    p.dock.versions.rollback_button.click()
    assert wait_until(lambda: p.retrain.versions_task is None, 30)
    assert json.loads((users / MODEL / "active.json").read_text())["area_versions"] == []
    assert p.dock.detection.message() == f"{MODEL}@1 is no longer used."
    # a rejected report without a pending candidate offers no keep button
    plain = p.retrain.show_result(dict(UNDECIDED, pending=None, verdict="rejected"))
    assert plain.keep_button is None
