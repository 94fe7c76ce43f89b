"""The dock's versions panel: each version with its date, parent, area, figures,
verdict and use; the version in use in the map view and why; Make active, Roll back and
Delete, each disabled with its reason said; deleting a version in use asks first.

The daemon is ``backend.daemon.server.Server`` in a thread (the ``daemon`` fixture of conftest.py)
with the real ``versions`` and ``delete`` requests over a user model folder.
"""

from __future__ import annotations

import json

from helpers import DEFAULT_MODEL, flush_deletes, wait_until
from retrain_helpers import user_version

MODEL = DEFAULT_MODEL
AREA = {"area_km2": 0.28, "centre": [16.3149, 48.1846], "margin_m": 250.0,
        "reviewed": [[16.31, 48.18, 16.32, 48.19]]}
#: A ``versions`` reply: the shipped model active, an area version in use in its area
#: (and in the map view), a general version not in use.
REPLY = {"model": MODEL, "active": MODEL, "here": {
    "model": f"{MODEL}@1", "why": f"{MODEL}@1 was taught on this area (0.28 km² …)"},
    "versions": [
        {"id": MODEL, "number": 0, "version": "2.0.0", "parent": None, "created": None,
         "active": True, "decision": "shipped", "scope": None, "in_use": None,
         "heldout": {"object_f1": 0.8813}},
        {"id": f"{MODEL}@1", "number": 1, "version": "2.0.0+u1", "parent": MODEL,
         "created": "2024-05-06T12:05:00+00:00", "active": False,
         "decision": "accepted", "scope": AREA, "in_use": True, "corrections": 44,
         "metrics": {"before": {"user_holdout": {"object_f1": 0.593}},
                     "after": {"user_holdout": {"object_f1": 0.866}}}},
        {"id": f"{MODEL}@2", "number": 2, "version": "2.0.0+u2", "parent": MODEL,
         "created": "2024-05-07T09:00:00+00:00", "active": False,
         "decision": "kept by the user", "scope": None, "in_use": None}]}
CARDS = [{"id": MODEL, "version": "2.0.0", "lineage": {"active": True, "number": 0}},
         {"id": f"{MODEL}@1", "version": "2.0.0+u1",
          "lineage": {"number": 1, "scope": AREA, "in_use": True}},
         {"id": f"{MODEL}@2", "version": "2.0.0+u2", "lineage": {"number": 2}}]


def _lines(panel, r):
    return panel.list.item(r).text().split("\n")


def test_panel_lists_versions_the_one_in_use_here_and_the_reasons(qgis_iface):
    from plugin.dock.panel import OrtholensDock
    dock = OrtholensDock(qgis_iface.mainWindow())
    panel = dock.versions
    try:
        dock.models.set_models(CARDS)
        dock.models.prefer_model(MODEL)
        panel.show_versions(REPLY)
        assert panel.list.count() == 3
        assert _lines(panel, 0) == [f"{MODEL} v2.0.0 — active",
                                    "shipped · everywhere · held-out F1 0.881 (pv01)"]
        head, tail = _lines(panel, 1)
        assert head == f"{MODEL}@1 v2.0.0+u1 — in use here (its area)"
        assert tail.startswith("2024-05-0") and tail.endswith(
            f" · from {MODEL} · 0.28 km² · held-out F1 0.593 → 0.866 · accepted by the rule")
        assert _lines(panel, 2)[0] == f"{MODEL}@2 v2.0.0+u2 — not active"
        assert _lines(panel, 2)[1].endswith(" · everywhere · not measured · kept by you")
        assert panel.list.item(1).font().bold() and not panel.list.item(0).font().bold()
        assert panel.here_label.text() == (f"In use here: {MODEL}@1 — {MODEL}@1 was taught "
                                           f"on this area (0.28 km² …)")
        # the shipped model, picked because the dock selects it: nothing to do, and why
        assert panel.picked_id() == MODEL
        for b in (panel.activate_button, panel.rollback_button, panel.delete_button):
            assert not b.isEnabled()
        why = panel.why_label.text()
        assert f"Make active: {MODEL} is already the active version." in why
        assert "Roll back: " in why and "no earlier version" in why
        assert f"Delete: {MODEL} is a shipped model: only retrained versions can be " \
               "deleted." in why
        # the area version in use: take it out of use or delete it (asked first)
        assert panel.pick(f"{MODEL}@1") and panel.picked_id() == f"{MODEL}@1"
        assert not panel.activate_button.isEnabled()
        assert panel.rollback_button.isEnabled() and panel.delete_button.isEnabled()
        assert "you will be asked first" in panel.delete_button.toolTip()
        assert dock.models.current_model_id() == MODEL  # picking does not change the model
        asked = []
        panel.deleteRequested.connect(asked.append)
        panel.delete_button.click()
        assert asked == [f"{MODEL}@1"]
        # while a job runs, nothing acts, and the panel says why once
        dock.set_busy(True)
        assert not panel.delete_button.isEnabled()
        assert panel.why_label.text() == ("Make active, Roll back, Delete: Wait until the "
                                          "running job has finished.")
    finally:
        dock.deleteLater()
        flush_deletes()


def test_delete_from_the_panel_asks_for_a_version_in_use(plugin_with_result, daemon,  # noqa: F811
                                                          vienna_layer, qgis_iface):
    from qgis.core import QgsRectangle
    from helpers import VIENNA_PATCH
    p, _ = plugin_with_result
    _, _, users = daemon
    user_version(users, active=True)
    canvas = qgis_iface.mapCanvas()  # the map view whose version in use is named
    canvas.setDestinationCrs(vienna_layer.crs())
    canvas.setExtent(QgsRectangle(*VIENNA_PATCH))
    p.refresh_status()
    assert wait_until(lambda: p.status_task is None
                      and p.dock.models.model_combo.findData(f"{MODEL}@1") >= 0, 30)
    panel = p.dock.versions
    assert wait_until(lambda: p.retrain.listing_task is None
                      and panel.list.count() == 2, 30)
    # the dock shows the shipped model: exactly it runs, whatever is active
    assert wait_until(lambda: p.retrain.listing_task is None and panel.here_label.text()
                      == f"In use here: {MODEL} — {MODEL} has no version taught on an "
                         f"area", 30), panel.here_label.text()
    assert _lines(panel, 1)[0].endswith(" — active")
    assert _lines(panel, 0)[0].endswith(" — in use here; not active")
    assert panel.pick(f"{MODEL}@1")
    asked = []
    p.retrain.confirm = lambda text: asked.append(text) or False  # the user says no
    panel.delete_button.click()
    assert asked and "is in use" in asked[0] and p.retrain.versions_task is None
    assert (users / MODEL / "1" / "card.json").is_file()
    p.retrain.confirm = lambda text: True  # yes: rolled back, then deleted
    panel.delete_button.click()
    assert wait_until(lambda: p.retrain.versions_task is None, 30)
    assert not (users / MODEL / "1").exists() and (users / MODEL / ".deleted-1").is_dir()
    assert json.loads((users / MODEL / "active.json").read_text())["active"] == MODEL
    assert p.dock.detection.message() == (f"{MODEL}@1 was rolled back, then deleted; "
                                          f"active version: {MODEL}.")
    assert wait_until(lambda: p.retrain.listing_task is None and p.status_task is None
                      and panel.list.count() == 1, 30)
