"""Load: 100 detections on small real extents from 5 concurrent clients
against one real daemon process; every answer must equal the reference run.

The latency figures are printed and written to ``out/load.json`` (not asserted: the
test machine is shared); ``python3 build.py load`` runs the same scenario.
"""

from __future__ import annotations

import pytest

from tools.loadtest import run_load, summary, write_json
from tests.support import REPO, running_engine


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with running_engine(tmp_path_factory.mktemp("load") / "daemon.log") as (endpoint, _):
        yield endpoint


def test_hundred_requests_from_five_clients(endpoint):
    r = run_load(endpoint, requests=100, clients=5)
    print("\n" + summary(r))
    write_json(dict(r, command="pytest tests/backend/daemon/test_load.py"), REPO / "out" / "load.json")
    assert r["error_messages"] == [] and r["errors"] == 0
    assert r["answered"] == 100 and r["mismatches"] == 0
    assert sum(r["reference_features"]) >= 5  # the extents really hold panels
