"""Paths and defaults shared by the daemon, trainer and task runner.

Every path can be overridden by an environment variable, so nothing is copied into
the project: the real data sets are read where they lie.

``ORTHOLENS_DATA``    the real data folder (default ``<repo>/../shared/data``)
``ORTHOLENS_MODELS``  the model folder with one sub-folder per model card
                      (default ``<repo>/models``)
``ORTHOLENS_ROOTS``   ``os.pathsep``-separated folders a non-loopback daemon may read
                      rasters from (loopback daemons read any file the user can)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The real data folder (``ORTHOLENS_DATA``, default ``<repo>/../shared/data``)."""
    return Path(os.environ.get("ORTHOLENS_DATA", REPO.parent / "shared" / "data")).resolve()


def models_dir() -> Path:
    """The model folder (``ORTHOLENS_MODELS``, default ``<repo>/models``)."""
    return Path(os.environ.get("ORTHOLENS_MODELS", REPO / "models")).resolve()


def pv01_dir() -> Path:
    """``<data>/pv01``: the rooftop PV set (Jiang et al. 2021, CC BY 4.0)."""
    return data_dir() / "pv01"
