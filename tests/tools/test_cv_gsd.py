"""tools.cv_gsd: each fold is scored with a post-processing chosen without it, a GSD
keeps its own post-processing only when that pays out of fold, and kept out-of-fold
predictions read back as they were saved."""

from __future__ import annotations

import numpy as np

import tools.cv_gsd as cg
from tools.cv import load_oof, save_oof


def _item(fold: int, factor: int, p_panel: float):
    """One 0.1 m run (2, 96, 96) of a coarse tile with one 12 x 12 coarse-pixel panel
    whose probability is ``p_panel``, and its reference on the coarse grid."""
    side = 96 // factor
    ref = np.zeros((side, side), bool)
    ref[4:16, 4:16] = True
    fg = np.zeros((96, 96), np.float32)
    fg[4 * factor:16 * factor, 4 * factor:16 * factor] = p_panel
    return fold, np.stack([1 - fg, fg]), ref


def test_kept_predictions_read_back_in_order():
    oof = {1: [_item(0, 1, 0.9), _item(1, 1, 0.8)], 3: [_item(2, 3, 0.5)]}
    out = load_oof(_save(oof))
    assert sorted(out) == [1, 3]
    for f in oof:
        for (k, p, r), (k2, p2, r2) in zip(oof[f], out[f]):
            assert k == k2 and r2.dtype == bool and (r == r2).all()
            np.testing.assert_allclose(p, p2, atol=1e-3)


def _save(oof):
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp()) / "oof.npz"
    save_oof(path, oof)
    return path


def test_an_entry_serves_from_the_geometric_mean_with_the_finer_gsd():
    assert cg.serves_from(2, (1, 2, 3)) == 0.15
    assert cg.serves_from(3, (1, 2, 3)) == 0.25


def test_each_fold_is_scored_with_a_choice_made_without_it(monkeypatch):
    oof = {1: [_item(k, 1, 0.95) for k in range(3)],
           3: [_item(k, 3, 0.45) for k in range(3)] * 2}
    seen = []
    real = cg.choose_on

    def spy(items, gsd_m):
        seen.append(sorted({k for k, _, _ in items}))
        return real(items, gsd_m)

    monkeypatch.setattr(cg, "choose_on", spy)
    config = {"id": "m", "gsd_m": 0.1, "threshold": 0.8, "min_area_m2": 1.0,
              "max_hole_m2": 0.0, "min_solidity": 0.0, "min_score": 0.0}
    r = cg.choose_by_gsd(config, oof)
    assert seen == [[1, 2], [0, 2], [0, 1], [0, 1, 2]]
    v = r["gsd"]["0.3"]
    # the panel's 0.45 is below the model's 0.8: only a GSD's own threshold finds it
    assert v["shared"]["object_f1"]["mean"] == 0.0
    assert v["nested"]["object_f1"]["mean"] == 1.0 and v["kept"]
    (entry,) = r["postprocess_by_gsd"]
    assert entry["from_gsd_m"] == 0.15  # between the scored 0.1 and 0.3 m
    assert entry["threshold"] < 0.45
    assert entry["cross_validation"]["nested"] is True


def test_a_gsd_keeps_the_model_post_processing_when_its_own_does_not_pay():
    oof = {1: [_item(k, 1, 0.95) for k in range(2)], 2: [_item(k, 2, 0.95) for k in range(2)]}
    config = {"id": "m", "gsd_m": 0.1, "threshold": 0.5, "min_area_m2": 1.0,
              "max_hole_m2": 0.0}
    r = cg.choose_by_gsd(config, oof)
    assert not r["gsd"]["0.2"]["kept"] and r["postprocess_by_gsd"] == []
