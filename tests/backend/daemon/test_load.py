"""Load: 100 detections on small real extents from 5 concurrent clients
against one real daemon process; every answer must equal the reference run.

The latency figures are printed and written to ``out/load.json`` (not asserted: the
test machine is shared); ``python3 build.py load`` runs the same scenario.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.loadtest import run_load, summary, write_json
from protocol.launcher import start_daemon

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, get_free_port):
    port = get_free_port()
    proc = start_daemon(sys.executable, port, str(REPO), wait_s=120,
                        log_path=str(tmp_path_factory.mktemp("load") / "daemon.log"))
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:  # noqa: BLE001
            proc.kill()


def test_hundred_requests_from_five_clients(endpoint):
    r = run_load(endpoint, requests=100, clients=5)
    print("\n" + summary(r))
    write_json(dict(r, command="pytest tests/backend/daemon/test_load.py"), REPO / "out" / "load.json")
    assert r["error_messages"] == [] and r["errors"] == 0
    assert r["answered"] == 100 and r["mismatches"] == 0
    assert sum(r["reference_features"]) >= 5  # the extents really hold panels
