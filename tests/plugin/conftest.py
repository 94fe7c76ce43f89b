"""Fixtures of the plugin tests: paths to the real data and small synthetic rasters.

The plugin package is imported as ``plugin`` from the repository root (in a release it
is the ``ortholens`` folder; its imports are all relative, so the name does not matter).
Real data: ``ORTHOLENS_DATA``, default ``<repo>/../shared/data``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Qt complains on stderr without a private runtime dir; harmless but noisy.
if not os.environ.get("XDG_RUNTIME_DIR"):
    _rt = Path(tempfile.gettempdir()) / f"ortholens-xdg-{os.getuid()}"
    _rt.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_rt)

# The status ping of the plugin must not find a real daemon by accident.
os.environ.setdefault("ORTHOLENS_ENDPOINT", "tcp://127.0.0.1:1")
# ... nor start one when the dock opens (the tests of that start it on their own port).
os.environ.setdefault("ORTHOLENS_AUTOSTART", "0")
# ... nor find an engine 'Set up the engine…' installed for the user running the tests.
os.environ.setdefault("ORTHOLENS_ENGINE_DIR", str(Path(tempfile.gettempdir())
                                                  / f"ortholens-no-engine-{os.getuid()}"))


def data_dir() -> Path:
    from backend.config import data_dir as backend_data_dir  # the one default
    return backend_data_dir()


VIENNA = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
PV01_HELDOUT = data_dir() / "pv01" / "heldout" / "PV01_325228_1203845.tif"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (loopback) that was free a moment ago."""
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc) -> None:
    """Terminate a daemon the tests started; kill it when it has not exited in 15 s."""
    import subprocess
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_until(pred, timeout_s: float = 15.0) -> bool:
    """Process Qt events until ``pred()`` is true (True) or ``timeout_s`` passes (False)."""
    import time

    from qgis.PyQt.QtCore import QCoreApplication
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if pred():
            return True
        time.sleep(0.02)
    return False


#: The master password of the test profile's QGIS authentication database
#: (``tests/plugin/.qgis-settings``), where the engine token is kept.
TEST_MASTER_PASSWORD = "ortholens-tests"


@pytest.fixture
def qgis_auth(qgis_app):
    """QGIS's authentication manager with the test profile's master password given, as
    a user does when QGIS asks for it (the first run sets it)."""
    from qgis.core import QgsApplication

    am = QgsApplication.authManager()
    assert not am.isDisabled(), "QGIS's authentication system is disabled (no QCA)"
    if not am.masterPasswordIsSet():
        assert am.setMasterPassword(TEST_MASTER_PASSWORD, True), (
            "the test profile's authentication database has another master password: "
            f"delete {QgsApplication.qgisAuthDatabaseFilePath()}")
    return am


@pytest.fixture(scope="session")
def vienna_path() -> Path:
    if not VIENNA.is_file():
        pytest.skip(f"real orthophoto missing: {VIENNA} (set ORTHOLENS_DATA)")
    return VIENNA


@pytest.fixture
def vienna_layer(vienna_path, qgis_new_project):
    """The Vienna orthophoto (EPSG:31256, 0.3 m), added to a fresh project."""
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(vienna_path), "vienna", "gdal")
    assert layer.isValid(), f"cannot open {vienna_path}"
    QgsProject.instance().addMapLayer(layer)
    return layer


def make_raster(path: Path, bands: int = 3, size=(16, 12), srs_epsg=None,
                geotransform=(1000.0, 0.5, 0.0, 2000.0, 0.0, -0.5)) -> Path:
    """Write a small GeoTIFF of uint8 gradients with GDAL; ``srs_epsg=None`` -> no CRS."""
    import numpy as np
    from osgeo import gdal, osr

    w, h = size
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, bands, gdal.GDT_Byte)
    ds.SetGeoTransform(geotransform)
    if srs_epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(srs_epsg)
        ds.SetProjection(srs.ExportToWkt())
    for b in range(bands):
        arr = (np.arange(w * h, dtype=np.uint32).reshape(h, w) * (b + 1) % 256).astype(np.uint8)
        ds.GetRasterBand(b + 1).WriteArray(arr)
    ds.FlushCache()
    ds = None
    return path
