"""The repository and the real data, the default model, free ports and waiting for a
condition (the part of ``tests.support`` the plugin tests share too)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from backend.config import data_dir, models_dir


REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- model, data

def default_model() -> str:
    """The id of the model the engine offers first on a CPU: ``"cpu"`` of the shipped
    ``defaults.json`` in the model folder (``backend.config.models_dir``: the
    repository's ``models/``, or ``ORTHOLENS_MODELS`` when a copy of the tests runs
    elsewhere, as under ``build.py mutants``)."""
    return str(json.loads((models_dir() / "defaults.json").read_text())["cpu"])


#: The shipped model the tests detect and retrain with (see :func:`default_model`).
DEFAULT_MODEL = default_model()

DATA = data_dir()
#: The Vienna 2023 orthophoto, tile 44_2: EPSG:31256, 0.3 m, no solar panels.
VIENNA = DATA / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
#: SpaceNet Atlanta: one band, uint16, 0.5 m, EPSG:32616.
ATLANTA = DATA / "spacenet-atlanta" / "sample_geotiff.tif"
#: The pv01 held-out tiles (0.1 m, EPSG:32651; never used in training).
HELDOUT = DATA / "pv01" / "heldout"


def heldout(name: str) -> Path:
    """The pv01 held-out tile ``name`` (e.g. ``"PV01_325228_1203845"``)."""
    return HELDOUT / f"{name}.tif"


#: Four adjacent held-out tiles (a 2 x 2 block, panels on several roofs).
PV01_BLOCK = ("PV01_325190_1204243", "PV01_325190_1204246", "PV01_325192_1204246",
              "PV01_325192_1204249")

HAVE_MODEL = (models_dir() / DEFAULT_MODEL / "weights.safetensors").is_file()
HAVE_DATA = HELDOUT.is_dir() and VIENNA.is_file()

#: Held-out tiles of the area versions: one site and another about 1 km away.
INSIDE = heldout("PV01_325228_1203845")
INSIDE_2 = heldout("PV01_325228_1203843")
OUTSIDE = heldout("PV01_325173_1203750")
HAVE_TILES = INSIDE.is_file() and OUTSIDE.is_file() and HAVE_MODEL


def needs_real(test):
    """Skip ``test`` without the pv01 held-out data, the Vienna scene or the shipped
    model (pytest marker)."""
    import pytest
    return pytest.mark.skipif(not (HAVE_DATA and HAVE_MODEL), reason="real data "
                              "(ORTHOLENS_DATA) or shipped model missing")(test)


def needs_tiles(test):
    """Skip ``test`` without the held-out tiles of the area versions or the shipped
    model (pytest marker)."""
    import pytest
    return pytest.mark.skipif(not HAVE_TILES, reason="pv01 held-out tiles "
                              "(ORTHOLENS_DATA) or the shipped model missing")(test)


# ----------------------------------------------------------------------------- waiting

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (loopback) that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout_s: float = 60.0, step_s: float = 0.01) -> bool:
    """Poll ``pred()`` every ``step_s`` seconds until it is true (returns True).

    Raises:
        AssertionError: it was not true within ``timeout_s`` seconds (a hang guard,
            generous so that a loaded machine does not fail a test: never a bound
            the test asserts).
    """
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step_s)
    raise AssertionError("condition not reached in time")

