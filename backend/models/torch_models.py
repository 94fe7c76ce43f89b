"""PyTorch modules built by name from a model card, and their safetensors weights.

The registry of architectures is segmentation-models-pytorch itself: a card's
``architecture`` names one of its model classes (``Unet``, ``FPN``,
``DeepLabV3Plus``, ...), which :func:`build_torch_model` calls with the card's encoder,
bands, output channels and ``arch_kwargs``. Weights are stored as fp16 safetensors
(:func:`save_weights`; no pickle) and loaded as fp32 (:func:`load_torch_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from backend.models.card import ModelCard
from protocol.errors import ModelCorrupt, ModelNotFound


def architecture(name: str) -> type:
    """The segmentation-models-pytorch class called ``name``.

    Raises:
        ModelCorrupt: smp has no model class of that name.
    """
    import segmentation_models_pytorch as smp

    arch = getattr(smp, name, None) if name and not name.startswith("_") else None
    if arch is None or not isinstance(arch, type):
        raise ModelCorrupt(f"unknown architecture {name!r}")
    return arch


def build_torch_model(card: ModelCard):
    """Construct the (untrained) torch module a card describes.

    Uses ``segmentation_models_pytorch.<architecture>(encoder_name=<encoder>,
    encoder_weights=None, in_channels=<bands>, classes=<num_outputs>, **arch_kwargs)``.
    Output: logits, float32 tensor ``(N, num_outputs, H, W)`` for input
    ``(N, bands, H, W)`` with H, W multiples of 32.

    Raises:
        ModelCorrupt: unknown architecture name.
    """
    return architecture(card.architecture)(
        encoder_name=card.encoder, encoder_weights=None, in_channels=card.bands,
        classes=card.num_outputs, **card.arch_kwargs)


def load_torch_model(card: ModelCard, device: str = "cpu"):
    """Build the model and load its safetensors weights (fp16 on disk -> fp32), in eval
    mode on ``device``.

    Raises:
        ModelNotFound: the weight file is missing.
        ModelCorrupt: the weights cannot be read or do not match the architecture.
    """
    from safetensors.torch import load_file

    if not card.weights_path.is_file():
        raise ModelNotFound(f"model {card.id!r} has no weights at {card.weights_path}")
    model = build_torch_model(card)
    try:
        state = load_file(str(card.weights_path), device="cpu")
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # safetensors raises several types on bad files
        raise ModelCorrupt(f"weights of model {card.id!r} cannot be loaded: {exc}") from None
    return model.to(device).eval()


def save_weights(state_dict: Dict[str, Any], path: Path) -> None:
    """Save a torch state dict as safetensors at ``path``: floating tensors in fp16 (as
    shipped), others as they are, all contiguous on the CPU."""
    import torch
    from safetensors.torch import save_file
    state = {k: (v.detach().to(torch.float16) if v.dtype.is_floating_point
                 else v.detach()).contiguous().cpu() for k, v in state_dict.items()}
    save_file(state, str(path))
