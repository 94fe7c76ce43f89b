"""From probabilities to owned objects: class families post-processed on their own, and
the exactly-once rule when a region's window has grown to the whole grid."""

from __future__ import annotations

import numpy as np
from affine import Affine

from backend.inference.objects import class_maps, merged, owned_objects, polygons
from backend.inference.pipeline import Options
from backend.models.card import ModelCard
from protocol.window import Window

T = Affine(0.1, 0.0, 0.0, 0.0, -0.1, 10.0)
OPTS = Options(threshold=0.5, min_area_m2=0.0, max_hole_m2=0.0, simplify_m=0.0)


def card(outputs=None) -> ModelCard:
    d = {"id": "m", "version": "1", "bands": 3, "gsd_m": 0.1, "tile_size": 64,
         "overlap": 0, "threshold": 0.5, "min_area_m2": 0.0, "simplify_m": 0.0,
         "classes": [{"id": 1, "name": "road"}, {"id": 2, "name": "bridge"}],
         "normalize": {"mean": [0, 0, 0], "std": [1, 1, 1]}}
    if outputs:
        d.update(format="deepness", outputs=outputs)
    else:
        d.update(architecture="Unet", encoder="e")
    return ModelCard.from_dict(d)


def test_families_keep_objects_that_overlap_another_familys():
    probs = np.zeros((3, 8, 8), np.float32)
    probs[1, 2:5, 2:5] = 0.9  # a road ...
    probs[2, 3:6, 3:6] = 0.8  # ... and a bridge over part of it
    probs[0] = 1 - np.maximum(probs[1], probs[2])
    valid = np.ones((8, 8), bool)
    two = card([{"index": 0, "activation": "softmax", "classes": [1]},
                {"index": 1, "activation": "softmax", "classes": [2]}])
    raw, cleaned = class_maps(probs, valid, two, OPTS, T)
    assert cleaned.shape == (2, 8, 8)
    assert (cleaned[0] == 1).sum() == 9 and (cleaned[1] == 2).sum() == 9
    _, dets = polygons(cleaned, probs, two, OPTS, T, Window(0, 0, 8, 8), 8, 8)
    assert sorted((d.class_id, round(d.area_m2, 4)) for d in dets) == [(1, 0.09), (2, 0.09)]
    # one family (a model Ortholens trained): one class per pixel, the best
    _, one = class_maps(probs, valid, card(), OPTS, T)
    assert one.shape == (1, 8, 8) and (one[0] == 1).sum() == 9 and (one[0] == 2).sum() == 5
    assert merged(cleaned)[4, 4] == 1 and merged(cleaned)[5, 5] == 2


def test_a_window_grown_to_the_whole_grid_keeps_only_its_cores_objects():
    cmap = np.zeros((1, 8, 8), np.uint8)
    cmap[0, 1, 1] = cmap[0, 6, 6] = 1  # one object in each half
    whole = Window(0, 0, 8, 8)
    top = Window(0, 0, 4, 8)
    owned, touching = owned_objects(cmap, cmap, whole, top, 8, 8)
    assert owned[0, 1, 1] == 1 and owned[0, 6, 6] == 0 and touching == 0
    owned, _ = owned_objects(cmap, cmap, whole, whole, 8, 8)
    assert (owned == cmap).all()
