"""An engine that cannot read the layer's file: a daemon bound with a token on another
loopback address (127.0.0.2) whose ``ORTHOLENS_ROOTS`` excludes the raster's folder.
The plugin's settings give its address and the token (kept in QGIS's authentication
database); *Detect in extent* still works, by streaming the pixels of the extent in
windows, and finds the polygons the engine finds reading the file. A wrong token gets a
message that says which token was sent and where to give the right one.

Needs the backend virtual environment, the shipped model and the pv01 held-out tiles
(like ``test_e2e.py``); a developer run without them skips, ``build.py test`` fails.
"""

from __future__ import annotations

import shutil

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from helpers import (BACKEND_PYTHON, DEFAULT_MODEL, MODELS, PV01_HELDOUT, start_test_engine,
                     stop_process)

MODEL = DEFAULT_MODEL
TOKEN = "remote-engine-7c41"
HOST = "127.0.0.2"

_missing = [str(p) for p in (MODELS / MODEL / "card.json", BACKEND_PYTHON, PV01_HELDOUT)
            if not p.exists()]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(_missing), reason="remote-engine test needs: "
                       + ", ".join(_missing)),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """``(endpoint, roots)``: a daemon on 127.0.0.2 with a token, reading files only
    below ``roots`` (which does not hold the held-out tiles)."""
    roots = tmp_path_factory.mktemp("engine-roots")
    assert not str(PV01_HELDOUT.resolve()).startswith(str(roots.resolve()))
    endpoint, proc = start_test_engine(tmp_path_factory.mktemp("daemon") / "daemon.log",
                                       host=HOST, token=TOKEN,
                                       env={"ORTHOLENS_ROOTS": str(roots)},
                                       args=["--restrict-paths"])
    yield endpoint, roots
    stop_process(proc)


@pytest.fixture
def engine_settings(engine, qgis_auth, monkeypatch):
    """The plugin's settings point at the engine: its address in ORTHOLENS_ENDPOINT, its
    token stored through the settings (QGIS's authentication database)."""
    from plugin.settings import forget_token, store_token

    monkeypatch.setenv("ORTHOLENS_ENDPOINT", engine[0])
    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    forget_token()
    assert store_token(TOKEN) is None
    yield engine
    forget_token()


def _run(plan, settings, out, window_px=None):
    from plugin.detect.task import DetectTask

    task = DetectTask(plan, settings, str(out), model_id=MODEL, job_timeout_s=300,
                      add_to_project=False)
    task.window_px = window_px
    task.messages = []
    task.message.connect(task.messages.append)
    ok = task.run()
    task.finished(ok)
    return ok, task


def test_detection_through_pixel_transfer_equals_reading_the_file(
        engine_settings, tmp_path, qgis_new_project):
    from plugin.dock.status import pong_text
    from plugin.detect.plan import prepare_detect
    from plugin.settings import TOKEN_FROM_AUTH, daemon_settings
    from plugin.tasks import DaemonStatusTask

    endpoint, roots = engine_settings
    settings = daemon_settings()
    assert settings.endpoint == endpoint and settings.token == TOKEN
    assert settings.token_source == TOKEN_FROM_AUTH

    # the dock's status line: where the engine runs and its device
    status = DaemonStatusTask(settings)
    status.run()
    assert status.pong is not None, status.error
    line = pong_text(status.pong, settings)
    assert f"on this computer ({endpoint})" in line and "CPU" in line, line

    # the tile outside the engine's roots: refused by path, sent as pixels in windows
    layer = QgsRasterLayer(str(PV01_HELDOUT), "heldout", "gdal")
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())
    assert plan.source is not None and plan.fallback is not None
    ok, by_pixels = _run(plan, settings, tmp_path / "pixels.gpkg", window_px=64)
    assert ok and by_pixels.error is None, by_pixels.error
    assert by_pixels.transfer == "pixels"
    # 256 x 256 pixels at the model's 0.1 m, streamed as 4 x 4 windows of 64
    assert "Sending the pixels (256 x 256)…" in by_pixels.messages
    assert "sent 16/16 windows" in by_pixels.messages, by_pixels.messages
    assert "ORTHOLENS_ROOTS" in by_pixels.file_refused
    assert by_pixels.layer is not None and by_pixels.layer.isValid()

    # the same tile copied inside the roots: the engine reads the file
    inside = roots / PV01_HELDOUT.name
    shutil.copyfile(PV01_HELDOUT, inside)
    copy = QgsRasterLayer(str(inside), "copy", "gdal")
    ok, by_file = _run(prepare_detect(copy, copy.extent(), copy.crs()), settings,
                       tmp_path / "file.gpkg")
    assert ok, by_file.error
    assert by_file.transfer == "file" and by_file.file_refused is None

    areas = {name: sorted(round(f["area_m2"], 1) for f in t.result["features"])
             for name, t in (("pixels", by_pixels), ("file", by_file))}
    assert areas["file"] and areas["pixels"] == areas["file"], areas
    assert by_pixels.result["crs"] and by_pixels.n_features == by_file.n_features


def test_a_wrong_token_gets_a_clear_error(engine_settings, tmp_path, qgis_new_project,
                                          monkeypatch):
    from plugin.detect.plan import prepare_detect
    from plugin.processing.common import engine_models
    from plugin.settings import daemon_settings, store_token

    endpoint, _ = engine_settings
    layer = QgsRasterLayer(str(PV01_HELDOUT), "heldout", "gdal")
    QgsProject.instance().addMapLayer(layer)
    plan = prepare_detect(layer, layer.extent(), layer.crs())

    assert store_token("not-the-token") is None
    ok, task = _run(plan, daemon_settings(), tmp_path / "x.gpkg")
    assert task.error == (
        f"The Ortholens engine at {endpoint} refused the request: the token stored in "
        "Ortholens Settings… is not the engine's. Type the engine's token there (it is "
        "kept in QGIS's authentication database), or set ORTHOLENS_TOKEN.")
    assert task.unreachable  # the message bar offers the Settings… button
    assert task.layer is None and not (tmp_path / "x.gpkg").exists()
    # Processing dialogs use the same settings and say the same
    assert "refused the request" in engine_models(max_age_s=0).note

    monkeypatch.setenv("ORTHOLENS_TOKEN", "also-wrong")
    ok, task = _run(plan, daemon_settings(), tmp_path / "y.gpkg")
    assert "the token in ORTHOLENS_TOKEN is not the engine's" in task.error

    monkeypatch.delenv("ORTHOLENS_TOKEN")
    from plugin.settings import forget_token
    forget_token()
    ok, task = _run(plan, daemon_settings(), tmp_path / "z.gpkg")
    assert "it needs a token and none was sent" in task.error
