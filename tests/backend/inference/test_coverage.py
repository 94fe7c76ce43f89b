"""Empty regions of a batch job: a sparse VRT's gaps and a nodata GeoTIFF's empty part
are skipped without reading their tiles, and the polygons stay those of one detection.

Real data (``ORTHOLENS_DATA``): three pv01 held-out tiles of one site, 40-100 m apart,
in a VRT whose gaps read as valid black pixels (no masks).
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.config import data_dir
from tests.support import REPO, build_vrt
from protocol.params import BatchParams, DetectParams, FileSource
from protocol.window import Window

PV01 = data_dir() / "pv01" / "heldout"
#: Three tiles of one site (about 750 x 1250 px of VRT, mostly gaps).
SITE = ["PV01_325237_1203816", "PV01_325239_1203816", "PV01_325246_1203821"]
MODEL = "pv-unet-efl0"


@pytest.fixture(scope="module")
def sparse_vrt(tmp_path_factory):
    return build_vrt(tmp_path_factory.mktemp("vrt") / "sparse.vrt",
                     [PV01 / f"{n}.tif" for n in SITE])


def _grid_of(path):
    from backend.inference.grid import plan_grid
    from backend.models.catalog import load_card
    import rasterio
    card = load_card(MODEL)
    ds = rasterio.open(path)
    return ds, plan_grid(ds, None, None, card.gsd_m, card.bands, None)


def test_vrt_gaps_are_empty_and_tiles_are_not(sparse_vrt):
    from backend.inference.coverage import SourceCoverage, vrt_source_rects

    rects = vrt_source_rects(str(sparse_vrt))
    assert rects is not None and len(rects) == 3 * 3  # three tiles, three bands each
    ds, grid = _grid_of(sparse_vrt)
    with ds:
        cov = SourceCoverage(ds, grid)
        assert cov.kind == "vrt"
        c0, r0, c1, r1 = rects[0]
        assert not cov.empty(Window(int(r0) + 10, int(c0) + 10, 20, 20))  # inside a tile
        # a window two pixels beyond a tile's edge still reads it (bilinear reach)
        assert not cov.empty(Window(int(r0) + 10, int(c1) + 1, 20, 20))
        gaps = [Window(r, c, 64, 64) for r in range(0, grid.height - 64, 64)
                for c in range(0, grid.width - 64, 64)]
        empty = [w for w in gaps if cov.empty(w)]
        assert len(empty) > len(gaps) // 3
        for w in empty:  # no tile meets an empty window
            assert not any(a < w.col_stop + 2 and b < w.row_stop + 2 and c > w.col - 2
                           and d > w.row - 2 for a, b, c, d in rects)


def test_nodata_part_of_a_geotiff_is_empty(tmp_path):
    import rasterio
    from affine import Affine
    from backend.inference.coverage import SourceCoverage

    path = tmp_path / "half.tif"
    img = np.zeros((3, 600, 600), np.uint8)
    img[:, :, :200] = 120  # data in the west third, nodata (0) elsewhere
    with rasterio.open(path, "w", driver="GTiff", width=600, height=600, count=3,
                       dtype="uint8", crs="EPSG:32651", nodata=0,
                       transform=Affine(0.1, 0, 254000.0, 0, -0.1, 3601000.0)) as dst:
        dst.write(img)
    ds, grid = _grid_of(path)
    with ds:
        cov = SourceCoverage(ds, grid)
        assert cov.kind == "mask"
        assert not cov.empty(Window(0, 150, 100, 100))
        assert cov.empty(Window(0, 300, 300, 300))


@pytest.mark.skipif(not (REPO / "models" / MODEL / "card.json").is_file(),
                    reason="no shipped model card")
def test_batch_skips_empty_regions_and_equals_one_detection(sparse_vrt, tmp_path):
    import shapely
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.inference.detect import run_detect

    ref = run_detect({"source": {"kind": "file", "path": str(sparse_vrt)}, "model": MODEL},
                     [])
    store = JobStore(tmp_path / "jobs")
    job = submit(store, BatchParams(DetectParams(FileSource(str(sparse_vrt)), MODEL),
                                    out_path=str(tmp_path / "out.gpkg"), region_px=128,
                                    halo_px=16))
    stats = run_batch(store, job)["stats"]
    assert stats["regions_empty"] >= stats["regions"] // 3 > 0
    from pyogrio.raw import read
    _, _, geoms, fields = read(str(tmp_path / "out.gpkg"), layer="detections")[:4]
    multi = [shapely.from_wkb(g) for g in geoms]
    got = sorted((m.geoms[0] if len(m.geoms) == 1 else m).wkb for m in multi)
    want = sorted(shapely.from_wkt(f["wkt"]).wkb for f in ref["features"])
    assert len(got) == len(ref["features"]) > 0 and got == want
