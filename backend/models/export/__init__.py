"""Export a model's safetensors weights to ONNX and verify it against PyTorch.

Usage: ``python -m backend.models.export [MODEL_ID ...]`` (the command line is in
:mod:`backend.models.export.__main__`; default: every model whose ``model.onnx`` is
missing or older than its weights).

The ONNX graph takes ``input`` float32 (N, bands, H, W), normalised as the card says,
H and W multiples of 32 (dynamic), and returns ``logits`` float32
(N, 1 + classes, H, W). Opset 17. The export is checked with ONNX Runtime on a random
input: the largest absolute logit difference to PyTorch must stay below 1e-3.

Needs only the card and the torch constructors, so that the version store
(:mod:`backend.models.version_writer`) can export the versions it writes.
"""

from __future__ import annotations

import numpy as np

from backend.models.card import ModelCard
from backend.models.torch_models import load_torch_model

#: Largest absolute logit difference between ONNX Runtime and PyTorch that passes.
MAX_LOGIT_DIFF = 1e-3


def export_onnx(card: ModelCard, check: bool = True) -> float:
    """Write ``card.onnx_path`` from ``card.weights_path``.

    Args:
        card: a single model's card read from its folder.
        check: compare ONNX Runtime with PyTorch on a random input.

    Returns:
        The largest absolute logit difference to PyTorch (0.0 without ``check``).

    Raises:
        RuntimeError: the exported graph disagrees with PyTorch.
        ModelNotFound, ModelCorrupt: the weights are missing or unreadable.
    """
    import torch
    import warnings

    model = load_torch_model(card, "cpu")
    x = torch.randn(1, card.bands, 128, 128)
    tmp = card.onnx_path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                        "logits": {0: "n", 2: "h", 3: "w"}})
    diff = 0.0
    if check:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        xt = torch.randn(2, card.bands, 96, 160)
        with torch.inference_mode():
            ref = model(xt).numpy()
        got = sess.run(None, {"input": xt.numpy()})[0]
        diff = float(np.abs(ref - got).max())
        if diff > MAX_LOGIT_DIFF:
            tmp.unlink()
            raise RuntimeError(f"ONNX export of {card.id} differs from PyTorch by {diff}")
    tmp.replace(card.onnx_path)
    print(f"exported {card.onnx_path} (max |diff| vs torch {diff:.2e})")
    return diff
