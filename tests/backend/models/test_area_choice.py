"""Versions taught on one area: how detection picks them (in process and through the
daemon) and taking them out of use. The area versions are the shipped weights
(:func:`tests.support.make_area_version`)."""

from __future__ import annotations

from typing import Optional

from backend.models import versions as V
from backend.models.area import build_area
from backend.models.area_choice import choose_area_version
from backend.models.card import ModelCard
from tests.support import (DEFAULT_MODEL, INSIDE, INSIDE_2, OUTSIDE, make_area_version,
                           needs_tiles, tile_bounds)

UTM = "EPSG:32651"
#: A 50 m x 40 m reviewed extent; an extent inside its 10 m area, one 5 km east.
SITE = (325000.0, 3560000.0, 325050.0, 3560040.0)
NEAR = (324995.0, 3559995.0, 325055.0, 3560045.0)
FAR = (330000.0, 3560000.0, 330050.0, 3560040.0)


def _card(vid: str, lineage: Optional[dict]) -> ModelCard:
    d = {"id": vid, "version": "1", "bands": 3, "gsd_m": 0.1, "tile_size": 64,
         "overlap": 0, "threshold": 0.5, "min_area_m2": 0.0, "simplify_m": 0.0,
         "classes": [{"id": 1, "name": "photovoltaic"}], "architecture": "Unet",
         "encoder": "e", "normalize": {"mean": [0, 0, 0], "std": [1, 1, 1]}}
    if lineage is not None:
        d["lineage"] = dict(lineage, id=vid, base="m")
    return ModelCard.from_dict(d)


def test_the_first_card_whose_area_covers_the_extent_is_chosen_past_cards_without_one():
    """Cards without a lineage, without an area or with one that cannot be read are
    passed over (not the end of the search); of the cards with areas, the first that
    covers the extent is chosen, and the reason describes its area."""
    here = build_area([SITE], UTM, 10.0)
    there = build_area([FAR], UTM, 10.0)
    cards = [_card("m-v1", None), _card("m-v2", {}),
             _card("m-v3", {"scope": {"footprint_wkt": 7}}),
             _card("m-v4", {"scope": there.to_dict()}),
             _card("m-v5", {"scope": here.to_dict()}),
             _card("m-v6", {"scope": here.to_dict()})]
    chosen, why = choose_area_version("m-v2", "m", cards, NEAR, UTM)
    assert chosen is cards[4]
    assert why == f"m-v5 was taught on this area ({here.describe()})"
    # the centre is the extent's (pyproj: 121.14439° E, 32.16307° N)
    assert why == ("m-v5 was taught on this area (0.00 km² around 32.1631° N, 121.1444° E "
                   "(1 reviewed extent + 10 m))")
    assert choose_area_version("m", "m", cards[:3], NEAR, UTM) == (
        None, "m has no version taught on an area: m was used")
    assert choose_area_version("m", "m", iter([]), NEAR, UTM) == (
        None, "m has no version taught on an area: m was used")


def test_when_no_area_covers_the_extent_the_reason_names_every_version_seen():
    here = build_area([SITE], UTM, 10.0)
    there = build_area([FAR], UTM, 10.0)
    cards = [_card("m-v4", {"scope": there.to_dict()}), _card("m-v1", None),
             _card("m-v5", {"scope": here.to_dict()})]
    beside = (SITE[0] + 100, SITE[1], SITE[2] + 100, SITE[3])  # 40 m past the area
    assert choose_area_version("m-v2", "m", cards, beside, UTM) == (
        None, "no version of m was taught on this area (m-v4, m-v5 cover other areas): "
              "m-v2 was used")


@needs_tiles
def test_area_versions_are_in_use_in_their_area_only(user_dir):
    from backend.models.catalog import list_cards, load_card
    vid = make_area_version([INSIDE])
    # an area version is not the active (general) version
    assert V.active_id(DEFAULT_MODEL) == DEFAULT_MODEL and V.area_ids(DEFAULT_MODEL) == [vid]
    card = load_card(vid)
    assert card.lineage.scope and card.lineage.in_use is True
    listed = {c.id: c for c in list_cards()}
    assert listed[vid].lineage.in_use is True and listed[vid].public()["lineage"]["scope"]
    chosen, why = V.version_for_extent(DEFAULT_MODEL, *tile_bounds(INSIDE_2))
    assert chosen is not None and chosen.id == vid and "taught on this area" in why
    none, why = V.version_for_extent(DEFAULT_MODEL, *tile_bounds(OUTSIDE))
    assert none is None and vid in why and f"{DEFAULT_MODEL} was used" in why
    # an extent in a CRS that cannot be put in lon/lat lies in no area
    local = 'LOCAL_CS["engineering",UNIT["metre",1]]'
    assert V.version_for_extent(DEFAULT_MODEL, tile_bounds(INSIDE_2)[0], local)[0] is None
    d = V.describe(DEFAULT_MODEL)
    row = next(v for v in d["versions"] if v["id"] == vid)
    assert row["in_use"] is True and row["scope"]["margin_m"] == 250.0
    # roll back = out of use there (the files stay); make active = in use again
    d = V.rollback(vid)
    assert V.area_ids(DEFAULT_MODEL) == [] and d["active"] == DEFAULT_MODEL
    assert V.version_for_extent(DEFAULT_MODEL, *tile_bounds(INSIDE))[0] is None
    assert load_card(vid).lineage.in_use is False
    V.activate(vid)
    assert V.area_ids(DEFAULT_MODEL) == [vid] and V.active_id(DEFAULT_MODEL) == DEFAULT_MODEL
    # a newer version of the same area wins; rolling it back gives the older one back
    v2 = make_area_version([INSIDE, INSIDE_2])
    assert V.area_ids(DEFAULT_MODEL) == [v2, vid]
    assert V.version_for_extent(DEFAULT_MODEL, *tile_bounds(INSIDE))[0].id == v2
    V.rollback(v2)
    assert V.version_for_extent(DEFAULT_MODEL, *tile_bounds(INSIDE))[0].id == vid


