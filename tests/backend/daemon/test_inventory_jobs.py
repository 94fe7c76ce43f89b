"""The daemon runs ``inventory`` jobs: through the client on real detections (two pv01
held-out tiles), with the same events as a detection, and a daemon that restricts paths
refuses layers and output folders outside its roots, naming the field."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import shapely

import protocol as P
from backend.daemon.server import Server
from protocol.client import OrtholensClient
from protocol.errors import DaemonError
from protocol.inventory import InventoryParams, VectorLayer
from tools.pv01_inventory import detect_to_gpkg, heldout_tiles

TILES = ("PV01_325192_1204246", "PV01_325173_1203750")


@pytest.fixture(scope="module")
def detections(tmp_path_factory):
    tiles = [t for t in heldout_tiles() if t.stem in TILES]
    assert len(tiles) == 2, "the pv01 held-out tiles are needed (ORTHOLENS_DATA)"
    path = tmp_path_factory.mktemp("det") / "root" / "detections.gpkg"
    path.parent.mkdir()
    per_tile = detect_to_gpkg(tiles, path)
    return path, [shapely.from_wkt(f["wkt"]) for fs in per_tile for f in fs]


def test_an_inventory_job_through_the_client(detections, tmp_path):
    path, polys = detections
    seen = []
    with Server(port=0, device="test") as server, OrtholensClient(server.endpoint) as c:
        res = c.inventory(InventoryParams(detections=VectorLayer(str(path)),
                                          out_dir=str(tmp_path / "out")),
                          on_progress=lambda f, m: seen.append(m))
        assert c.status()[0]["state"] == "done"
    assert res["type"] == "result" and res["features"] == []
    stats = res["stats"]
    assert stats["totals"]["installations"] == len(polys) > 5
    assert stats["totals"]["area_m2"] == pytest.approx(sum(g.area for g in polys),
                                                       abs=1e-3)
    for kind in ("gpkg", "csv", "html"):
        assert Path(stats["outputs"][kind]).is_file()
    assert Path(stats["outputs"]["html"]).parent == tmp_path / "out"


def test_a_restricted_daemon_checks_every_path(detections, tmp_path):
    path, _ = detections
    root = path.parent
    outside = tmp_path / "elsewhere.gpkg"
    shutil.copy(path, outside)
    ok = VectorLayer(str(path))
    cases = [(dict(detections=VectorLayer(str(outside)), out_dir=str(root / "o")),
              "detections", "the detections layer's path is outside"),
             (dict(detections=ok, buildings=VectorLayer("/etc/passwd"),
                   out_dir=str(root / "o")), "buildings", "the buildings layer's path"),
             (dict(detections=ok, earlier=VectorLayer("https://example.org/a.gpkg"),
                   out_dir=str(root / "o")), "earlier", "not URLs"),
             (dict(detections=ok, out_dir=str(tmp_path / "out")), "out_dir",
              "the output folder is outside")]
    with Server(port=0, device="test", restrict_paths=True,
                allowed_roots=[str(root)]) as server, \
            OrtholensClient(server.endpoint) as c:
        for kw, field, words in cases:
            with pytest.raises(DaemonError) as ei:
                c.inventory(InventoryParams(**kw))
            assert (ei.value.code, ei.value.field) == (P.E_FORBIDDEN, field)
            assert words in ei.value.message
        link = tmp_path / "link.gpkg"  # outside, but it resolves inside: allowed
        os.symlink(path, link)
        res = c.inventory(InventoryParams(detections=VectorLayer(str(link)),
                                          out_dir=str(root / "o")))
        assert res["stats"]["outputs"]["gpkg"] == str(root / "o" / "solar_inventory.gpkg")
