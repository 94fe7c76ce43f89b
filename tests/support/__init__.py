"""What the tests share: the repository and the real data, the default model, free
ports, waiting for a condition (:mod:`.common`); a clock the test moves
(:mod:`.clock`); an engine process of their own and the
server in a thread with a fake detect function (:mod:`.engine`); one fake predictor
(:mod:`.fakes`); small rasters and the polygons of a result or a batch GeoPackage
(:mod:`.rasters`); user versions made from the shipped model (:mod:`.versions`).

Imported as ``tests.support`` (the repository root is on ``sys.path``: the root
``tests/conftest.py`` puts it there, and so does the plugin tests' ``conftest.py``);
every name is available from the package itself. The plugin tests run in the QGIS
environment, which has numpy but neither rasterio nor torch: at import these modules
need only the standard library and ``backend.config``; everything heavier is imported
by the function that uses it.

Real data: ``ORTHOLENS_DATA`` (``backend.config.data_dir``).
"""

from .clock import ManualClock, in_thread
from .common import (ATLANTA, DATA, DEFAULT_MODEL, HAVE_DATA, HAVE_MODEL, HAVE_TILES, HELDOUT,
                     INSIDE, INSIDE_2, OUTSIDE, PV01_BLOCK, REPO, VIENNA, default_model,
                     free_port, heldout, needs_real, needs_tiles, wait_for)
from .engine import (FILE, LISTENING, PIX, FakeDetect, ask, job_state, raw_dealer, recv,
                     running_engine, running_server, send_detect, start_engine, stop_engine)
from .fakes import FakePredictor, ensemble_card, predict_vienna
from .rasters import (FAR_GSD, ROOFS, against_mask, build_vrt, gpkg_rows, gpkg_set,
                      open_raster, polygon_set, small_grid, write_polygons, write_raster)
from .versions import make_area_version, shipped_digest, shipped_state, tile_bounds

__all__ = ["ATLANTA", "DATA", "DEFAULT_MODEL", "FAR_GSD", "FILE", "FakeDetect", "FakePredictor",
           "HAVE_DATA", "HAVE_MODEL", "HAVE_TILES", "HELDOUT", "INSIDE", "INSIDE_2",
           "LISTENING", "ManualClock", "OUTSIDE", "PIX", "PV01_BLOCK", "REPO", "ROOFS",
           "VIENNA", "against_mask", "ask", "build_vrt", "write_polygons",
           "default_model", "ensemble_card", "free_port", "gpkg_rows", "gpkg_set", "heldout",
           "in_thread",
           "job_state", "make_area_version", "needs_real", "needs_tiles", "open_raster",
           "polygon_set", "predict_vienna", "raw_dealer", "recv", "running_engine",
           "running_server", "send_detect", "shipped_digest", "shipped_state", "small_grid",
           "start_engine", "stop_engine", "tile_bounds", "wait_for", "write_raster"]
