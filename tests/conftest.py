"""Fixtures of the protocol, backend and tools tests (the plugin's tests have their own
root, ``tests/plugin``): the repository root on ``sys.path``, so that the tests import
``tests.support`` (what they share besides fixtures), free ports, a fresh user model
folder and a VRT mosaic of real held-out tiles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support import HELDOUT, PV01_BLOCK, build_vrt, free_port  # noqa: E402


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture(scope="session")
def get_free_port():
    """The :func:`tests.support.free_port` function, for tests that need several ports."""
    return free_port


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A fresh user model folder (``ORTHOLENS_USER_MODELS``) for the test."""
    d = tmp_path / "user-models"
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(d))
    return d


@pytest.fixture(scope="module")
def pv01_vrt(tmp_path_factory):
    """A VRT mosaic of the four held-out tiles of ``tests.support.PV01_BLOCK``."""
    vrt = tmp_path_factory.mktemp("vrt") / "pv01_block.vrt"
    return build_vrt(vrt, [HELDOUT / f"{n}.tif" for n in PV01_BLOCK])
