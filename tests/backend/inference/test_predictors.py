"""backend.inference.predictors: normalisation and softmax, the choice and cache of
predictors, and ensemble fusion (test-time augmentation, shifted tilings, member
agreement) with a fake member whose output is known everywhere."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from backend.inference import pipeline as PL
from backend.inference import predictors as PR
from backend.inference.imported import onnx_session, providers
from backend.inference.predictors import EnsemblePredictor, apply_tta, invert_tta
from backend.inference.tiling import plan_tiling
from backend.models.card import TTA_TRANSFORMS, ModelCard
from backend.models.catalog import load_card
from protocol.errors import ModelCorrupt, ModelNotFound
from tests.support import DEFAULT_MODEL, FakePredictor, ensemble_card, predict_vienna


@pytest.mark.parametrize("name", TTA_TRANSFORMS)
def test_tta_transforms_invert(name):
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.uint8)
    y = apply_tta(x, name)
    assert y.shape == x.shape
    np.testing.assert_array_equal(invert_tta(y, name), x)
    if name != "identity":
        assert not np.array_equal(y, x)


def test_ensemble_tta_and_shifts_are_exact_for_an_equivariant_member():
    card = ensemble_card(tta=list(TTA_TRANSFORMS), shifts=True)
    base = load_card(DEFAULT_MODEL)
    predictor = EnsemblePredictor(card, [(FakePredictor(base), 1.0),
                                         (FakePredictor(base, 0.5), 3.0)])
    assert predictor.channels == 2 + 2 * 1
    probs, valid, n, grid, image = predict_vienna(
        predictor, [-1700, 338500, -1640, 338560], 4, tile_size=256, overlap=64)
    rows, cols = plan_tiling(card, grid.height, grid.width, 256, 64).axes(grid.height,
                                                                         grid.width)[0]
    n_plain = len(rows) * len(cols)
    assert n > n_plain  # the shifted tiling really ran
    f = image.astype(np.float32).mean(0) / 255.0
    expect = (1.0 * f + 3.0 * 0.5 * f) / 4.0  # weighted mean of the two members
    np.testing.assert_allclose(probs[1], expect, atol=1e-4)
    np.testing.assert_allclose(probs[2], f, atol=1e-4)        # member 1's own channel
    np.testing.assert_allclose(probs[3], 0.5 * f, atol=1e-4)  # member 2's own channel


def test_agreement_counts_member_votes():
    card = ensemble_card()
    base = load_card(DEFAULT_MODEL)
    # member A says 0.9 everywhere bright, member B 0.45: threshold 0.5 -> only A votes
    predictor = EnsemblePredictor(card, [(FakePredictor(base, 4.0), 1.0),
                                         (FakePredictor(base, 0.0), 1.0)])
    probs, valid, _, grid, _ = predict_vienna(predictor, [-1700, 338500, -1680, 338520], 4)
    opts = PL.Options(threshold=0.3, min_area_m2=0.5, max_hole_m2=0, simplify_m=0)
    _, dets = PL.detections_from_probs(probs, valid, grid, card, opts)
    assert dets
    assert all(d.agreement == 0.5 for d in dets)


def test_ensemble_rejects_members_of_other_classes():
    base = load_card(DEFAULT_MODEL)
    other = ModelCard.from_dict(dict(base.to_dict(), classes=[{"id": 1, "name": "tree"}]))
    with pytest.raises(ModelCorrupt):
        EnsemblePredictor(ensemble_card(), [(FakePredictor(other), 1.0)])


def test_shifted_tiling_only_where_a_grid_has_tile_borders():
    """A grid inside one tile runs once; a larger one gets the half-tile shifted tiling."""
    card = ensemble_card(shifts=True)
    base = load_card(DEFAULT_MODEL)
    predictor = EnsemblePredictor(card, [(FakePredictor(base), 1.0)])
    n_small = predict_vienna(predictor, [-1700, 338500, -1680, 338520], 4, tile_size=256,
                             overlap=64)[2]
    n_big = predict_vienna(predictor, [-1700, 338500, -1660, 338540], 4, tile_size=256,
                           overlap=64)[2]
    assert n_small == 1
    # 400 px: two rows and columns of 256-px tiles; shifted by 128, three of each
    assert plan_tiling(card, 400, 400, 256, 64).shape == (256, 256)
    assert n_big == 2 * 2 + 3 * 3


def test_normalize_scales_and_standardises_each_band():
    card = load_card(DEFAULT_MODEL)
    n = card.normalize
    tiles = np.array([0, 51, 255, 128], np.uint8).reshape(1, 1, 2, 2).repeat(3, 1)
    want = np.stack([(tiles[0, b] / n.scale - n.mean[b]) / n.std[b] for b in range(3)])
    got = PR.normalize(tiles, card)
    assert got.dtype == np.float32 and got.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(got[0], want, atol=1e-6)


def test_softmax_is_exact_and_stable_for_large_logits():
    logits = np.array([[[[1.0]], [[2.0]], [[3.0]]], [[[1000.0]], [[1000.0]], [[-1000.0]]]],
                      np.float32)
    p = PR.softmax(logits.copy())
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[0, :, 0, 0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1, :, 0, 0], [0.5, 0.5, 0.0], atol=1e-7)
    assert np.isfinite(p).all()


def test_a_predictor_normalises_raw_tiles_before_predicting():
    card = load_card(DEFAULT_MODEL)

    class Echo(PR.Predictor):
        def __init__(self):
            self.card = card

        def predict(self, x):
            return x[:, :2]

    tiles = np.full((2, 3, 4, 4), 255, np.uint8)
    n = card.normalize
    out = Echo().predict_raw(tiles)
    assert Echo().channels == card.num_outputs == 2
    np.testing.assert_allclose(out[:, 0], (255 / n.scale - n.mean[0]) / n.std[0], rtol=1e-6)


def test_unknown_tta_transforms_are_refused():
    with pytest.raises(ValueError, match="unknown TTA transform 'mirror'"):
        apply_tta(np.zeros((1, 1, 4, 4)), "mirror")


def test_get_predictor_caches_one_predictor_per_card_and_choice():
    card = load_card(DEFAULT_MODEL)
    first = PR.get_predictor(card, prefer="onnx")
    assert first.kind == "onnxruntime" and first.device == "cpu"
    assert PR.get_predictor(load_card(DEFAULT_MODEL), prefer="onnx") is first
    tiles = np.random.default_rng(1).integers(0, 256, (1, 3, 64, 64), np.uint8)
    probs = first.predict_raw(tiles)
    assert probs.shape == (1, 2, 64, 64) and probs.dtype == np.float32
    assert first.precision == "int8"  # 8-bit probabilities, brought back to a sum of 1
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_weights_without_onnx_need_pytorch(tmp_path, monkeypatch):
    """A model folder with weights but no ONNX file: an engine without PyTorch cannot
    run it, and says so."""
    src = load_card(DEFAULT_MODEL).path
    (tmp_path / DEFAULT_MODEL).mkdir()
    for name in ("card.json", "weights.safetensors"):
        shutil.copy(src / name, tmp_path / DEFAULT_MODEL / name)
    card = load_card(DEFAULT_MODEL, tmp_path)
    monkeypatch.setattr(PR, "cuda_available", lambda: False)
    monkeypatch.setattr(PR, "torch_available", lambda: False)
    with pytest.raises(ModelNotFound) as e:
        PR.get_predictor(card)
    assert "has no ONNX file" in str(e.value) and "has no PyTorch" in str(e.value)
    with pytest.raises(ModelNotFound, match="has no ONNX file"):
        PR.OnnxPredictor(card)


def test_the_cpu_runs_the_cards_cpu_graph_unless_fp32_is_forced(tmp_path, monkeypatch):
    """A card naming a CPU graph (``graphs``) runs it; ``ORTHOLENS_PRECISION=fp32`` runs
    ``model.onnx`` instead, and so does an engine whose setup made no such graph."""
    src = load_card(DEFAULT_MODEL).path
    folder = tmp_path / DEFAULT_MODEL
    folder.mkdir()
    shutil.copy(src / "model.onnx", folder / "model.onnx")
    (folder / "model.int8.onnx").symlink_to(folder / "model.onnx")  # any valid graph
    card = load_card(DEFAULT_MODEL).updated({"graphs": {"cpu": "model.int8.onnx"}}, folder)
    monkeypatch.setenv("ORTHOLENS_ONNX_PROVIDER", "cpu")
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    assert providers() == ["CPUExecutionProvider"]
    p = PR.OnnxPredictor(card)
    assert (p.graph, p.provider, p.device) == ("model.int8.onnx", "CPUExecutionProvider",
                                               "cpu") and p.precision == "int8"
    monkeypatch.setenv("ORTHOLENS_PRECISION", "fp32")
    assert PR.OnnxPredictor(card).graph == "model.onnx"
    monkeypatch.delenv("ORTHOLENS_PRECISION")
    (folder / "model.int8.onnx").unlink()
    missing = PR.OnnxPredictor(card)
    assert (missing.graph, missing.precision) == ("model.onnx", "fp32")
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelNotFound, match="model.onnx"):
        PR.OnnxPredictor(card)


def test_sessions_use_the_cores_without_spinning():
    card = load_card(DEFAULT_MODEL)
    opts = onnx_session(card, 3, ["CPUExecutionProvider"]).get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    whole = onnx_session(card, None, ["CPUExecutionProvider"]).get_session_options()
    assert whole.intra_op_num_threads == (os.cpu_count() or 1)
