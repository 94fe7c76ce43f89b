"""Streaming batch jobs: region-by-region == in-extent, exactly once across a daemon SIGKILL.

Real data (``ORTHOLENS_DATA``): a VRT mosaic of four pv01 held-out tiles and a part of
the Vienna scene. Small extents and tiny regions keep the runs to seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from protocol.client import OrtholensClient
from protocol.params import BatchParams, DetectParams, FileSource
from tests.support import (DEFAULT_MODEL, PV01_BLOCK, VIENNA, build_vrt, gpkg_rows, gpkg_set,
                           heldout, needs_real, polygon_set, start_engine)

#: 120 m x 120 m of Vienna = 1200 x 1200 px at the model's 0.1 m (9 tiles).
VIENNA_EXTENT = [-1620.0, 338480.0, -1500.0, 338600.0]


@needs_real
def test_regions_equal_in_extent_on_vrt_mosaic(pv01_vrt, tmp_path):
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.inference.detect import run_detect

    req = {"source": {"kind": "file", "path": str(pv01_vrt)}, "model": DEFAULT_MODEL}
    ref = run_detect(dict(req), [])
    assert len(ref["features"]) >= 10  # the block has panels on several roofs
    store = JobStore(tmp_path / "jobs")
    # tiny regions and halo: many objects cross region borders, several need a larger halo
    job = submit(store, BatchParams(DetectParams(FileSource(str(pv01_vrt)), DEFAULT_MODEL),
                                    out_path=str(tmp_path / "out.gpkg"), region_px=100,
                                    halo_px=16))
    out = run_batch(store, job)
    stats = out["stats"]
    assert stats["regions"] == 45 and stats["regions_halo_grown"] > 0
    assert stats["objects_cut"] == 0
    got, regions = gpkg_set(tmp_path / "out.gpkg")
    assert got == polygon_set(ref["features"])  # same WKT, score and area: exactly
    assert stats["count"] == len(got)
    assert store.get(job)["state"] == "done"


@needs_real
def test_mosaic_with_a_damaged_tile_reports_it_and_finishes_the_rest(pv01_vrt, tmp_path):
    """One of four mosaic tiles truncated to a third: the job ends done, names the tile,
    and every panel 10 m or more from that tile comes out as in a mosaic that simply
    leaves the tile out (no-data there). Nearer, the readable rows of the damaged tile
    are context the other mosaic lacks, so outlines may differ."""
    import rasterio
    import shapely
    from shapely.geometry import box

    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore

    files = []
    for n in PV01_BLOCK:
        dst = tmp_path / f"{n}.tif"
        data = heldout(n).read_bytes()
        dst.write_bytes(data[: len(data) // 3] if n == PV01_BLOCK[-1] else data)
        files.append(dst)
    with rasterio.open(pv01_vrt) as ds:
        b = ds.bounds
    with rasterio.open(heldout(PV01_BLOCK[-1])) as ds:
        bad = box(*ds.bounds)
    damaged = build_vrt(tmp_path / "damaged.vrt", files)
    # the same extent with the damaged tile left out
    intact = build_vrt(tmp_path / "intact.vrt", files[:-1], "-te", str(b.left), str(b.bottom),
                       str(b.right), str(b.top))
    outs = {}
    for name, vrt in (("damaged", damaged), ("intact", intact)):
        store = JobStore(tmp_path / f"jobs-{name}")
        job = submit(store, BatchParams(DetectParams(FileSource(str(vrt)), DEFAULT_MODEL),
                                        out_path=str(tmp_path / f"{name}.gpkg"),
                                        region_px=100, halo_px=16))
        outs[name] = (run_batch(store, job)["stats"], store.get(job))
    stats, job = outs["damaged"]
    name = f"{PV01_BLOCK[-1]}.tif"
    assert job["state"] == "done" and name in job["message"], job["message"]
    assert list(stats["damaged_files"]) == [name] and stats["regions_unreadable"] >= 1
    assert any(name in w and "no-data" in w for w in stats["warnings"])
    got, _ = gpkg_rows(tmp_path / "damaged.gpkg")
    ref, _ = gpkg_rows(tmp_path / "intact.gpkg")

    def away(rows):  # panels beyond the model's context (a 512 px tile) of the bad tile
        return [r for r in rows if shapely.from_wkb(r[1]).distance(bad) >= 10.0]

    got_away, ref_away = away(got), away(ref)
    assert len(ref_away) >= 5 and len(got_away) == len(ref_away)
    for r in ref_away:
        rg = shapely.from_wkb(r[1])
        match = max(got_away, key=lambda g: shapely.from_wkb(g[1]).intersection(rg).area)
        mg = shapely.from_wkb(match[1])
        assert mg.intersection(rg).area / mg.union(rg).area > 0.95
        assert abs(match[2] - r[2]) < 0.02


def test_reconcile_drops_rows_of_unrecorded_regions(tmp_path):
    """A crash after a region's rows were written but before the store recorded it."""
    from backend.daemon.batch_runner import reconcile_output
    from backend.daemon.jobstore import JobStore
    from backend.inference.batch.regions import RegionResult
    from backend.inference.batch.gpkg import GpkgWriter

    store = JobStore(tmp_path / "jobs")
    store.create("j1", {"out_path": str(tmp_path / "o.gpkg")})
    w = GpkgWriter(str(tmp_path / "o.gpkg"), "detections", "EPSG:32651")
    assert reconcile_output(w, store, "j1") == {}
    feat = {"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))", "class": "photovoltaic",
            "class_id": 1, "score": 0.9, "agreement": 1.0, "area_m2": 1.0,
            "model": DEFAULT_MODEL, "model_version": "1"}
    w.append(RegionResult(0, [feat, feat]))
    store.mark_done("j1", 0, 2)
    w.append(RegionResult(1, [feat]))          # written, then "killed": not recorded
    assert w.region_counts() == {0: 2, 1: 1}
    assert reconcile_output(w, store, "j1") == {0: 2}
    assert w.region_counts() == {0: 2}
    store.mark_done("j1", 1, 0)               # a region recorded with rows missing
    store.mark_done("j1", 2, 3)
    assert reconcile_output(w, store, "j1") == {0: 2, 1: 0}


