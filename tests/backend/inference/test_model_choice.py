"""The model a detection runs when it names none: the one whose GSD range holds the
layer's GSD (``protocol.choice``), in a model folder with a 0.1 m and a 0.3 m model;
an explicit model always wins; the engine's ``models`` reply ranks the candidates.

The two models share the shipped weights (what is checked is the choice, not the
accuracy); the layers are real pv01 pixels written at 0.1, 0.3 and 1.0 m.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from backend.inference.detect import run_detect
from protocol.params import DetectParams, FileSource
from tests.support import DEFAULT_MODEL, PV01_BLOCK, REPO, heldout, needs_real

FINE, COARSE = "pv-fine", "pv-coarse"


@pytest.fixture
def model_folder(tmp_path, monkeypatch):
    """``<tmp>/models`` with FINE (0.1 m, serves 0.05-0.15 m) and COARSE (runs at 0.3 m,
    serves 0.15-0.6 m), candidates in that order for CPU and GPU."""
    src = REPO / "models" / DEFAULT_MODEL
    root = tmp_path / "models"
    for mid, gsd, rng in ((FINE, 0.1, [0.05, 0.15]), (COARSE, 0.3, [0.15, 0.6])):
        d = root / mid
        d.mkdir(parents=True)
        card = json.loads((src / "card.json").read_text())
        card.update(id=mid, gsd_m=gsd, gsd_range_m=rng)
        for key in ("weights", "onnx"):
            os.symlink(src / card[key], d / card[key])
        (d / "card.json").write_text(json.dumps(card))
    (root / "defaults.json").write_text(json.dumps({"cpu": [FINE, COARSE],
                                                    "cuda": [FINE, COARSE]}))
    monkeypatch.setenv("ORTHOLENS_MODELS", str(root))
    monkeypatch.delenv("ORTHOLENS_DEFAULT_MODEL", raising=False)
    return root


def _layer_at(tmp_path, gsd_m: float):
    """A pv01 held-out tile's pixels written with ``gsd_m`` metre pixels (same CRS and
    top-left corner): a layer of that GSD."""
    import rasterio
    from affine import Affine

    with rasterio.open(heldout(PV01_BLOCK[0])) as ds:
        data, prof = ds.read(), ds.profile
        t = ds.transform
    prof.update(transform=Affine(gsd_m, 0, t.c, 0, -gsd_m, t.f))
    path = tmp_path / f"layer_{gsd_m:g}.tif"
    with rasterio.open(path, "w", **prof) as w:
        w.write(data)
    return path


@needs_real
@pytest.mark.parametrize("gsd, want, inside", [(0.1, FINE, True), (0.3, COARSE, True),
                                               (1.0, COARSE, False)])
def test_a_detection_without_model_runs_the_model_for_the_layer_gsd(
        model_folder, tmp_path, gsd, want, inside):
    res = run_detect(DetectParams(FileSource(str(_layer_at(tmp_path, gsd)))), [])
    stats = res["stats"]
    assert stats["gsd_choice"]["model"] == want
    assert stats["gsd_choice"]["inside"] is inside
    assert stats["gsd_choice"]["layer_gsd_m"] == pytest.approx(gsd, rel=1e-3)
    assert stats["gsd_m"] == pytest.approx(0.1 if want == FINE else 0.3)
    assert all(f["model"] == want for f in res["features"])
    if gsd == 0.1:  # the tile's panels, found by the model for 0.1 m
        assert len(res["features"]) >= 1
    outside = [w for w in stats["warnings"] if "outside every model's range" in w]
    assert bool(outside) is not inside, stats["warnings"]
    if not inside:
        assert "expect far fewer and less accurate detections" in outside[0]


@needs_real
def test_a_model_named_by_the_request_runs_whatever_the_layer_gsd(model_folder, tmp_path):
    res = run_detect(DetectParams(FileSource(str(_layer_at(tmp_path, 0.3))), FINE), [])
    assert "gsd_choice" not in res["stats"] and res["stats"]["gsd_m"] == 0.1
    assert {f["model"] for f in res["features"]} <= {FINE}


@needs_real
def test_the_models_reply_ranks_the_gsd_candidates(model_folder):
    import protocol as P
    from backend.daemon.handlers import HANDLERS
    from backend.daemon.server import Server

    server = Server(port=0, device="cpu", detect_fn=lambda *a: {})
    header = P.validate_request(P.request("models", id="q"))
    (_, reply), = HANDLERS["models"](server, b"me", header, [])
    ranks = {m["id"]: m["gsd_candidate"] for m in reply["models"]}
    assert ranks == {FINE: 0, COARSE: 1}
    assert [m["id"] for m in reply["models"] if m["default"]] == [FINE]
    ranges = {m["id"]: m["gsd_range_m"] for m in reply["models"]}
    assert ranges == {FINE: [0.05, 0.15], COARSE: [0.15, 0.6]}
    assert np.isclose(ranges[COARSE][0], ranges[FINE][1])
