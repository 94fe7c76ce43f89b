"""backend.learning.data: the pv01 tiles, their site clusters, the fit/val split and
the cross-validation folds by whole sites, sampling weights, and the guard and replay
sets of a retrain. Synthetic tiles where only positions matter; the real train split
(ORTHOLENS_DATA) for the folds and sets of the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.learning.data import (GuardSet, ReplaySet, Tile, clusters, cv_folds, list_tiles,
                                   single_link_groups, site_of, split_train,
                                   tile_sampling_weights)
from backend.models.catalog import load_card
from tests.support import DATA, DEFAULT_MODEL


def _tile(name: str, lat: float, lon: float) -> Tile:
    return Tile(name, Path(f"/x/{name}.tif"), Path(f"/x/{name}_mask.tif"), lat, lon)


#: Four sites 0.01 degrees apart: 5 tiles (a chain 0.0005 degrees apart), 3, 2 and 1
#: (0.0007 and 0.0006 apart).
SITES = ([_tile(f"A{i}", 32.0 + 0.0005 * i, 120.0) for i in range(5)]
         + [_tile(f"B{i}", 32.01, 120.0 + 0.0007 * i) for i in range(3)]
         + [_tile(f"C{i}", 32.02 + 0.0006 * i, 120.01) for i in range(2)]
         + [_tile("D0", 32.03, 120.03)])


def _names(tiles):
    return sorted(t.name for t in tiles)


def test_single_link_groups_chain_and_merge():
    near = lambda a, b: abs(a - b) <= 1  # noqa: E731
    assert single_link_groups([1, 5, 2, 10, 6, 3], near) == [[10], [6, 5], [3, 2, 1]]
    assert single_link_groups([1, 3, 2], near) == [[2, 1, 3]]  # 2 joins two groups
    assert single_link_groups([], near) == []


def test_clusters_are_the_sites():
    got = sorted(_names(g) for g in clusters(SITES))
    assert got == [["A0", "A1", "A2", "A3", "A4"], ["B0", "B1", "B2"], ["C0", "C1"], ["D0"]]
    assert len(clusters(SITES, radius_deg=0.0004)) == 11  # every chain breaks
    assert _names(site_of("B1", SITES[::-1])) == ["B0", "B1", "B2"]
    with pytest.raises(ValueError, match="no pv01 tile named 'E0' in the 11 tiles given"):
        site_of("E0", SITES)


def test_the_split_moves_whole_sites_to_val_never_the_largest():
    for seed in range(6):
        fit, val = split_train(SITES, 0.25, seed)
        assert _names(fit + val) == _names(SITES) and not set(_names(fit)) & set(_names(val))
        assert len(val) >= 0.25 * len(SITES) and "A0" in _names(fit)
        for g in clusters(SITES):
            assert set(_names(g)) <= set(_names(fit)) or set(_names(g)) <= set(_names(val))
        assert split_train(SITES, 0.25, seed) == (fit, val)  # the seed decides
    assert split_train(SITES, 0.0, 0) == (sorted(SITES, key=lambda t: t.name), [])


def test_folds_deal_the_sites_largest_first_to_the_smallest_fold():
    folds = cv_folds(SITES, 3)
    # B (3) to fold 0, C (2) to fold 1, D (1) to fold 2: each fold takes the smallest
    assert [_names(v) for _, v in folds] == [["B0", "B1", "B2"], ["C0", "C1"], ["D0"]]
    assert all(_names(f + v) == _names(SITES) for f, v in folds)
    with pytest.raises(ValueError, match="3 site clusters besides the largest: too few for 4"):
        cv_folds(SITES, 4)


def test_sampling_weights_favour_tiles_with_panels_but_keep_empty_ones():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[1, :2, :2] = 1   # a quarter
    masks[2] = 1           # all
    w = tile_sampling_weights(masks)
    assert w.dtype == np.float64 and w.sum() == pytest.approx(1.0)
    assert w == pytest.approx(np.array([0.1, 0.6, 1.1]) / 1.8)


@pytest.fixture(scope="module")
def tiles():
    try:
        return list_tiles("train")
    except FileNotFoundError:
        pytest.skip("pv01 missing (set ORTHOLENS_DATA)")


def test_folds_hold_whole_sites_once(tiles):
    folds = cv_folds(tiles, 3)
    sites = clusters(tiles)
    largest = {t.name for t in max(sites, key=len)}
    seen = []
    for fit, val in folds:
        fit_n, val_n = {t.name for t in fit}, {t.name for t in val}
        assert not fit_n & val_n and len(fit_n | val_n) == len(tiles)
        assert largest <= fit_n                       # the big site is always fitted
        for c in sites:                               # no site split between the two
            names = {t.name for t in c}
            assert names <= fit_n or names <= val_n
        seen += sorted(val_n)
    assert sorted(seen) == sorted({t.name for t in tiles} - largest)  # each once
    assert [len(v) for _, v in folds] == [9, 9, 9]


def test_the_real_splits_and_their_tiles(tiles):
    held = list_tiles("heldout")
    assert len(tiles) == 56 and len(held) == 12
    assert not {t.name for t in tiles} & {t.name for t in held}
    t = held[0]
    assert (t.lat, t.lon) == (int(t.name.split("_")[1]) / 1e4, int(t.name.split("_")[2]) / 1e4)
    img, mask = t.read()
    assert img.shape == (3, 256, 256) and img.dtype == np.uint8
    assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 1}
    with pytest.raises(FileNotFoundError, match="set ORTHOLENS_DATA"):
        list_tiles("nonexistent")


def test_the_guard_and_replay_sets_of_the_shipped_model(tiles):
    val_names = load_card(DEFAULT_MODEL).val_names
    guard = GuardSet.of(val_names)
    assert len(guard) == len(val_names) == 9 and _names(guard.tiles) == sorted(val_names)
    fewer = GuardSet.of(val_names, exclude_paths=[str(guard.tiles[0].image_path)])
    assert _names(fewer.tiles) == _names(guard.tiles)[1:]
    replay = ReplaySet.without(val_names)
    assert replay.n == len(tiles) - 9
    assert replay.arrays["images"].shape == (replay.n, 3, 256, 256)
    assert replay.arrays["masks"].shape == (replay.n, 256, 256)
    assert ReplaySet.without(list(reversed(val_names))) is replay  # read once
    with pytest.raises(FileNotFoundError):
        GuardSet.of(val_names, root=DATA / "nowhere")
