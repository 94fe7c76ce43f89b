"""Fixtures of the retrain tests: the plugin with one finished detection in Vienna, and
the user's corrections of its result layer."""

from __future__ import annotations

import time

import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsRectangle

from helpers import CARD, DEFAULT_MODEL, REPO, VIENNA_PATCH, FakeClient, square

MODEL = DEFAULT_MODEL

BOWTIE = "POLYGON ((-1605 338495, -1601 338499, -1601 338495, -1605 338499, -1605 338495))"


def _detected():
    """The stand-in engine's detection: three squares in the test extent."""
    from plugin.detect.crs import crs_wkt
    from qgis.core import QgsCoordinateReferenceSystem
    feats = [{"wkt": square(-1600, 338500, 2), "class": "photovoltaic", "class_id": 1,
              "score": 0.9, "agreement": 1.0, "area_m2": 4.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"},
             {"wkt": square(-1595, 338500, 3), "class": "photovoltaic", "class_id": 1,
              "score": 0.7, "agreement": 1.0, "area_m2": 9.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"},
             {"wkt": square(-1608, 338492, 2), "class": "photovoltaic", "class_id": 1,
              "score": 0.8, "agreement": 1.0, "area_m2": 4.0, "model": DEFAULT_MODEL,
              "model_version": "1.0.0"}]
    return {"type": "result", "crs": crs_wkt(QgsCoordinateReferenceSystem("EPSG:31256")),
            "features": feats, "stats": {"seconds": 1.0}}


@pytest.fixture
def plugin_with_result(vienna_layer, tmp_path, qgis_iface):
    """The plugin, loaded, with one finished detection (a 20 m extent of Vienna)."""
    import plugin
    from plugin import tasks
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from plugin.settings import DaemonSettings

    # only the detection talks to the fake; the retrain task must reach the real (test)
    # daemon, and every other fixture's patches (the user folder) must stay in place
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks, "connect_daemon", lambda *a, **k: FakeClient([CARD], _detected()))
        plan = prepare_detect(vienna_layer, QgsRectangle(*VIENNA_PATCH), vienna_layer.crs())
        settings = DaemonSettings("tcp://127.0.0.1:1", None, str(REPO), None)
        task = DetectTask(plan, settings, str(tmp_path / "r.gpkg"), model_id=DEFAULT_MODEL)
        ok = task.run()
        task.finished(ok)
    assert ok and task.layer is not None, task.error
    p = plugin.classFactory(qgis_iface)
    p.initGui()
    p._detect_done(task)
    p.dock.models.set_models([CARD])
    try:
        yield p, task.layer
    finally:
        p.unload()



@pytest.fixture
def correct():
    """``correct(layer)``: the user's edits of the result layer (see :func:`_correct`)."""
    return _correct


def _correct(layer):
    """The user's edits: delete one detection, draw a missed panel (no class typed in)
    and a self-intersecting polygon."""
    layer.startEditing()
    first = next(layer.getFeatures())
    layer.deleteFeature(first.id())
    for wkt in (square(-1590.5, 338505, 1.5), BOWTIE):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        layer.addFeature(f)
    assert layer.commitChanges()


class _Stub:
    """A retrain function for the test daemon: records requests; ``loop`` budgets run
    until cancelled."""

    def __init__(self):
        self.requests = []

    def __call__(self, request, arrays, progress, cancelled):
        self.requests.append(request)
        n = 100000 if request["budget_s"] == 3540.0 else 10
        for i in range(n):
            if cancelled():
                from protocol.errors import JobCancelled
                raise JobCancelled()
            progress(min(i / 10, 1.0), f"training: step {i + 1}/{n}, loss 0.5 — about "
                                       f"{n - i} s left")
            time.sleep(0.02)
        return {"crs": "", "features": [], "stats": {}, "retrain": {
            "accepted": True, "model": f"{MODEL}@1", "parent": MODEL,
            "active": f"{MODEL}@1", "reason": "object errors on the held-out corrections "
                                              "2 -> 0", "budget_s": request["budget_s"],
            "train": {"steps": 9, "seconds": 30.2},
            "time": {"budget_s": request["budget_s"], "seconds": 40.4, "training_s": 30.2,
                     "within_budget": True},
            "corrections": {"features": len(request["features"])},
            "before": {"user_holdout": {"object_f1": None, "object_errors": 2,
                                        "pixel_iou": 0.0, "false_polygons_per_km2": 64.0},
                       "guard": {"object_f1": 0.844, "object_errors": 10,
                                   "pixel_iou": 0.773}},
            "after": {"user_holdout": {"object_f1": None, "object_errors": 0,
                                       "pixel_iou": None, "false_polygons_per_km2": 0.0},
                      "guard": {"object_f1": 0.885, "object_errors": 7,
                                  "pixel_iou": 0.859}},
            "rule": "the rule", "warnings": ["feature 2: invalid geometry repaired"]}}


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    from backend.daemon.server import Server
    users = tmp_path / "user-models"
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(users))
    stub = _Stub()
    srv = Server(port=0, retrain_fn=stub, device="cpu", progress_interval_s=0.0)
    srv.start_in_thread()
    monkeypatch.setenv("ORTHOLENS_ENDPOINT", srv.endpoint)
    try:
        yield srv, stub, users
    finally:
        srv.stop()