@needs_tiles
def test_detection_by_area_runs_the_version_inside_and_the_model_outside(user_dir,
                                                                          monkeypatch):
    """``by_area`` in ``run_detect``: the area version inside its area, the model
    asked for outside; without ``by_area`` exactly the model asked for (both fp32: a
    version has no INT8 graph of its own)."""
    from backend.inference.detect import run_detect
    from protocol.params import DetectParams, FileSource
    monkeypatch.setenv("ORTHOLENS_PRECISION", "fp32")
    monkeypatch.setattr("backend.inference.predictors._CACHE", {})
    vid = make_area_version([INSIDE])

    def run(path, by_area):
        return run_detect(DetectParams(FileSource(str(path)), DEFAULT_MODEL, by_area=by_area), [])

    inside = run(INSIDE_2, True)
    assert inside["stats"]["model"] == vid and "taught on this area" in \
        inside["stats"]["model_choice"]
    assert inside["features"] and {f["model"] for f in inside["features"]} == {vid}
    plain = run(INSIDE_2, None)
    assert plain["stats"]["model"] == DEFAULT_MODEL and "model_choice" not in plain["stats"]
    # the same weights: the same polygons, only the model named differs
    assert [f["wkt"] for f in plain["features"]] == [f["wkt"] for f in inside["features"]]
    outside = run(OUTSIDE, True)
    assert outside["stats"]["model"] == DEFAULT_MODEL
    assert all(f["model"] == DEFAULT_MODEL for f in outside["features"])
    assert f"no version of {DEFAULT_MODEL} was taught on this area" in \
        outside["stats"]["model_choice"]


@needs_tiles
def test_daemon_detects_with_the_area_version_inside_its_area_only(user_dir):
    """Through the daemon and the client, as the plugin asks."""
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.params import DetectParams, FileSource
    vid = make_area_version([INSIDE])
    with Server(port=0, device="cpu") as srv, OrtholensClient(srv.endpoint) as c:
        ins = c.detect(DetectParams(FileSource(str(INSIDE_2)), DEFAULT_MODEL, by_area=True))
        out = c.detect(DetectParams(FileSource(str(OUTSIDE)), DEFAULT_MODEL, by_area=True))
        exact = c.detect(DetectParams(FileSource(str(INSIDE_2)), DEFAULT_MODEL))
        listed = {m["id"]: m for m in c.models()}
        d = c.rollback(vid)
        after = c.detect(DetectParams(FileSource(str(INSIDE_2)), DEFAULT_MODEL, by_area=True))
    assert ins["stats"]["model"] == vid and {f["model"] for f in ins["features"]} == {vid}
    assert out["stats"]["model"] == DEFAULT_MODEL and exact["stats"]["model"] == DEFAULT_MODEL
    assert listed[vid]["lineage"]["in_use"] is True and listed[vid]["lineage"]["scope"]
    assert d["active"] == DEFAULT_MODEL and not next(v for v in d["versions"]
                                             if v["id"] == vid)["in_use"]
    assert after["stats"]["model"] == DEFAULT_MODEL


@needs_tiles
def test_an_extent_half_over_the_area_runs_the_model_asked_for(user_dir):
    """A version taught on the middle of a held-out tile (a 13.6 m square 6 m inside
    its edges, no margin) runs only for an extent its area covers whole: extents half
    over it, with its top-left corner inside the area or its bottom-right one, and the
    whole tile around it run the model asked for."""
    from backend.inference.detect import run_detect
    from protocol.params import DetectParams, FileSource
    (x0, y0, x1, y1), _ = tile_bounds(INSIDE)
    vid = make_area_version([INSIDE], margin_m=0.0,
                            boxes=[(x0 + 6, y0 + 6, x1 - 6, y1 - 6)])

    def model(extent):
        stats = run_detect(DetectParams(FileSource(str(INSIDE)), DEFAULT_MODEL,
                                        extent=extent, by_area=True), [])["stats"]
        return stats["model"], stats["model_choice"]

    chosen, why = model((x0 + 8, y0 + 8, x1 - 8, y1 - 8))
    assert chosen == vid and "taught on this area" in why
    for extent in [(x0 + 8, y0 + 1, x1 - 1, y1 - 8),   # top-left corner inside
                   (x0 + 1, y0 + 8, x1 - 8, y1 - 1),   # bottom-right corner inside
                   (x0, y0, x1, y1)]:                  # the whole tile around it
        chosen, why = model(extent)
        assert chosen == DEFAULT_MODEL and vid in why, extent
