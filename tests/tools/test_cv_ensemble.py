"""tools.cv_ensemble: fusion variants are means of the members' out-of-fold
probabilities, and the rule picks augmentation only when it pays."""

from __future__ import annotations

import numpy as np

from tools.cv_ensemble import TTA, choose, fused_oof, member_config, serving_range, variants


def test_a_variant_is_the_mean_over_its_members_and_augmentations():
    rng = np.random.default_rng(0)
    probs = rng.random((3, len(TTA), 2, 8, 8)).astype(np.float16)
    keys = [(0, 1, 0), (1, 2, 0)]
    refs = [np.zeros((8, 8), bool), np.zeros((4, 4), bool)]
    out = fused_oof(probs, keys, refs, (0, 2), ("identity", "vflip"))
    k, p, ref = out[1][0]
    want = probs[[0, 2]][:, [0, 2], 0].astype(np.float32).mean((0, 1))
    assert k == 0 and ref is refs[0]
    np.testing.assert_allclose(p[1], want, rtol=1e-6)
    np.testing.assert_allclose(p[0] + p[1], 1.0, rtol=1e-6)
    (k2, p2, _), = out[2]  # factor 2: the 8 x 8 run of a 4 x 4 reference
    assert k2 == 1 and p2.shape == (2, 8, 8)


def test_the_rule_takes_augmentation_only_when_it_pays():
    names = ["a", "b", "c"]
    labels = [v[0] for v in variants(names)]
    assert labels == ["a", "b", "c", "a+b+c", "a+b+c x TTA"]

    def rows(plain, tta, single=0.99):
        return [{"label": "a", "members": ["a"], "tta": ["identity"], "score": single},
                {"label": "all", "members": names, "tta": ["identity"], "score": plain},
                {"label": "tta", "members": names, "tta": list(TTA), "score": tta}]

    # a single member never wins, however high its score
    assert choose(rows(0.80, 0.79), 3)["label"] == "all"
    assert choose(rows(0.80, 0.805), 3)["label"] == "all"      # +0.005 does not pay
    assert choose(rows(0.80, 0.8051), 3)["label"] == "tta"


def _row(label, f1s):
    return {"label": label, "cv": {"gsd": {g: {"object_f1": {"mean": v}}
                                           for g, v in f1s.items()}}}


def test_the_fusion_serves_the_gsds_up_to_where_it_first_loses_to_the_single_model():
    single = _row("a", {"0.1": 0.90, "0.2": 0.80, "0.3": 0.80})
    wins_to_02 = _row("all", {"0.1": 0.90, "0.2": 0.93, "0.3": 0.70})
    assert serving_range([single, wins_to_02], "all", [0.05, 0.35]) == [0.05, 0.25]
    always = _row("all", {"0.1": 0.91, "0.2": 0.81, "0.3": 0.80})
    assert serving_range([single, always], "all", [0.05, 0.35]) == [0.05, 0.35]
    # a loss at 0.2 m ends the range there, whatever happens at 0.3 m
    dip = _row("all", {"0.1": 0.95, "0.2": 0.79, "0.3": 0.99})
    assert serving_range([single, dip], "all", [0.05, 0.35]) == [0.05, 0.15]


def test_a_member_gets_its_own_rows_choice_unless_its_config_has_figures():
    gsd = {"0.1": {"pixel_iou": {"mean": 0.8, "std": 0.1},
                   "object_f1": {"mean": 0.9, "std": 0.02}}}
    row = {"cv": {"postprocess": {"threshold": 0.7, "min_area_m2": 1.0}, "gsd": gsd}}
    got = member_config({"id": "m", "threshold": 0.5}, row, 2)
    assert got == {"id": "m", "threshold": 0.7, "min_area_m2": 1.0, "cross_validation": {
        "0.1": {"pixel_iou": 0.8, "pixel_iou_std": 0.1, "object_f1": 0.9,
                "object_f1_std": 0.02, "folds": 2}}}
    assert member_config({"id": "m", "cross_validation": {}}, row, 2) is None
