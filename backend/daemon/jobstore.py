"""The batch job store: which batch jobs exist, with what parameters, and which of
their regions are finished. One SQLite file, so a daemon that was killed finds its jobs
again when it restarts and resumes them where they stopped.

Location: ``ORTHOLENS_JOBS_DIR`` or the daemon's ``--jobs-dir``; by default
``$XDG_DATA_HOME/ortholens/jobs`` (``~/.local/share/ortholens/jobs``; ``%LOCALAPPDATA%``
on Windows). The file is ``batch-jobs.sqlite`` in that folder.

Tables::

    jobs(job_id PK, created, updated, state, request JSON, plan JSON, n_regions,
         n_features, message)
    regions(job_id, idx, n_features, finished, PK (job_id, idx))

States: ``queued`` (accepted, not started), ``running`` (a daemon works on it, or
worked on it when it was killed: then it is *interrupted*), ``cancelled``, ``error``,
``done``. Every job that is not ``done`` can be resumed.

Exactly-once bookkeeping: the batch runner appends a region's polygons to the output
GeoPackage (one SQLite transaction, each row carrying its region index) and only then
records the region here. A crash between the two leaves rows of an unrecorded region in
the GeoPackage; :func:`backend.daemon.batch_runner.reconcile_output` deletes them before
the job resumes, and the region runs again. Every connection is short-lived and per call, so
the store can be used from any thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

from backend.daemon.jobs import CANCELLED, DONE, ERROR, QUEUED, RUNNING

STATES = (QUEUED, RUNNING, DONE, ERROR, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    plan TEXT,
    n_regions INTEGER NOT NULL DEFAULT 0,
    n_features INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS regions (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    n_features INTEGER NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


def default_jobs_dir() -> Path:
    """``ORTHOLENS_JOBS_DIR``, else the user's data folder + ``ortholens/jobs``."""
    env = os.environ.get("ORTHOLENS_JOBS_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "ortholens" / "jobs"


class JobStore:
    """SQLite-backed record of batch jobs and their finished regions.

    Args:
        folder: where ``batch-jobs.sqlite`` lives (created); default :func:`default_jobs_dir`.
    """

    def __init__(self, folder: Optional[os.PathLike] = None):
        self.folder = Path(folder) if folder is not None else default_jobs_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "batch-jobs.sqlite"
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(str(self.path), timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            with db:  # one transaction, committed on success
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ jobs

    def create(self, job_id: str, request: Dict[str, Any]) -> None:
        """Record a new job (state ``queued``)."""
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO jobs (job_id, created, updated, state, request) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (job_id, now, now, QUEUED, json.dumps(request)))

    def set_plan(self, job_id: str, plan: Dict[str, Any], n_regions: int) -> None:
        """Store the job's grid/region plan (fixed at its first start)."""
        with self._db() as db:
            db.execute("UPDATE jobs SET plan = ?, n_regions = ?, updated = ? WHERE job_id = ?",
                       (json.dumps(plan), int(n_regions), time.time(), job_id))

    def set_state(self, job_id: str, state: str, message: str = "") -> None:
        """Record the job's state and a message (at most 500 characters kept).

        Raises:
            ValueError: ``state`` is not one of :data:`STATES`.
        """
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self._db() as db:
            db.execute("UPDATE jobs SET state = ?, message = ?, updated = ? WHERE job_id = ?",
                       (state, message[:500], time.time(), job_id))

    def get(self, job_id: str) -> Optional[Dict[str, Any]]:
        """The job as a dict (``request`` and ``plan`` decoded, ``regions_done``), or None."""
        with self._db() as db:
            row = db.execute("SELECT job_id, created, updated, state, request, plan, "
                             "n_regions, n_features, message FROM jobs WHERE job_id = ?",
                             (job_id,)).fetchone()
            if row is None:
                return None
            done = db.execute("SELECT COUNT(*), COALESCE(SUM(n_features), 0) FROM regions "
                              "WHERE job_id = ?", (job_id,)).fetchone()
        return _row(row, done)

    def list(self) -> List[Dict[str, Any]]:
        """Every job, newest first (see :meth:`get`)."""
        with self._db() as db:
            rows = db.execute("SELECT job_id, created, updated, state, request, plan, "
                              "n_regions, n_features, message FROM jobs "
                              "ORDER BY created DESC").fetchall()
            counts = {r[0]: (r[1], r[2]) for r in db.execute(
                "SELECT job_id, COUNT(*), COALESCE(SUM(n_features), 0) FROM regions "
                "GROUP BY job_id")}
        return [_row(r, counts.get(r[0], (0, 0))) for r in rows]

    def delete(self, job_id: str) -> None:
        """Forget the job and its regions."""
        with self._db() as db:
            db.execute("DELETE FROM regions WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    # ------------------------------------------------------------------ regions

    def done_regions(self, job_id: str) -> Dict[int, int]:
        """``{region index: polygons written}`` of the job's finished regions."""
        with self._db() as db:
            return {int(i): int(n) for i, n in db.execute(
                "SELECT idx, n_features FROM regions WHERE job_id = ?", (job_id,))}

    def mark_done(self, job_id: str, idx: int, n_features: int) -> None:
        """Record region ``idx`` as finished with ``n_features`` polygons written."""
        now = time.time()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO regions (job_id, idx, n_features, finished) "
                       "VALUES (?, ?, ?, ?)", (job_id, int(idx), int(n_features), now))
            db.execute("UPDATE jobs SET n_features = (SELECT COALESCE(SUM(n_features), 0) "
                       "FROM regions WHERE job_id = ?), updated = ? WHERE job_id = ?",
                       (job_id, now, job_id))

    def clear_regions(self, job_id: str, keep: Optional[Set[int]] = None) -> None:
        """Forget the job's finished regions (all, or all but ``keep``)."""
        with self._db() as db:
            if not keep:
                db.execute("DELETE FROM regions WHERE job_id = ?", (job_id,))
            else:
                marks = ",".join("?" * len(keep))
                db.execute(f"DELETE FROM regions WHERE job_id = ? AND idx NOT IN ({marks})",
                           (job_id, *sorted(keep)))


def _row(row, done) -> Dict[str, Any]:
    job_id, created, updated, state, request, plan, n_regions, n_features, message = row
    return {"job_id": job_id, "created": created, "updated": updated, "state": state,
            "request": json.loads(request), "plan": json.loads(plan) if plan else None,
            "n_regions": int(n_regions), "regions_done": int(done[0]),
            "n_features": int(done[1]), "message": message}
