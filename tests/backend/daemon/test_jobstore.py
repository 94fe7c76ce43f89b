"""backend.daemon.jobstore: the SQLite record of batch jobs and their finished
regions, as a restarted daemon reads it back."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from backend.daemon.jobstore import STATES, JobStore, default_jobs_dir


def test_a_job_is_recorded_and_read_back_by_another_store(tmp_path):
    store = JobStore(tmp_path / "jobs")
    assert store.path == tmp_path / "jobs" / "batch-jobs.sqlite" and store.path.is_file()
    request = {"model": "m", "source": {"kind": "file", "path": "/a.tif"}, "region_px": 64}
    store.create("j1", request)
    job = store.get("j1")
    assert job["state"] == "queued" and job["request"] == request and job["plan"] is None
    assert (job["n_regions"], job["regions_done"], job["n_features"], job["message"]) == (
        0, 0, 0, "")
    assert job["created"] == job["updated"]
    store.set_plan("j1", {"width": 300, "region_px": 64}, 12)
    store.set_state("j1", "running", "x" * 600)
    again = JobStore(tmp_path / "jobs").get("j1")  # what a restarted daemon sees
    assert again["plan"] == {"width": 300, "region_px": 64} and again["n_regions"] == 12
    assert again["state"] == "running" and again["message"] == "x" * 500
    assert again["updated"] >= again["created"]
    assert store.get("nope") is None


def test_unknown_states_are_refused(tmp_path):
    store = JobStore(tmp_path)
    store.create("j1", {})
    assert STATES == ("queued", "running", "done", "error", "cancelled")
    with pytest.raises(ValueError, match="unknown job state 'interrupted'"):
        store.set_state("j1", "interrupted")
    assert store.get("j1")["state"] == "queued"


def test_finished_regions_count_their_polygons(tmp_path):
    store = JobStore(tmp_path)
    store.create("j1", {})
    store.create("j2", {})
    store.mark_done("j1", 0, 3)
    store.mark_done("j1", 4, 2)
    store.mark_done("j1", 4, 5)  # recorded again: replaced, not added
    store.mark_done("j2", 0, 7)
    assert store.done_regions("j1") == {0: 3, 4: 5}
    job = store.get("j1")
    assert (job["regions_done"], job["n_features"]) == (2, 8)
    store.clear_regions("j1", keep={4})
    assert store.done_regions("j1") == {4: 5}
    store.clear_regions("j1")
    assert store.done_regions("j1") == {} and store.get("j1")["regions_done"] == 0
    assert store.done_regions("j2") == {0: 7}


def test_jobs_are_listed_newest_first_and_deleted_with_their_regions(tmp_path):
    store = JobStore(tmp_path)
    for job_id in ("old", "mid", "new"):
        store.create(job_id, {"id": job_id})
        time.sleep(0.01)  # distinct creation times
    store.mark_done("mid", 1, 4)
    listed = store.list()
    assert [j["job_id"] for j in listed] == ["new", "mid", "old"]
    assert [(j["regions_done"], j["n_features"]) for j in listed] == [(0, 0), (1, 4),
                                                                       (0, 0)]
    assert listed[1] == store.get("mid")
    store.delete("mid")
    assert store.get("mid") is None and store.done_regions("mid") == {}
    assert [j["job_id"] for j in store.list()] == ["new", "old"]


def test_the_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ORTHOLENS_JOBS_DIR", str(tmp_path / "j"))
    assert default_jobs_dir() == tmp_path / "j"
    assert JobStore().folder == tmp_path / "j"
    monkeypatch.delenv("ORTHOLENS_JOBS_DIR")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_jobs_dir() == tmp_path / "data" / "ortholens" / "jobs"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_jobs_dir() == Path(tmp_path / "home" / ".local" / "share" / "ortholens" /
                                      "jobs")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_jobs_dir() == (tmp_path / "home" / "Library" / "Application Support" /
                                  "ortholens" / "jobs")
