"""Shared fixtures of the backend tests: repo root on ``sys.path``, free ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture(scope="session")
def get_free_port():
    """The :func:`free_port` function, for tests that need several ports."""
    return free_port


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A fresh user model folder (``ORTHOLENS_USER_MODELS``) for the test."""
    d = tmp_path / "user-models"
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(d))
    return d


def build_vrt(vrt: Path, files) -> Path:
    """A VRT mosaic ``vrt`` of the raster ``files``, made with ``gdalbuildvrt``; the test
    is skipped without gdalbuildvrt (gdal-bin) or a file."""
    exe = shutil.which("gdalbuildvrt")
    files = [Path(f) for f in files]
    if exe is None or not all(f.is_file() for f in files):
        pytest.skip("needs gdalbuildvrt (gdal-bin) and the pv01 held-out tiles")
    subprocess.run([exe, "-q", str(vrt)] + [str(f) for f in files], check=True)
    return vrt
