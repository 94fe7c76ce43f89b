"""Batch jobs inside the daemon (``backend.daemon.batch_service``): the ``batch``,
``jobs`` and ``resume`` requests checked before a job exists, and the jobs a killed
daemon left behind resumed at start-up (``--resume-jobs``).
"""

from __future__ import annotations

import time

import pytest

from protocol.params import BatchParams, DetectParams
from tests.support import DEFAULT_MODEL, gpkg_set, needs_real


def test_batch_requests_are_checked_before_a_job_exists(tmp_path):
    """Validation and refusals of batch / jobs / resume, answered at once (no model)."""
    import protocol as P
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError

    with pytest.raises(P.ProtocolError):  # pixels cannot be re-read on resume
        P.request("batch", source={"kind": "pixels", "crs": "EPSG:32651",
                                   "transform": [0.1, 0, 0, 0, -0.1, 0]},
                  model=DEFAULT_MODEL, out_path=str(tmp_path / "o.gpkg"))
    with pytest.raises(P.ProtocolError):
        P.request("batch", source={"kind": "file", "path": "/x.tif"}, model=DEFAULT_MODEL,
                  out_path=str(tmp_path / "o.shp"))
    with pytest.raises(P.ProtocolError):
        P.request("batch", source={"kind": "file", "path": "/x.tif"}, model=DEFAULT_MODEL,
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
                      model=DEFAULT_MODEL, out_path=str(tmp_path / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model=DEFAULT_MODEL,
                      out_path=str(tmp_path / "nodir" / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model="no-such-model",
                      out_path=str(tmp_path / "a.gpkg")), "not_found"),
                (dict(source={"kind": "file", "path": str(raster)}, model=DEFAULT_MODEL,
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
    req = {"source": {"kind": "file", "path": str(tmp_path / "gone.tif")}, "model": DEFAULT_MODEL,
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


@needs_real
def test_resume_jobs_at_start_finishes_a_half_done_job(pv01_vrt, tmp_path):
    """``--resume-jobs`` takes a job a killed daemon left half done (some regions in
    the GeoPackage, state 'running') to completion, with exactly the polygons of a run
    that was never interrupted."""
    from backend.daemon.batch_runner import run_batch, submit
    from backend.daemon.jobstore import JobStore
    from backend.daemon.server import Server
    from protocol.errors import JobCancelled

    store = JobStore(tmp_path / "jobs")
    detect = DetectParams({"kind": "file", "path": str(pv01_vrt)}, DEFAULT_MODEL)
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


def test_a_job_is_stored_as_queued_before_the_batch_thread_can_take_it(tmp_path):
    """The queued state is written before the job enters the queue: written after, it
    overwrote the final state of a job the batch thread had already run (a resumed job
    then stayed 'queued' for ever)."""
    import threading

    from backend.daemon.access import Access
    from backend.daemon.batch_service import BatchService
    from backend.daemon.jobstore import JobStore

    service = BatchService(Access(None, False, []), threading.Event(), str(tmp_path / "jobs"))
    seen = []

    class Recording(JobStore):
        def set_state(self, job_id, state, message=""):
            seen.append((state, len(service._queue)))
            super().set_state(job_id, state, message)

    service._store = Recording(tmp_path / "jobs")
    service.store.create("j1", {"source": {"kind": "file", "path": "x.tif"}})
    service._enqueue(b"", None, "j1")
    assert seen == [("queued", 0)]
    job = service.next_job()
    assert job.job_id == "j1" and service.store.get("j1")["state"] == "queued"
