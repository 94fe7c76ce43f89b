"""The multi-class path (typed polygons) on a second real set: SpaceNet Atlanta.

pv01 has one class (photovoltaic), so the shipped models cannot exercise typed
output. This test drives the same pipeline (tiling with seams, stitching of
``1 + classes`` channels, per-class cleaning and polygonization, class names from the
card) with two classes taken from the 43 real building footprints of the Atlanta
scene (SpaceNet imagery CC BY-SA 4.0 via solaris; footprints from OpenStreetMap,
ODbL): "small building" (< 150 m²) and "large building" (>= 150 m²).

The "model" is an oracle: the footprints, rasterized per class into the bands of a
pixels source on the scene's real grid (0.5 m, EPSG:32616), and an engine that reads
class probabilities from those bands. It is exact under any tiling, so every returned
polygon must carry the class of the footprint it covers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from shapely.geometry import shape

from backend.inference import detect as D
from backend.models.card import ModelCard
import protocol as P
from tests.support import ATLANTA

SPLIT_M2 = 150.0


class OraclePredictor:
    """p(class k) = band k / 255 for k = 1, 2; background = the rest."""

    kind, device, n_members = "oracle", "cpu", 1

    def __init__(self, card):
        self.card = card

    @property
    def channels(self):
        return self.card.num_outputs

    def predict_raw(self, tiles):
        fg = tiles[:, :2].astype(np.float32) / 255.0
        return np.concatenate([1.0 - fg.sum(1, keepdims=True), fg], 1)


@pytest.fixture(scope="module")
def scene():
    with rasterio.open(ATLANTA) as ds:
        transform, crs, shape_ = ds.transform, ds.crs, (ds.height, ds.width)
    feats = json.loads((ATLANTA.with_name("building_footprints.geojson")).read_text())["features"]
    geoms = [shape(f["geometry"]) for f in feats]
    cls = [1 if g.area < SPLIT_M2 else 2 for g in geoms]
    bands = np.zeros((3,) + shape_, np.uint8)
    for k in (1, 2):
        gk = [g for g, c in zip(geoms, cls) if c == k]
        bands[k - 1] = rasterize(gk, out_shape=shape_, transform=transform,
                                 default_value=255, dtype="uint8")
    return {"transform": transform, "crs": crs, "bands": bands, "geoms": geoms, "cls": cls}


def test_two_classes_come_back_typed(scene, monkeypatch):
    card = ModelCard.from_dict({
        "id": "atlanta-oracle", "version": "0", "architecture": "oracle", "encoder": "-",
        "classes": [{"id": 1, "name": "small building", "color": "#1f77b4"},
                    {"id": 2, "name": "large building", "color": "#d62728"}],
        "bands": 3, "normalize": {"scale": 255, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "gsd_m": 0.5, "tile_size": 256, "overlap": 64, "threshold": 0.5,
        "min_area_m2": 5.0, "simplify_m": 0.0})
    t = scene["transform"]
    req = P.validate_request({"v": 1, "id": "mc", "type": "detect", "model": card.id,
                              "source": {"kind": "pixels", "crs": scene["crs"].to_wkt(),
                                         "transform": list(t)[:6]}})
    monkeypatch.setattr(D, "load_card", lambda mid: card)  # the oracle is not on disk
    res = D.run_detect(req, [scene["bands"]], predictor=OraclePredictor(card))
    assert res["stats"]["tiles"] >= 16  # 900 x 900 px in 256 px tiles: seams everywhere
    got = [(shapely.from_wkt(f["wkt"]), f["class"], f["class_id"]) for f in res["features"]]
    names = {1: "small building", 2: "large building"}
    # every footprint is found once, with its class, at IoU >= 0.9
    matched = 0
    for g, c in zip(scene["geoms"], scene["cls"]):
        best = max(got, key=lambda x: x[0].intersection(g).area / x[0].union(g).area)
        iou = best[0].intersection(g).area / best[0].union(g).area
        if iou >= 0.9:
            matched += 1
            assert best[1] == names[c] and best[2] == c
    assert matched >= 0.9 * len(scene["geoms"])
    per_class = res["stats"]["per_class"]
    assert set(per_class) == {"small building", "large building"}
    assert per_class["large building"] == sum(1 for c in scene["cls"] if c == 2)
