"""backend.learning.train without a training run: seeds, the normalisation statistics,
probabilities of a model, the post-processing of a tile and its choice on validation
probabilities, and which tiles a run fits and validates on (the real train split)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from backend.learning import data as pvdata
from backend.learning import train as T


def test_a_seed_fixes_python_numpy_and_torch():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    T.set_seed(3)
    first = draw()
    T.set_seed(3)
    assert draw() == first
    T.set_seed(4)
    assert draw() != first


def test_normalisation_statistics_per_band():
    images = np.zeros((2, 3, 2, 2), np.uint8)
    images[:, 1, 0] = 255           # band 1: half 0, half 1
    images[:, 2] = 51               # band 2: 0.2 everywhere
    assert T.normalize_stats(images) == {"scale": 255.0, "mean": [0.0, 0.5, 0.2],
                                         "std": [0.0, 0.5, 0.0]}


def test_probabilities_are_the_softmax_of_the_model_batch_by_batch():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    x = torch.randn(5, 3, 4, 4)
    got = T.predict_probs(model, x, batch=2)
    with torch.no_grad():
        want = torch.softmax(model(x), 1).numpy()
    assert got.shape == (5, 2, 4, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def _tile_probs(size=40, p_object=0.65, p_false=0.35):
    """One tile's probabilities (2, size, size) and mask: a 10 x 10 px panel at
    ``p_object`` (in the mask) and a 10 x 10 px false blob at ``p_false`` (not), with a
    one-pixel hole in the panel and a 2-pixel speck at 0.9 (not in the mask)."""
    p = np.full((size, size), 0.05, np.float32)
    p[5:15, 5:15] = p_object
    p[10, 10] = 0.1                  # a hole of one pixel
    p[25:35, 25:35] = p_false
    p[2, 30:32] = 0.9                # a speck of two pixels
    mask = np.zeros((size, size), np.uint8)
    mask[5:15, 5:15] = 1
    return np.stack([1 - p, p]), mask


def test_the_post_processing_of_a_tile():
    probs, _ = _tile_probs()
    # 0.1 m pixels: 0.01 m² each; min area 0.05 m² = 5 px, holes below 0.02 m² = 2 px
    pp = {"threshold": 0.5, "min_area_m2": 0.05, "max_hole_m2": 0.02}
    cm = T.postprocessed(probs, pp, 0.1, 1)
    want = np.zeros((40, 40), np.uint8)
    want[5:15, 5:15] = 1             # the hole filled, the speck and the blob gone
    assert cm.dtype == np.uint8 and np.array_equal(cm, want)
    cm = T.postprocessed(probs, dict(pp, threshold=0.3, min_area_m2=0.0, max_hole_m2=0.0),
                         0.1, 1)
    assert cm[10, 10] == 0 and cm[2, 30] == 1 and cm[30, 30] == 1
    # a minimum score above the panel's mean probability drops it too
    assert not T.postprocessed(probs, dict(pp, min_score=0.7), 0.1, 1).any()


def test_scores_and_the_choice_of_the_post_processing():
    probs, mask = _tile_probs()
    s = T.score_postprocess(probs[None], mask[None], 0.1, 1,
                            {"threshold": 0.5, "min_area_m2": 0.05, "max_hole_m2": 0.02})
    assert (s["pixel_iou"], s["object_f1"], s["objects_true"]) == (1.0, 1.0, 1)
    s = T.score_postprocess(probs[None], mask[None], 0.1, 1,
                            {"threshold": 0.3, "min_area_m2": 0.05, "max_hole_m2": 0.02})
    assert s["false_objects"] == 1 and s["object_f1"] == pytest.approx(2 / 3)
    assert s["pixel_iou"] == pytest.approx(100 / 200)
    # 0.3 keeps the false blob; from 0.4 to 0.6 only the panel (object F1 1), whose
    # pixel IoU is 1 with its hole filled (0.99 without): the first of those ties is
    # kept, at the smallest area
    chosen = T.choose_postprocess(probs[None], mask[None], 0.1, 1)
    assert {k: chosen[k] for k in ("threshold", "min_area_m2", "max_hole_m2")} == {
        "threshold": 0.4, "min_area_m2": 0.25, "max_hole_m2": 0.5}
    assert (chosen["val"]["object_f1"], chosen["val"]["pixel_iou"]) == (1.0, 1.0)


def test_cross_validated_post_processing_is_kept_and_only_scored():
    probs, mask = _tile_probs()
    config = {"cross_validation": {"0.1": {}}, "threshold": 0.3, "min_area_m2": 0.05,
              "max_hole_m2": 0.0, "orthogonalize": True, "lr": 0.001}
    assert T.cv_postprocess(config) == {"threshold": 0.3, "min_area_m2": 0.05,
                                        "max_hole_m2": 0.0, "orthogonalize": True}
    assert T.cv_postprocess({"threshold": 0.3}) == {}
    pp = T.val_postprocess(config, probs[None], mask[None], 0.1, 1)
    assert pp["threshold"] == 0.3 and pp["val"]["false_objects"] == 1
    chosen = T.val_postprocess({}, probs[None], mask[None], 0.1, 1)
    assert chosen["threshold"] == 0.4


def test_the_tiles_a_run_fits_and_validates_on():
    tiles = pvdata.list_tiles("train")
    fit, val = T.fit_val_tiles({"val_fraction": 0})
    assert (fit, val) == (tiles, [])
    assert T.fit_val_tiles({}) == pvdata.split_train(tiles, 0.15, 0)
    assert T.fit_val_tiles({"split_seed": 2}) == pvdata.split_train(tiles, 0.15, 2)
    assert T.fit_val_tiles({}, fold=1) == pvdata.cv_folds(tiles, 3)[1]
    site = {t.name for t in pvdata.site_of(val[0].name if val else tiles[0].name, tiles)}
    fit, val = T.fit_val_tiles({}, without_site=sorted(site)[0])
    assert not site & {t.name for t in fit + val}
    assert len(fit) + len(val) == len(tiles) - len(site)
    with pytest.raises(ValueError):
        T.fit_val_tiles({}, without_site="PV01_0_0")
