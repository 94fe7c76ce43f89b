"""Export a model's safetensors weights to ONNX and verify it against PyTorch.

Usage: ``python -m backend.export [MODEL_ID ...]`` (default: every model whose
``model.onnx`` is missing or older than its weights).

The ONNX graph takes ``input`` float32 (N, bands, H, W), normalised as the card says,
H and W multiples of 32 (dynamic), and returns ``logits`` float32
(N, 1 + classes, H, W). Opset 17. The export is checked with ONNX Runtime on a random
input: the largest absolute logit difference to PyTorch must stay below 1e-3.
"""

from __future__ import annotations

import sys
from typing import List

import numpy as np

from .registry import ModelCard, list_cards, load_card, load_torch_model


def export_onnx(card: ModelCard, check: bool = True) -> float:
    """Write ``card.onnx_path``; returns the max |logit| difference to PyTorch.

    Raises:
        RuntimeError: the exported graph disagrees with PyTorch.
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
        if diff > 1e-3:
            tmp.unlink()
            raise RuntimeError(f"ONNX export of {card.id} differs from PyTorch by {diff}")
    tmp.replace(card.onnx_path)
    print(f"exported {card.onnx_path} (max |diff| vs torch {diff:.2e})")
    return diff


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cards = [load_card(a) for a in argv] if argv else [
        c for c in list_cards()
        if c.weights_path.is_file() and (not c.onnx_path.is_file()
                                         or c.onnx_path.stat().st_mtime < c.weights_path.stat().st_mtime)]
    for c in cards:
        export_onnx(c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