# ------------------------------------------------------------------ kill and resume

def _engine(log, jobs_dir):
    """``(process, client)`` of an engine process of its own whose batch job store is
    ``jobs_dir``."""
    endpoint, proc = start_engine(log, wait_s=60, args=["--jobs-dir", str(jobs_dir)])
    return proc, OrtholensClient(endpoint, timeout_s=10.0)



@needs_real
@pytest.mark.skipif(not VIENNA.is_file(), reason="Vienna orthophoto missing")
def test_sigkill_mid_job_then_resume_gives_exactly_the_uninterrupted_polygons(tmp_path):
    from backend.inference.detect import run_detect

    jobs_dir, out = tmp_path / "jobs", tmp_path / "vienna.gpkg"
    source = {"kind": "file", "path": str(VIENNA)}
    params = BatchParams(DetectParams(source, DEFAULT_MODEL, extent=VIENNA_EXTENT, threshold=0.3),
                         out_path=str(out), region_px=160, halo_px=64)  # 8 x 8 regions
    proc, client = _engine(tmp_path / "daemon.log", jobs_dir)
    try:
        acc = client.submit_batch(params)
        job_id = acc["job_id"]
        deadline = time.monotonic() + 120
        while True:  # kill once some, not all, regions are recorded
            job = client.jobs(job_id)[0]
            if job["regions_done"] >= 0.3 * max(job["regions_total"], 1) > 0:
                # freeze it at once (a status round trip is far shorter than a
                # region), then kill: no region can complete in between
                os.killpg(proc.pid, signal.SIGSTOP)
                break
            assert job["state"] not in ("done", "error"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert job["regions_done"] < job["regions_total"] == 64

    proc, client = _engine(tmp_path / "daemon-resumed.log", jobs_dir)
    try:
        listed = client.jobs()
        mine = [j for j in listed if j["job_id"] == job_id]
        assert mine and mine[0]["state"] == "interrupted" and mine[0]["resumable"]
        assert mine[0]["regions_done"] >= job["regions_done"]
        seen = []
        result = client.resume(job_id, on_progress=lambda f, m: seen.append(f),
                               job_timeout_s=300)
        stats = result["stats"]
        assert stats["regions_resumed"] >= job["regions_done"] and stats["regions"] == 64
        assert client.jobs(job_id)[0]["state"] == "done"
        # resuming a finished job is refused, clearly
        from protocol.errors import DaemonError
        with pytest.raises(DaemonError) as err:
            client.resume(job_id)
        assert err.value.code == "invalid_input"
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    got, regions = gpkg_set(out)
    # the uninterrupted run: one in-extent detection of the same area
    ref = run_detect({"source": source, "model": DEFAULT_MODEL, "extent": VIENNA_EXTENT,
                      "threshold": 0.3}, [])
    assert len(ref["features"]) > 0
    assert got == polygon_set(ref["features"])  # none lost, none twice, all identical
    assert stats["count"] == len(got) == len(regions)


# ------------------------------------------------------------------ requests


