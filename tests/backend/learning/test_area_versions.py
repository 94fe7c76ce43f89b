"""Versions taught on one area: their scope, how detection picks them (in process and
through the daemon), taking them out of use, and keeping a candidate the rule did not
accept.

An area version here is a copy of the shipped model's weights written as a user version
with a scope around one pv01 held-out site (PV01_325228_*): the outputs are then the
shipped model's, and what the tests check is *which* version ran (``stats["model"]``
and every feature's ``model``), inside the footprint and outside it (another held-out
site, PV01_325173_*, about 1 km away).
"""

from __future__ import annotations

import json
import shutil

import pytest

from backend.config import data_dir, models_dir
from backend.models import versions as V

MODEL = "pv-unet-efl0"
HELDOUT = data_dir() / "pv01" / "heldout"
INSIDE = HELDOUT / "PV01_325228_1203845.tif"
INSIDE_2 = HELDOUT / "PV01_325228_1203843.tif"
OUTSIDE = HELDOUT / "PV01_325173_1203750.tif"
HAVE = INSIDE.is_file() and OUTSIDE.is_file() and \
    (models_dir() / MODEL / "weights.safetensors").is_file()
needs_real = pytest.mark.skipif(not HAVE, reason="pv01 held-out tiles (ORTHOLENS_DATA) or "
                                                 "the shipped model missing")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user-models"
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(d))
    return d


def _bounds(path):
    import rasterio
    with rasterio.open(path) as ds:
        return tuple(ds.bounds), ds.crs.to_wkt()


def make_area_version(tiles, margin_m: float = 250.0, use: bool = True) -> str:
    """A user version of the shipped model (its own weights, moved in as a prepared
    candidate) scoped to the extents of ``tiles``; returns its id."""
    from backend.models.catalog import load_card
    from backend.models.scope import build_scope
    card = load_card(MODEL)
    prep = V.candidate_dir(MODEL)
    for name in ("weights.safetensors", "model.onnx"):
        if (card.path / name).is_file():
            shutil.copy(card.path / name, prep / name)
    boxes = [_bounds(t)[0] for t in tiles]
    scope = build_scope(boxes, _bounds(tiles[0])[1], margin_m).to_dict()
    new = V.write_version(card, None, {}, {"scope": scope, "decision": "accepted",
                                           "verdict": "accepted", "corrections": 1},
                          prepared=prep)
    shutil.rmtree(prep, ignore_errors=True)
    if use:
        V.activate(new.id)
    return new.id


# ----------------------------------------------------------------------------- scope

def test_scope_covers_its_site_and_not_the_next():
    """A footprint 250 m around one tile covers a tile of the same site and not one of
    a site a kilometre away; 0 m covers the tile itself but not its neighbour."""
    from backend.models.scope import Scope, build_scope, covers
    if not HAVE:
        pytest.skip("pv01 held-out tiles missing")
    (b, crs) = _bounds(INSIDE)
    s = build_scope([b], crs, 250.0)
    assert covers(s, *_bounds(INSIDE_2)) and covers(s, b, crs)
    assert not covers(s, *_bounds(OUTSIDE))
    # the footprint is about (25.6 + 500) m squared with rounded-off corners cut
    assert 0.2 < s.area_km2 < 0.28 and abs(s.reviewed_km2 - 25.6 ** 2 / 1e6) < 1e-5
    tight = build_scope([b], crs, 0.0)
    assert covers(tight, b, crs) and not covers(tight, *_bounds(INSIDE_2))
    # an extent larger than the footprint is not covered, even where they overlap
    big = (b[0] - 1000, b[1] - 1000, b[2] + 1000, b[3] + 1000)
    assert not covers(s, big, crs)
    again = Scope.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again is not None and covers(again, *_bounds(INSIDE_2))
    assert "km² around 32.5228° N, 120.384" in s.describe()
    with pytest.raises(ValueError):
        build_scope([], crs)


# ----------------------------------------------------------------------------- versions

@needs_real
def test_area_versions_are_in_use_in_their_area_only(user_dir):
    from backend.models.catalog import list_cards, load_card
    vid = make_area_version([INSIDE])
    # an area version is not the active (general) version
    assert V.active_id(MODEL) == MODEL and V.area_ids(MODEL) == [vid]
    card = load_card(vid)
    assert card.lineage.scope and card.lineage.in_use is True
    listed = {c.id: c for c in list_cards()}
    assert listed[vid].lineage.in_use is True and listed[vid].public()["lineage"]["scope"]
    chosen, why = V.version_for_extent(MODEL, *_bounds(INSIDE_2))
    assert chosen is not None and chosen.id == vid and "taught on this area" in why
    none, why = V.version_for_extent(MODEL, *_bounds(OUTSIDE))
    assert none is None and vid in why and f"{MODEL} was used" in why
    # an extent in a CRS that cannot be put in lon/lat lies in no area
    local = 'LOCAL_CS["engineering",UNIT["metre",1]]'
    assert V.version_for_extent(MODEL, _bounds(INSIDE_2)[0], local)[0] is None
    d = V.describe(MODEL)
    row = next(v for v in d["versions"] if v["id"] == vid)
    assert row["in_use"] is True and row["scope"]["margin_m"] == 250.0
    # roll back = out of use there (the files stay); make active = in use again
    d = V.rollback(vid)
    assert V.area_ids(MODEL) == [] and d["active"] == MODEL
    assert V.version_for_extent(MODEL, *_bounds(INSIDE))[0] is None
    assert load_card(vid).lineage.in_use is False
    V.activate(vid)
    assert V.area_ids(MODEL) == [vid] and V.active_id(MODEL) == MODEL
    # a newer version of the same area wins; rolling it back gives the older one back
    v2 = make_area_version([INSIDE, INSIDE_2])
    assert V.area_ids(MODEL) == [v2, vid]
    assert V.version_for_extent(MODEL, *_bounds(INSIDE))[0].id == v2
    V.rollback(v2)
    assert V.version_for_extent(MODEL, *_bounds(INSIDE))[0].id == vid


