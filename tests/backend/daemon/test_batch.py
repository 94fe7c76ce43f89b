"""Streaming batch jobs: region-by-region == in-extent, exactly once across a daemon SIGKILL.

Real data (``ORTHOLENS_DATA``): a VRT mosaic of four pv01 held-out tiles and a part of
the Vienna scene. Small extents and tiny regions keep the runs to seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.config import data_dir
from conftest import REPO, build_vrt, free_port
from protocol.params import BatchParams, DetectParams, FileSource

DATA = data_dir()
VIENNA = DATA / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
PV01 = DATA / "pv01" / "heldout"
PV01_BLOCK = ["PV01_325190_1204243", "PV01_325190_1204246", "PV01_325192_1204246",
              "PV01_325192_1204249"]
MODEL = "pv-unet-efl0"
#: 120 m x 120 m of Vienna = 1200 x 1200 px at the model's 0.1 m (9 tiles).
VIENNA_EXTENT = [-1620.0, 338480.0, -1500.0, 338600.0]

needs_model = pytest.mark.skipif(not (REPO / "models" / MODEL / "card.json").is_file(),
                                 reason="no shipped model card")


def polygon_set(features):
    """``{(class, wkb, score, area)}`` of protocol features (single polygons)."""
    import shapely
    return sorted((f["class"], shapely.from_wkt(f["wkt"]).wkb, f["score"], f["area_m2"])
                  for f in features)


def gpkg_set(path, layer="detections"):
    """The same tuples read back from a batch GeoPackage, plus the region column."""
    import shapely
    from pyogrio.raw import read
    meta, _, geoms, fields = read(str(path), layer=layer)[:4]
    names = list(meta["fields"])
    col = {n: fields[i] for i, n in enumerate(names)}
    out = []
    for i, g in enumerate(geoms):
        mp = shapely.from_wkb(g)
        poly = mp.geoms[0] if len(mp.geoms) == 1 else mp
        out.append((str(col["class"][i]), poly.wkb, float(col["score"][i]),
                    float(col["area_m2"][i])))
    return sorted(out), [int(c) for c in col["region"]]


@pytest.fixture(scope="module")
def pv01_vrt(tmp_path_factory):
    return build_vrt(tmp_path_factory.mktemp("vrt") / "pv01_block.vrt",
                     [PV01 / f"{n}.tif" for n in PV01_BLOCK])


@needs_model
def test_regions_equal_in_extent_on_vrt_mosaic(pv01_vrt, tmp_path):
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.inference.detect import run_detect

    req = {"source": {"kind": "file", "path": str(pv01_vrt)}, "model": MODEL}
    ref = run_detect(dict(req), [])
    assert len(ref["features"]) >= 10  # the block has panels on several roofs
    store = JobStore(tmp_path / "jobs")
    # tiny regions and halo: many objects cross region borders, several need a larger halo
    job = submit(store, BatchParams(DetectParams(FileSource(str(pv01_vrt)), MODEL),
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


@needs_model
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

    exe = shutil.which("gdalbuildvrt")
    files = []
    for n in PV01_BLOCK:
        dst = tmp_path / f"{n}.tif"
        data = (PV01 / f"{n}.tif").read_bytes()
        dst.write_bytes(data[: len(data) // 3] if n == PV01_BLOCK[-1] else data)
        files.append(dst)
    with rasterio.open(pv01_vrt) as ds:
        b = ds.bounds
    with rasterio.open(PV01 / f"{PV01_BLOCK[-1]}.tif") as ds:
        bad = box(*ds.bounds)
    damaged = tmp_path / "damaged.vrt"
    intact = tmp_path / "intact.vrt"  # the same extent with the damaged tile left out
    subprocess.run([exe, "-q", str(damaged)] + [str(f) for f in files], check=True)
    subprocess.run([exe, "-q", "-te", str(b.left), str(b.bottom), str(b.right), str(b.top),
                    str(intact)] + [str(f) for f in files[:-1]], check=True)
    outs = {}
    for name, vrt in (("damaged", damaged), ("intact", intact)):
        store = JobStore(tmp_path / f"jobs-{name}")
        job = submit(store, BatchParams(DetectParams(FileSource(str(vrt)), MODEL),
                                        out_path=str(tmp_path / f"{name}.gpkg"),
                                        region_px=100, halo_px=16))
        outs[name] = (run_batch(store, job)["stats"], store.get(job))
    stats, job = outs["damaged"]
    name = f"{PV01_BLOCK[-1]}.tif"
    assert job["state"] == "done" and name in job["message"], job["message"]
    assert list(stats["damaged_files"]) == [name] and stats["regions_unreadable"] >= 1
    assert any(name in w and "no-data" in w for w in stats["warnings"])
    got, _ = _rows_with_regions(tmp_path / "damaged.gpkg")
    ref, _ = _rows_with_regions(tmp_path / "intact.gpkg")

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


def _rows_with_regions(path, layer="detections"):
    """``(rows, regions)`` of a batch GeoPackage in file order (see :func:`gpkg_set`)."""
    import shapely
    from pyogrio.raw import read
    meta, _, geoms, fields = read(str(path), layer=layer)[:4]
    col = {n: fields[i] for i, n in enumerate(meta["fields"])}
    rows = []
    for i, g in enumerate(geoms):
        mp = shapely.from_wkb(g)
        poly = mp.geoms[0] if len(mp.geoms) == 1 else mp
        rows.append((str(col["class"][i]), poly.wkb, float(col["score"][i]),
                     float(col["area_m2"][i])))
    return rows, [int(c) for c in col["region"]]


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
            "model": MODEL, "model_version": "1"}
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

def _start_daemon(port, jobs_dir, log):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "--port", str(port),
                             "--jobs-dir", str(jobs_dir)], cwd=REPO, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonUnavailable
    client = OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=1.0)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.ping()
            break
        except DaemonUnavailable:
            assert proc.poll() is None, Path(log).read_text()[-2000:]
            assert time.monotonic() < deadline, "daemon did not start"
    client.timeout_s = 10.0
    return proc, client


@needs_model
@pytest.mark.skipif(not VIENNA.is_file(), reason="Vienna orthophoto missing")
def test_sigkill_mid_job_then_resume_gives_exactly_the_uninterrupted_polygons(tmp_path):
    from backend.inference.detect import run_detect

    jobs_dir, out = tmp_path / "jobs", tmp_path / "vienna.gpkg"
    log = tmp_path / "daemon.log"
    source = {"kind": "file", "path": str(VIENNA)}
    params = BatchParams(DetectParams(source, MODEL, extent=VIENNA_EXTENT, threshold=0.3),
                         out_path=str(out), region_px=160, halo_px=64)  # 8 x 8 regions
    port = free_port()
    proc, client = _start_daemon(port, jobs_dir, log)
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

    proc, client = _start_daemon(free_port(), jobs_dir, log)
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
    ref = run_detect({"source": source, "model": MODEL, "extent": VIENNA_EXTENT,
                      "threshold": 0.3}, [])
    assert len(ref["features"]) > 0
    assert got == polygon_set(ref["features"])  # none lost, none twice, all identical
    assert stats["count"] == len(got) == len(regions)


# ------------------------------------------------------------------ requests

def test_batch_requests_are_checked_before_a_job_exists(tmp_path):
    """Validation and refusals of batch / jobs / resume, answered at once (no model)."""
    import protocol as P
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError

    with pytest.raises(P.ProtocolError):  # pixels cannot be re-read on resume
        P.request("batch", source={"kind": "pixels", "crs": "EPSG:32651",
                                   "transform": [0.1, 0, 0, 0, -0.1, 0]},
                  model=MODEL, out_path=str(tmp_path / "o.gpkg"))
    with pytest.raises(P.ProtocolError):
        P.request("batch", source={"kind": "file", "path": "/x.tif"}, model=MODEL,
                  out_path=str(tmp_path / "o.shp"))
    with pytest.raises(P.ProtocolError):
        P.request("batch", source={"kind": "file", "path": "/x.tif"}, model=MODEL,
                  out_path=str(tmp_path / "o.gpkg"), region_px=8)
    server = Server(port=0, jobs_dir=str(tmp_path / "jobs"), detect_fn=lambda *a: {})
    server.start_in_thread()
    try:
        with OrtholensClient(server.endpoint, timeout_s=10) as c:
            assert c.jobs() == []
            raster = tmp_path / "r.tif"
            raster.write_bytes(b"")
            cases = [
                (dict(source={"kind": "file", "path": str(tmp_path / "missing.tif")},
                      model=MODEL, out_path=str(tmp_path / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model=MODEL,
                      out_path=str(tmp_path / "nodir" / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model="no-such-model",
                      out_path=str(tmp_path / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model=MODEL,
                      out_path=str(raster.with_suffix(".gpkg"))), "invalid_input"),
            ]
            raster.with_suffix(".gpkg").write_bytes(b"")  # exists, no overwrite
            for kwargs, code in cases:
                params = BatchParams(DetectParams(kwargs["source"], kwargs["model"]),
                                     out_path=kwargs["out_path"])
                with pytest.raises(DaemonError) as err:
                    c.submit_batch(params)
                assert err.value.code == code, kwargs
            with pytest.raises(DaemonError) as err:
                c.resume_request("0" * 32)
            assert err.value.code == "not_found"
            with pytest.raises(DaemonError) as err:
                c.jobs("0" * 32)
            assert err.value.code == "not_found"
            assert c.jobs() == []  # nothing was recorded
    finally:
        server.stop()


def test_resume_jobs_at_start_picks_up_interrupted_jobs(tmp_path):
    """``--resume-jobs``: a job a killed daemon left 'running' is queued at start-up."""
    from backend.daemon.jobstore import JobStore
    from backend.daemon.server import Server

    store = JobStore(tmp_path / "jobs")
    req = {"source": {"kind": "file", "path": str(tmp_path / "gone.tif")}, "model": MODEL,
           "out_path": str(tmp_path / "o.gpkg")}
    store.create("interrupted1", req)
    store.set_state("interrupted1", "running", "killed")
    store.create("finished1", req)
    store.set_state("finished1", "done", "3 polygons")
    server = Server(port=0, jobs_dir=str(tmp_path / "jobs"), resume_jobs=True,
                    detect_fn=lambda *a: {})
    server.start_in_thread()
    try:
        # a hang guard, not a timing check: a loaded 2-core machine needs time
        deadline = time.monotonic() + 180
        while store.get("interrupted1")["state"] in ("running", "queued"):
            assert time.monotonic() < deadline, store.get("interrupted1")
            time.sleep(0.05)
    finally:
        server.stop()
    job = store.get("interrupted1")
    assert job["state"] == "error" and "not found" in job["message"]  # it ran again
    assert store.get("finished1")["state"] == "done"


@needs_model
def test_resume_jobs_at_start_finishes_a_half_done_job(pv01_vrt, tmp_path):
    """``--resume-jobs`` takes a job a killed daemon left half done (some regions in
    the GeoPackage, state 'running') to completion, with exactly the polygons of a run
    that was never interrupted."""
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.daemon.server import Server
    from protocol.errors import JobCancelled

    store = JobStore(tmp_path / "jobs")
    detect = DetectParams({"kind": "file", "path": str(pv01_vrt)}, MODEL)
    whole = submit(store, BatchParams(detect, out_path=str(tmp_path / "whole.gpkg"),
                                      region_px=100, halo_px=16))
    run_batch(store, whole)
    job = submit(store, BatchParams(detect, out_path=str(tmp_path / "half.gpkg"),
                                    region_px=100, halo_px=16))
    seen = []
    with pytest.raises(JobCancelled):  # stop after 10 regions, as a kill would
        run_batch(store, job, progress=lambda f, m: seen.append(f),
                  cancelled=lambda: len(seen) >= 10)
    half = store.get(job)
    assert 0 < half["regions_done"] < half["n_regions"]
    store.set_state(job, "running", "killed")  # what a SIGKILL leaves behind
    server = Server(port=0, jobs_dir=str(tmp_path / "jobs"), resume_jobs=True)
    server.start_in_thread()
    try:
        deadline = time.monotonic() + 120
        while store.get(job)["state"] in ("running", "queued", "interrupted"):
            assert time.monotonic() < deadline, store.get(job)
            time.sleep(0.1)
    finally:
        server.stop()
    done = store.get(job)
    assert done["state"] == "done", done
    assert done["regions_done"] == done["n_regions"] == half["n_regions"]
    got, _ = gpkg_set(tmp_path / "half.gpkg")
    want, _ = gpkg_set(tmp_path / "whole.gpkg")
    assert got == want and len(want) >= 10
