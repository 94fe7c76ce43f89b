"""Fixtures of the Processing tests: the provider, a test engine with a model folder of
two models, a VRT mosaic of pv01 tiles, QGIS's Processing dialogs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from qgis.core import QgsApplication

from helpers import REPO, free_port, start_test_engine, stop_process
from proc_helpers import ALT_MODEL, BLOCK, MODEL, PV01


@pytest.fixture(scope="module")
def processing_gui():
    """QGIS's Processing dialogs (the ``processing`` plugin, as the desktop loads it).

    Its panels read ``qgis.utils.iface`` when imported; pytest-qgis's stand-in returns
    mocks where they want a canvas and a browser model, so they see none (as in
    ``qgis_process``)."""
    import importlib
    import sys
    plugins = Path(QgsApplication.pkgDataPath()) / "python" / "plugins"
    assert (plugins / "processing").is_dir(), f"no Processing plugin in {plugins}"
    if str(plugins) not in sys.path:
        sys.path.append(str(plugins))
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    mods = [importlib.import_module(f"processing.gui.{m}") for m in
            ("AlgorithmDialog", "BatchAlgorithmDialog", "BatchPanel", "ParametersPanel",
             "wrappers")]
    saved = {m: m.iface for m in mods if hasattr(m, "iface")}
    for m in saved:
        m.iface = None
    yield AlgorithmDialog, BatchAlgorithmDialog
    for m, value in saved.items():
        m.iface = value


@pytest.fixture(scope="module")
def provider():
    """The plugin's provider, registered as the plugin does it (initProcessing)."""
    from plugin.main import OrtholensPlugin
    plugin = OrtholensPlugin(None)  # qgis_process passes no iface either
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@pytest.fixture(scope="module")
def daemon_port():
    """The port the module's daemon will listen on (free now)."""
    return free_port()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A model folder holding MODEL (the default in its defaults.json) and ALT_MODEL, the
    same weights under an id that sorts first: a dialog that shows the first card
    instead of the daemon's default fails."""
    root = tmp_path_factory.mktemp("models")
    src = REPO / "models" / MODEL
    (root / MODEL).symlink_to(src, target_is_directory=True)
    alt = root / ALT_MODEL
    alt.mkdir()
    for f in src.iterdir():
        if f.name != "card.json":
            (alt / f.name).symlink_to(f)
    card = json.loads((src / "card.json").read_text())
    card["id"] = ALT_MODEL
    (alt / "card.json").write_text(json.dumps(card))
    (root / "defaults.json").write_text(json.dumps({"cpu": MODEL, "cuda": MODEL}))
    return root


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, daemon_port, model_folder):
    tmp = tmp_path_factory.mktemp("daemon")
    endpoint, proc = start_test_engine(tmp / "daemon.log", daemon_port,
                                       env={"ORTHOLENS_JOBS_DIR": str(tmp / "jobs"),
                                            "ORTHOLENS_MODELS": str(model_folder),
                                            "ORTHOLENS_USER_MODELS": str(tmp / "user_models")})
    old = os.environ.get("ORTHOLENS_ENDPOINT")
    os.environ["ORTHOLENS_ENDPOINT"] = endpoint
    from plugin.processing.common import forget_models
    forget_models()
    yield endpoint
    if old is None:
        os.environ.pop("ORTHOLENS_ENDPOINT", None)
    else:
        os.environ["ORTHOLENS_ENDPOINT"] = old
    forget_models()
    stop_process(proc)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    from osgeo import gdal
    vrt = tmp_path_factory.mktemp("vrt") / "pv01_block.vrt"
    ds = gdal.BuildVRT(str(vrt), [str(PV01 / f"{n}.tif") for n in BLOCK])
    del ds  # closing the dataset writes the VRT
    return vrt