@needs_real
def test_detection_by_area_runs_the_version_inside_and_the_model_outside(user_dir):
    """``by_area`` in ``run_detect``: the area version inside its footprint, the model
    asked for outside; without ``by_area`` exactly the model asked for."""
    from backend.inference.detect import run_detect
    from protocol.params import DetectParams, FileSource
    vid = make_area_version([INSIDE])

    def run(path, by_area):
        return run_detect(DetectParams(FileSource(str(path)), MODEL, by_area=by_area), [])

    inside = run(INSIDE_2, True)
    assert inside["stats"]["model"] == vid and "taught on this area" in \
        inside["stats"]["model_choice"]
    assert inside["features"] and {f["model"] for f in inside["features"]} == {vid}
    plain = run(INSIDE_2, None)
    assert plain["stats"]["model"] == MODEL and "model_choice" not in plain["stats"]
    # the same weights: the same polygons, only the model named differs
    assert [f["wkt"] for f in plain["features"]] == [f["wkt"] for f in inside["features"]]
    outside = run(OUTSIDE, True)
    assert outside["stats"]["model"] == MODEL
    assert all(f["model"] == MODEL for f in outside["features"])
    assert "no version of pv-unet-efl0 was taught on this area" in \
        outside["stats"]["model_choice"]


@needs_real
def test_daemon_detects_with_the_area_version_inside_its_area_only(user_dir):
    """Through the daemon and the client, as the plugin asks."""
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.params import DetectParams, FileSource
    vid = make_area_version([INSIDE])
    with Server(port=0, device="cpu") as srv, OrtholensClient(srv.endpoint) as c:
        ins = c.detect(DetectParams(FileSource(str(INSIDE_2)), MODEL, by_area=True))
        out = c.detect(DetectParams(FileSource(str(OUTSIDE)), MODEL, by_area=True))
        exact = c.detect(DetectParams(FileSource(str(INSIDE_2)), MODEL))
        listed = {m["id"]: m for m in c.models()}
        d = c.rollback(vid)
        after = c.detect(DetectParams(FileSource(str(INSIDE_2)), MODEL, by_area=True))
    assert ins["stats"]["model"] == vid and {f["model"] for f in ins["features"]} == {vid}
    assert out["stats"]["model"] == MODEL and exact["stats"]["model"] == MODEL
    assert listed[vid]["lineage"]["in_use"] is True and listed[vid]["lineage"]["scope"]
    assert d["active"] == MODEL and not next(v for v in d["versions"]
                                             if v["id"] == vid)["in_use"]
    assert after["stats"]["model"] == MODEL


@needs_real
def test_a_pending_candidate_kept_by_the_user_records_it(user_dir):
    """A candidate the rule did not accept waits as a pending folder; ``keep`` makes it
    a version whose lineage records the rule's verdict and the user's choice; the
    token cannot be used twice; a general candidate kept is made active."""
    from backend.daemon.server import Server
    from backend.models.catalog import load_card
    from backend.models.scope import build_scope
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError
    import protocol as P
    card = load_card(MODEL)

    def pending(scope):
        prep = V.candidate_dir(MODEL)
        for name in ("weights.safetensors", "model.onnx"):  # as a candidate's export
            shutil.copy(card.path / name, prep / name)
        lineage = {"decision": "undecided", "verdict": "undecided",
                   "reason": "not enough held-out corrections to decide", "scope": scope}
        tok = V.save_pending(card, prep, {"acceptance_rule": "the rule"}, lineage)
        shutil.rmtree(prep)
        return tok

    scope = build_scope([_bounds(INSIDE)[0]], _bounds(INSIDE)[1]).to_dict()
    tok = pending(scope)
    assert (V.lineage_dir(MODEL) / f".pending-{tok}" / "weights.safetensors").is_file()
    assert V.describe(MODEL)["versions"][-1]["id"] == MODEL  # not a version yet
    with Server(port=0, device="cpu") as srv, OrtholensClient(srv.endpoint) as c:
        d = c.keep(MODEL, tok, "I checked the strip by eye")
        with pytest.raises(DaemonError) as ei:
            c.keep(MODEL, tok)
        assert ei.value.code == P.E_NOT_FOUND and "kept already" in str(ei.value)
        with pytest.raises(DaemonError) as ei:
            c.keep(MODEL, "../../etc")
        assert ei.value.code == P.E_INVALID_INPUT
    vid = d["kept"]
    lin = load_card(vid).lineage
    assert lin.decision == "kept by the user" and lin.verdict == "undecided"
    assert lin.to_dict()["kept"]["note"] == "I checked the strip by eye"
    assert lin.in_use is True and V.area_ids(MODEL) == [vid]
    assert load_card(vid).acceptance_rule == "the rule"
    assert not (V.lineage_dir(MODEL) / f".pending-{tok}").exists()
    general = V.keep_pending(MODEL, pending(None))
    assert V.active_id(MODEL) == general["kept"] == general["active"]
