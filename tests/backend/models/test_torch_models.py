"""backend.models.torch_models: modules built by name from a card, and their weights
saved as fp16 safetensors and loaded back as fp32 (a small U-Net, built in seconds)."""

from __future__ import annotations

import pytest
import torch

from backend.models.card import ModelCard
from backend.models.torch_models import (architecture, build_torch_model, load_torch_model,
                                         save_weights)
from protocol.errors import ModelCorrupt, ModelNotFound


def _card(path=None, **kw) -> ModelCard:
    """A two-class U-Net card with a shallow resnet18 encoder."""
    d = {"id": "tiny", "version": "0",
         "classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
         "bands": 3, "gsd_m": 0.1, "tile_size": 64, "overlap": 0, "threshold": 0.5,
         "min_area_m2": 0.0, "simplify_m": 0.0, "architecture": "Unet", "encoder": "resnet18",
         "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
         "normalize": {"scale": 255, "mean": [0, 0, 0], "std": [1, 1, 1]}}
    d.update(kw)
    return ModelCard.from_dict(d, path)


def test_architectures_are_smp_classes_by_name():
    import segmentation_models_pytorch as smp
    assert architecture("Unet") is smp.Unet and architecture("FPN") is smp.FPN
    for bad in ("NoSuchNet", "", "_private", "encoders", "__class__"):
        with pytest.raises(ModelCorrupt, match="unknown architecture"):
            architecture(bad)


def test_a_built_model_maps_bands_to_background_and_classes():
    torch.manual_seed(0)
    model = build_torch_model(_card()).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    with pytest.raises(ModelCorrupt):
        build_torch_model(_card(architecture="NoSuchNet"))


def test_weights_round_trip_through_fp16_safetensors(tmp_path):
    from safetensors.torch import load_file
    card = _card(tmp_path)
    torch.manual_seed(1)
    model = build_torch_model(card)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = model.state_dict()
    save_weights(state, card.weights_path)
    stored = load_file(str(card.weights_path))
    assert set(stored) == set(state)
    for k, v in state.items():
        assert stored[k].dtype == (torch.float16 if v.dtype.is_floating_point else v.dtype), k
    loaded = load_torch_model(card)
    assert not loaded.training
    for k, v in loaded.state_dict().items():
        want = state[k].half().float() if state[k].dtype.is_floating_point else state[k]
        assert v.dtype == state[k].dtype and torch.equal(v, want), k


def test_missing_or_mismatched_weights(tmp_path):
    card = _card(tmp_path)
    with pytest.raises(ModelNotFound, match="has no weights"):
        load_torch_model(card)
    other = build_torch_model(_card(classes=[{"id": 1, "name": "a"}]))  # 2 outputs, not 3
    save_weights(other.state_dict(), card.weights_path)
    with pytest.raises(ModelCorrupt, match="weights of model 'tiny' cannot be loaded"):
        load_torch_model(card)
    card.weights_path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelCorrupt, match="cannot be loaded"):
        load_torch_model(card)
