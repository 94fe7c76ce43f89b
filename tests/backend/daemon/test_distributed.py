"""The batch path on a local Ray cluster gives the same polygons as on one machine.

Two actors (``ray.init(num_cpus=2)``) process the 45 tiny chunks of a VRT mosaic of four
real pv01 held-out tiles, in whatever order Ray hands them out.
"""

from __future__ import annotations

import pytest

from protocol.params import BatchParams, DetectParams
from test_batch import MODEL, gpkg_set, needs_model, polygon_set, pv01_vrt  # noqa: F401

ray = pytest.importorskip("ray", reason="ray is not installed (requirements-backend.txt)")


@pytest.fixture
def local_ray():
    from backend.inference.batch.distributed import init_ray
    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@needs_model
def test_ray_executor_equals_single_machine(pv01_vrt, tmp_path, local_ray):  # noqa: F811
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.inference.detect import run_detect

    req = {"source": {"kind": "file", "path": str(pv01_vrt)}, "model": MODEL}
    detect = DetectParams(req["source"], MODEL)
    store = JobStore(tmp_path / "jobs")
    local = submit(store, BatchParams(detect, out_path=str(tmp_path / "local.gpkg"),
                                      chunk_px=100, halo_px=16))
    remote = submit(store, BatchParams(detect, out_path=str(tmp_path / "ray.gpkg"),
                                       chunk_px=100, halo_px=16, executor="ray"))
    out = run_batch(store, remote)
    assert out["stats"]["executor"] == "ray" and out["stats"]["chunks"] == 45
    assert len(ray.nodes()) >= 1 and ray.cluster_resources().get("CPU") == 2
    run_batch(store, local)
    got_ray, chunks_ray = gpkg_set(tmp_path / "ray.gpkg")
    got_local, chunks_local = gpkg_set(tmp_path / "local.gpkg")
    assert got_ray == got_local and len(got_ray) >= 10
    assert sorted(chunks_ray) == sorted(chunks_local)  # same owners
    ref = run_detect({"source": req["source"], "model": MODEL}, [])
    assert got_ray == polygon_set(ref["features"])
