"""Fixtures of the Processing tests: QGIS's Processing dialogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsApplication


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
