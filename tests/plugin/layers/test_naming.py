"""Names of results: the GeoPackage's path and the layer's name."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from qgis.core import QgsApplication, QgsProject

from plugin.layers.naming import default_result_path, result_layer_name


def test_default_result_path(tmp_path, qgis_new_project):
    project = QgsProject.instance()
    p1 = Path(default_result_path("ortho / pv-unet-efl0"))
    assert p1.suffix == ".gpkg" and not p1.exists()
    assert str(p1).startswith(str(Path(QgsApplication.qgisSettingsDirPath()).resolve()))
    assert p1.parent.name == "results" and " " not in p1.name and "/" not in p1.stem
    project.setFileName(str(tmp_path / "proj.qgz"))
    try:
        p2 = Path(default_result_path("a"))
        assert p2.parent == tmp_path.resolve()
        p2.write_bytes(b"")
        p3 = Path(default_result_path("a", now=None))
        assert p3 != p2 and not p3.exists()
    finally:
        project.setFileName("")


def test_result_layer_name_starts_with_what_tells_runs_apart():
    """Run number and threshold first, then the source, model, version and time: the
    Layers panel cuts long names at its right edge."""
    when = _dt.datetime(2024, 5, 6, 14, 5)
    assert (result_layer_name("pv-unet-efl0", "2.0.0", "vienna", 2, when, 0.5)
            == "#2 thr 0.5 · vienna · pv-unet-efl0 v2.0.0 · 14:05")
    assert result_layer_name("m@3", None, "x", 1, when) == "#1 · x · m@3 · 14:05"
    assert (result_layer_name("m", "1", "mosaic", 3, when, 0.45, batch=True)
            == "#3 thr 0.45 · mosaic · m v1 · batch 14:05")
