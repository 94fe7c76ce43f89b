"""Paths shared by the daemon, trainer, tools and task runner: the one place of their
defaults.

Every path can be overridden by an environment variable, so nothing is copied into
the project: the real data sets are read where they lie.

``ORTHOLENS_DATA``    the real data folder (default ``<repo>/../shared/data``)
``ORTHOLENS_MODELS``  the model folder with one sub-folder per model card
                      (default ``<repo>/models`` in a checkout; in an installed engine
                      package, the models it ships, ``backend/shipped_models``)
``ORTHOLENS_ROOTS``   ``os.pathsep``-separated folders a non-loopback daemon may read
                      rasters from (loopback daemons read any file the user can)
``ORTHOLENS_THREADS`` CPU threads of training and fine-tuning (default: all cores)
``ORTHOLENS_PRECISION`` ``fp32``: models run their fp32 graph on every device, even
                      where their card keeps a quantized one (default ``auto``)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The models an installed engine package ships (``pyproject.toml`` maps the repository's
#: ``models/`` here); absent in a checkout.
SHIPPED_MODELS = Path(__file__).resolve().parent / "shipped_models"


def data_dir() -> Path:
    """The real data folder (``ORTHOLENS_DATA``, default ``<repo>/../shared/data``)."""
    return Path(os.environ.get("ORTHOLENS_DATA", REPO.parent / "shared" / "data")).resolve()


def models_dir() -> Path:
    """The model folder: ``ORTHOLENS_MODELS``, else the installed package's
    :data:`SHIPPED_MODELS` when it exists, else ``<repo>/models`` (a checkout)."""
    env = os.environ.get("ORTHOLENS_MODELS")
    if env:
        return Path(env).resolve()
    return SHIPPED_MODELS if SHIPPED_MODELS.is_dir() else (REPO / "models").resolve()


def pv01_dir() -> Path:
    """``<data>/pv01``: the rooftop PV set (Jiang et al. 2021, CC BY 4.0)."""
    return data_dir() / "pv01"


def vienna_scene() -> Path:
    """``<data>/vienna/vienna_44_2_ortho_2023_30cm.tif``: a panel-free 0.3 m scene (Stadt
    Wien, Orthofoto 2023, tile 44_2, CC BY 4.0), where every detection is a false
    positive."""
    return data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"


def train_threads() -> int:
    """CPU threads of training and fine-tuning (``ORTHOLENS_THREADS``, default the
    number of cores)."""
    return int(os.environ.get("ORTHOLENS_THREADS", os.cpu_count() or 1))


#: The values of ``ORTHOLENS_PRECISION``.
PRECISIONS = ("auto", "fp32")


def precision() -> str:
    """``"fp32"`` when ``ORTHOLENS_PRECISION`` forces the fp32 graphs, else ``"auto"``
    (each device runs the graph its model card names; ``ModelCard.graph_path``).

    Raises:
        protocol.errors.InputError: ``ORTHOLENS_PRECISION`` is neither ``auto`` nor
            ``fp32``.
    """
    from protocol.errors import InputError
    value = os.environ.get("ORTHOLENS_PRECISION", "").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise InputError(f"ORTHOLENS_PRECISION={value!r}: expected one of {PRECISIONS}")
    return value
