"""Ensemble fusion: test-time augmentation, shifted tilings, member agreement."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio

from protocol.window import Window
from backend.inference import pipeline as PL
from backend.config import data_dir
from backend.inference.predictors import EnsemblePredictor, apply_tta, invert_tta
from backend.inference.grid import plan_grid
from backend.inference.raster import WindowReader
from backend.inference.tiling import plan_tiling
from backend.models.card import TTA_TRANSFORMS, ModelCard
from backend.models.catalog import load_card
from protocol.errors import ModelCorrupt

VIENNA = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
MODEL = "pv-unet-efl0"


class PixelPredictor:
    """p(panel) = a per-pixel function of the raw bands, so it commutes with any D4
    transform and with any tiling: fused results must equal the plain function."""

    kind, device, n_members = "test", "cpu", 1

    def __init__(self, card, gain=1.0):
        self.card, self.gain = card, gain

    @property
    def channels(self):
        return self.card.num_outputs

    def predict_raw(self, tiles):
        p = np.clip(tiles.astype(np.float32).mean(1, keepdims=True) / 255.0 * self.gain, 0, 1)
        return np.concatenate([1 - p, p], 1)


def ens_card(**kw) -> ModelCard:
    base = load_card(MODEL).to_dict()
    d = {k: base[k] for k in ("classes", "bands", "gsd_m", "tile_size", "overlap",
                              "threshold", "min_area_m2", "simplify_m")}
    d.update({"id": "test-ensemble", "version": "0", "kind": "ensemble",
              "members": [{"id": MODEL, "weight": 1.0}]})
    d.update(kw)
    return ModelCard.from_dict(d)


@pytest.mark.parametrize("name", TTA_TRANSFORMS)
def test_tta_transforms_invert(name):
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.uint8)
    y = apply_tta(x, name)
    assert y.shape == x.shape
    np.testing.assert_array_equal(invert_tta(y, name), x)
    if name != "identity":
        assert not np.array_equal(y, x)


def test_ensemble_tta_and_shifts_are_exact_for_an_equivariant_member():
    card = ens_card(tta=list(TTA_TRANSFORMS), shifts=True)
    base = load_card(MODEL)
    predictor = EnsemblePredictor(card, [(PixelPredictor(base), 1.0), (PixelPredictor(base, 0.5), 3.0)])
    assert predictor.channels == 2 + 2 * 1
    with rasterio.open(VIENNA) as ds:
        grid = plan_grid(ds, [-1700, 338500, -1640, 338560], None, card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        probs, valid, n = PL.predict_grid(reader, grid, predictor, 4, tile_size=256, overlap=64)
        side = max(grid.width, grid.height)
        whole, _ = reader.read(Window(0, 0, side, side))
        reader.close()
    plan = plan_tiling(card, grid.height, grid.width, 256, 64)
    n_plain = len(plan.axes(grid.height, grid.width)[0][0]) * len(plan.axes(grid.height, grid.width)[0][1])
    assert n > n_plain  # the shifted tiling really ran
    f = whole[:, :grid.height, :grid.width].astype(np.float32).mean(0) / 255.0
    expect = (1.0 * f + 3.0 * 0.5 * f) / 4.0  # weighted mean of the two members
    np.testing.assert_allclose(probs[1], expect, atol=1e-4)
    np.testing.assert_allclose(probs[2], f, atol=1e-4)        # member 1's own channel
    np.testing.assert_allclose(probs[3], 0.5 * f, atol=1e-4)  # member 2's own channel


def test_agreement_counts_member_votes():
    card = ens_card()
    base = load_card(MODEL)
    # member A says 0.9 everywhere bright, member B 0.45: threshold 0.5 -> only A votes
    predictor = EnsemblePredictor(card, [(PixelPredictor(base, 4.0), 1.0), (PixelPredictor(base, 0.0), 1.0)])
    with rasterio.open(VIENNA) as ds:
        grid = plan_grid(ds, [-1700, 338500, -1680, 338520], None, card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        probs, valid, _ = PL.predict_grid(reader, grid, predictor, 4)
        reader.close()
    opts = PL.Options(threshold=0.3, min_area_m2=0.5, max_hole_m2=0, simplify_m=0)
    _, dets = PL.detections_from_probs(probs, valid, grid, card, opts)
    assert dets
    assert all(d.agreement == 0.5 for d in dets)


def test_ensemble_rejects_members_of_other_classes():
    base = load_card(MODEL)
    other = ModelCard.from_dict(dict(base.to_dict(), classes=[{"id": 1, "name": "tree"}]))
    with pytest.raises(ModelCorrupt):
        EnsemblePredictor(ens_card(), [(PixelPredictor(other), 1.0)])


def test_ensemble_card_validation():
    with pytest.raises(ModelCorrupt):
        ens_card(members=[])
    with pytest.raises(ModelCorrupt):
        ens_card(tta=["identity", "mirror"])


def test_shifted_tiling_only_where_a_grid_has_tile_borders():
    """A grid inside one tile runs once; a larger one gets the half-tile shifted tiling."""
    card = ens_card(shifts=True)
    base = load_card(MODEL)
    predictor = EnsemblePredictor(card, [(PixelPredictor(base), 1.0)])
    with rasterio.open(VIENNA) as ds:
        small = plan_grid(ds, [-1700, 338500, -1680, 338520], None, card.gsd_m, 3)
        r = WindowReader(ds, small)
        _, _, n_small = PL.predict_grid(r, small, predictor, 4, tile_size=256, overlap=64)
        r.close()
        big = plan_grid(ds, [-1700, 338500, -1660, 338540], None, card.gsd_m, 3)
        r = WindowReader(ds, big)
        _, _, n_big = PL.predict_grid(r, big, predictor, 4, tile_size=256, overlap=64)
        r.close()
    assert n_small == 1
    # 400 px: two rows and columns of 160-px tiles; shifted by 80, three of each
    assert plan_tiling(card, 400, 400, 256, 64).shape == (160, 160)
    assert n_big == 2 * 2 + 3 * 3
