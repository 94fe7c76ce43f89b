"""End to end: a version taught on one area is used by *Detect in extent* inside that
area and not outside it (a real daemon process, real held-out tiles, DetectTask).

The area version is the shipped model's weights written as a user version scoped to
one held-out site (PV01_325228_*, 250 m around one of its tiles) in a user model folder
of this test; what is checked is which model ran: the features' ``model``, the task's
card and its message. Needs what ``test_e2e.py`` needs.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from helpers import (BACKEND_PYTHON, DEFAULT_MODEL, MODELS, REPO, data_dir, start_test_engine,
                     stop_process)

MODEL = DEFAULT_MODEL
HELDOUT = data_dir() / "pv01" / "heldout"
TAUGHT = HELDOUT / "PV01_325228_1203845.tif"     # the version's reviewed extent
INSIDE = HELDOUT / "PV01_325228_1203843.tif"     # same site, not reviewed
OUTSIDE = HELDOUT / "PV01_325173_1203750.tif"    # another site, about 1 km away

_missing = [str(p) for p in (MODELS / MODEL / "card.json", BACKEND_PYTHON, TAUGHT, INSIDE,
                             OUTSIDE) if not p.exists()]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(_missing), reason="end-to-end test needs: " + ", ".join(_missing)),
]

#: Run with the backend's Python: write the area version, put it in use.
MAKE_VERSION = """
import shutil, sys, rasterio
from backend.models.area import build_area
from backend.models.catalog import load_card
from backend.models.version_writer import candidate_dir, write_version
from backend.models.versions import activate
card = load_card(sys.argv[1])
with rasterio.open(sys.argv[2]) as ds:
    area = build_area([tuple(ds.bounds)], ds.crs.to_wkt(), 250.0).to_dict()
prep = candidate_dir(card.id)
for name in ("weights.safetensors", "model.onnx"):
    shutil.copy(card.path / name, prep / name)
new = write_version(card, None, {}, {"scope": area, "decision": "accepted",
                                     "verdict": "accepted"}, prepared=prep)
shutil.rmtree(prep)
activate(new.id)
print(new.id)
"""


@pytest.fixture(scope="module")
def area_daemon(tmp_path_factory):
    """A daemon whose user model folder holds one area version; yields
    ``(endpoint, version id)``."""
    users = tmp_path_factory.mktemp("user-models")
    env = dict(os.environ, ORTHOLENS_USER_MODELS=str(users), PYTHONPATH=str(REPO))
    made = subprocess.run([str(BACKEND_PYTHON), "-c", MAKE_VERSION, MODEL, str(TAUGHT)],
                          cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    vid = made.stdout.strip().splitlines()[-1]
    endpoint, proc = start_test_engine(tmp_path_factory.mktemp("daemon") / "daemon.log",
                                       env={"ORTHOLENS_USER_MODELS": str(users)})
    yield endpoint, vid
    stop_process(proc)


def _detect(endpoint, path, tmp_path, model_id=MODEL):
    from plugin.detect.plan import prepare_detect
    from plugin.detect.task import DetectTask
    from plugin.settings import DaemonSettings

    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())
    settings = DaemonSettings(endpoint=endpoint, python=str(BACKEND_PYTHON),
                              repo=str(REPO), token=None)
    task = DetectTask(plan, settings, str(tmp_path / f"{path.stem}-{model_id}.gpkg"),
                      model_id=model_id, job_timeout_s=300)
    ok = task.run()
    task.finished(ok)
    assert ok, task.error
    return task


def test_the_area_version_runs_inside_its_area_and_the_model_outside(
        area_daemon, tmp_path, qgis_new_project):
    endpoint, vid = area_daemon
    assert vid == f"{MODEL}@1"
    inside = _detect(endpoint, INSIDE, tmp_path)
    feats = list(inside.layer.getFeatures())
    assert feats and {f["model"] for f in feats} == {vid}
    assert inside.card["id"] == vid and inside.result["stats"]["model"] == vid
    assert f"with {vid} v" in inside.summary() and "(taught on this area)" in inside.summary()
    assert inside.layer.customProperty("ortholens/model") == vid
    assert vid in inside.layer.name()
    outside = _detect(endpoint, OUTSIDE, tmp_path)
    assert outside.card["id"] == MODEL and outside.result["stats"]["model"] == MODEL
    assert all(f["model"] == MODEL for f in outside.layer.getFeatures())
    assert "taught on this area" not in outside.summary()
    # the shipped model runs its INT8 graph on this 0.1 m tile; a version has none
    assert "(INT8)" in outside.summary() and "(INT8)" not in inside.summary()
    # the dock lists the version with its area; chosen there, it runs as chosen
    listed = {c["id"]: c for c in inside.cards}
    from plugin.dock.models import card_label
    assert card_label(listed[vid]).startswith(f"{vid} v2.0.0+u1 [area 0.2")
    assert "in use]" in card_label(listed[vid])
    pinned = _detect(endpoint, OUTSIDE, tmp_path, model_id=vid)
    assert pinned.result["stats"]["model"] == vid and pinned.card["id"] == vid
