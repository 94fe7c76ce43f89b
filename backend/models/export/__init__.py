"""Export a model's safetensors weights to ONNX, with Deepness metadata, and verify it
against PyTorch.

Usage: ``python -m backend.models.export [MODEL_ID ...]`` (the command line is in
:mod:`backend.models.export.__main__`; default: every model whose ``model.onnx`` is
missing, older than its weights, or without Deepness metadata).

The ONNX graph takes ``input`` float32 (N, bands, H, W), normalised as the card says,
H and W multiples of 32 (dynamic), and returns ``probabilities`` float32
(N, 1 + classes, H, W): the softmax of the network's logits, channel 0 the background.
Opset 17. The file carries the metadata of Deepness's format
(:func:`backend.models.deepness.deepness_metadata`), so the QGIS plugin Deepness runs
it as it is and Ortholens can import it back (``docs/byom.md``). The export is checked
with ONNX Runtime on a random input: the largest absolute probability difference to
PyTorch must stay below :data:`MAX_DIFF`.

Needs only the card and the torch constructors, so that the version store
(:mod:`backend.models.version_writer`) can export the versions it writes.
"""

from __future__ import annotations

import numpy as np

from backend.models.card import ModelCard
from backend.models.deepness import deepness_metadata, write_metadata
from backend.models.torch_models import load_torch_model

#: Largest absolute probability difference between ONNX Runtime and PyTorch that passes.
MAX_DIFF = 1e-3


def _with_softmax(model):
    """``model`` followed by a softmax over the class axis (a torch module)."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(x), dim=1)

    return Probabilities(model).eval()


def export_onnx(card: ModelCard, check: bool = True) -> float:
    """Write ``card.onnx_path`` from ``card.weights_path``, with Deepness metadata.

    Args:
        card: a single model's card read from its folder.
        check: compare ONNX Runtime with PyTorch on a random input.

    Returns:
        The largest absolute probability difference to PyTorch (0.0 without ``check``).

    Raises:
        RuntimeError: the exported graph disagrees with PyTorch.
        ModelNotFound, ModelCorrupt: the weights are missing or unreadable.
    """
    import torch
    import warnings

    model = _with_softmax(load_torch_model(card, "cpu"))
    x = torch.randn(1, card.bands, 128, 128)
    tmp = card.onnx_path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"],
                          output_names=["probabilities"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                        "probabilities": {0: "n", 2: "h", 3: "w"}})
    write_metadata(tmp, deepness_metadata(card))
    diff = 0.0
    if check:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        xt = torch.randn(2, card.bands, 96, 160)
        with torch.inference_mode():
            ref = model(xt).numpy()
        got = sess.run(None, {"input": xt.numpy()})[0]
        diff = float(np.abs(ref - got).max())
        if diff > MAX_DIFF:
            tmp.unlink()
            raise RuntimeError(f"ONNX export of {card.id} differs from PyTorch by {diff}")
    tmp.replace(card.onnx_path)
    print(f"exported {card.onnx_path} (max |diff| vs torch {diff:.2e})")
    return diff
