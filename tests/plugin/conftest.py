"""Fixtures of the plugin tests: the test profile's authentication database and the
real Vienna orthophoto; the environment every test starts from.

The plugin package is imported as ``plugin`` from the repository root (in a release it
is the ``ortholens`` folder; its imports are all relative, so the name does not matter).
What the tests share besides fixtures is in :mod:`helpers`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from helpers import TEST_MASTER_PASSWORD, VIENNA  # noqa: E402 (needs the path above)

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
