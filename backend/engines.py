"""Inference engines: one interface over ONNX Runtime (CPU) and PyTorch (GPU/CPU).

An engine maps a batch of *normalised* tiles, float32 ``(N, bands, H, W)`` with H and
W multiples of 32, to class probabilities float32 ``(N, 1 + classes, H, W)`` (softmax
of the logits over the class axis).

Choice (:func:`get_engine`): PyTorch on CUDA (fp16 autocast, channels_last) when a GPU
is present; otherwise ONNX Runtime on the CPU when the card's ``model.onnx`` exists;
otherwise PyTorch on the CPU.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, Optional, Tuple

import numpy as np

from .registry import ModelCard, ModelCorrupt, ModelNotFound, load_torch_model

_CACHE: Dict[Tuple, "Engine"] = {}
_LOCK = threading.Lock()


def cuda_available() -> bool:
    """True when PyTorch sees a CUDA device."""
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def device_name() -> str:
    """``"cuda:0 <GPU name>"`` or ``"cpu"``."""
    if cuda_available():
        import torch
        return f"cuda:0 {torch.cuda.get_device_name(0)}"
    return "cpu"


def normalize(tiles: np.ndarray, card: ModelCard) -> np.ndarray:
    """Scale and standardise raw tiles as the card says.

    Args:
        tiles: (N, bands, H, W) of the card's input dtype (uint8 for 3-band RGB).

    Returns:
        float32 (N, bands, H, W): ``(x / scale - mean) / std`` per band.
    """
    n = card.normalize
    mean = np.asarray(n["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(n["std"], np.float32).reshape(1, -1, 1, 1)
    x = tiles.astype(np.float32) * np.float32(1.0 / float(n.get("scale", 255.0)))
    x -= mean
    x /= std
    return x


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax, float32."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


class Engine:
    """Base class: ``predict(x float32 (N, B, H, W)) -> probs float32 (N, C, H, W)``."""

    card: ModelCard
    device: str = "cpu"
    kind: str = "?"

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class OnnxEngine(Engine):
    """ONNX Runtime on the CPU.

    Args:
        card: the model card; ``card.onnx_path`` must exist.
        threads: intra-op threads (default: all cores).

    Raises:
        ModelNotFound: no ONNX file. ModelCorrupt: ONNX Runtime cannot load it.
    """

    kind = "onnxruntime"

    def __init__(self, card: ModelCard, threads: Optional[int] = None):
        import onnxruntime as ort
        if not card.onnx_path.is_file():
            raise ModelNotFound(f"model {card.id!r} has no ONNX file at {card.onnx_path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(card.onnx_path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelCorrupt(f"ONNX model of {card.id!r} cannot be loaded: {exc}") from None
        self.card = card
        self.device = "cpu"

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {"input": np.ascontiguousarray(x, np.float32)})[0]
        return softmax(logits)


class TorchEngine(Engine):
    """PyTorch; on CUDA with fp16 autocast and channels_last memory format."""

    kind = "torch"

    def __init__(self, card: ModelCard, device: str = "cpu"):
        import torch
        self.torch = torch
        self.card = card
        self.device = device
        self.model = load_torch_model(card, device)
        if device.startswith("cuda"):
            self.model = self.model.to(memory_format=torch.channels_last)

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            if self.device.startswith("cuda"):
                t = t.pin_memory().to(self.device, non_blocking=True)
                t = t.to(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.model(t)
                return torch.softmax(logits.float(), 1).cpu().numpy()
            return torch.softmax(self.model(t), 1).numpy()


def get_engine(card: ModelCard, prefer: Optional[str] = None) -> Engine:
    """A cached engine for ``card``.

    Args:
        card: model card.
        prefer: ``"onnx"``, ``"torch"`` or None (GPU torch if CUDA, else ONNX, else
            torch CPU).

    Raises:
        ModelNotFound, ModelCorrupt: weights/ONNX missing or unreadable.
    """
    weights = card.weights_path
    key = (card.id, card.version, str(card.path), prefer,
           weights.stat().st_mtime if weights.is_file() else None)
    with _LOCK:
        eng = _CACHE.get(key)
        if eng is not None:
            return eng
        if prefer == "torch" or (prefer is None and cuda_available()):
            eng = TorchEngine(card, "cuda:0" if cuda_available() else "cpu")
        elif card.onnx_path.is_file() or prefer == "onnx":
            eng = OnnxEngine(card)
        else:
            eng = TorchEngine(card, "cpu")
        _CACHE[key] = eng
        return eng
