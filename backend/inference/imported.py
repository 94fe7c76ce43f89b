"""Running the graph of a model imported from an ONNX file (``backend.models.imported``);
``backend.inference.predictors.ImportedPredictor`` is its predictor.

The graph's outputs are probabilities already (Deepness's format: a sigmoid output of
one channel, or softmax outputs whose channel 0 is the background), one class family
per output (``backend.models.outputs``). :class:`ImportedGraph` runs the graph with
ONNX Runtime and lays the outputs out as every predictor does: float32
``(N, 1 + classes, H, W)``, channel ``k`` the probability of class ``k``, channel 0
the background. With one output, channel 0 is that output's background (1 minus a
sigmoid); with several, the least of their backgrounds. Values are clipped to 0..1
(they are probabilities).

The graph runs on the CPU, or on CUDA when ONNX Runtime offers its CUDA provider;
:func:`onnx_session` opens every ONNX file a predictor runs. A
graph with a fixed batch size gets that many tiles a call; one with a fixed input size
gets each tile padded to it by reflection, and its outputs cropped back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from backend.models.card import ModelCard
from protocol.errors import ModelCorrupt, ModelNotFound


def providers() -> List[str]:
    """ONNX Runtime's execution providers to use, best first: TensorRT and CUDA where the
    installed ONNX Runtime has them (the ``onnxruntime-gpu`` wheel of the engine's
    ``cuda`` extra), then the CPU; only the CPU when ``ORTHOLENS_ONNX_PROVIDER=cpu``."""
    import onnxruntime as ort
    if os.environ.get("ORTHOLENS_ONNX_PROVIDER", "").lower() == "cpu":
        return ["CPUExecutionProvider"]
    have = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
            if p in have] + ["CPUExecutionProvider"]


def layout(outputs: List[np.ndarray], card: ModelCard) -> np.ndarray:
    """The probabilities of an imported graph's outputs in Ortholens's layout.

    Args:
        outputs: the graph's outputs, each float (N, C, H, W) or (N, H, W).
        card: the imported card (``outputs``: which output holds which classes).

    Returns:
        float32 (N, 1 + classes, H, W) (see the module docstring).
    """
    first = np.asarray(outputs[card.outputs[0].index])
    n, (h, w) = first.shape[0], first.shape[-2:]
    probs = np.zeros((n, card.num_outputs, h, w), np.float32)
    backgrounds = []
    for spec in card.outputs:
        y = np.asarray(outputs[spec.index], np.float32)
        y = np.clip(y[:, None] if y.ndim == 3 else y, 0.0, 1.0)
        if spec.activation == "sigmoid":
            probs[:, spec.classes[0]] = y[:, 0]
            backgrounds.append(1.0 - y[:, 0])
        else:
            probs[:, spec.classes] = y[:, 1:1 + len(spec.classes)]
            backgrounds.append(y[:, 0])
    probs[:, 0] = np.minimum.reduce(backgrounds)
    return probs


def onnx_session(card: ModelCard, threads: Optional[int], use: List[str],
                 path: Optional[Path] = None):
    """An ONNX Runtime session of ``card``'s ONNX file: every graph optimisation on, one
    inter-op thread, and intra-op threads that sleep between calls instead of spinning
    (``session.intra_op.allow_spinning`` 0: the cores go to the thread that reads the
    next tiles meanwhile; ONNX Runtime's threading documentation).

    Args:
        card: a card read from its folder.
        threads: intra-op threads on the CPU (default: all cores).
        use: the execution providers, in order of preference (:func:`providers`).
        path: the graph to open (default ``card.onnx_path``; a device's own graph,
            ``ModelCard.graph_path``).

    Raises:
        ModelNotFound: no ONNX file. ModelCorrupt: ONNX Runtime cannot load it.
    """
    import onnxruntime as ort
    path = Path(path) if path is not None else card.onnx_path
    if not path.is_file():
        raise ModelNotFound(f"model {card.id!r} has no ONNX file at {path}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=use)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several types
        raise ModelCorrupt(f"ONNX model of {card.id!r} cannot be loaded: {exc}") from None


class ImportedGraph:
    """ONNX Runtime over an imported model's graph (see the module docstring).

    Args:
        card: an imported card (``format`` set) read from its folder.
        threads: intra-op threads on the CPU (default: all cores).

    Raises:
        ModelNotFound: no ONNX file. ModelCorrupt: ONNX Runtime cannot load it.
    """

    def __init__(self, card: ModelCard, threads: Optional[int] = None):
        self.session = onnx_session(card, threads, providers())
        self.card = card
        self.device = ("cuda:0" if "CUDAExecutionProvider" in self.session.get_providers()
                       else "cpu")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        side = inp.shape[2]
        self.side = side if isinstance(side, int) and side > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (N, 3, H, W) -> float32 (N, 1 + classes, H, W)."""
        n, _, h, w = x.shape
        if self.side is not None and (h, w) != (self.side, self.side):
            pad = ((0, 0), (0, 0), (0, max(0, self.side - h)), (0, max(0, self.side - w)))
            x = np.pad(x, pad, mode="reflect" if min(h, w) > 1 else "edge")
        step = self.batch or n
        parts = []
        for i in range(0, n, step):
            chunk = x[i:i + step]
            k = len(chunk)
            if k < step:  # a fixed batch size: fill it with copies of the last tile
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - k, axis=0)])
            outs = self.session.run(None, {self.input_name: np.ascontiguousarray(
                chunk, np.float32)})
            parts.append(layout(outs, self.card)[:k])
        return np.concatenate(parts)[:, :, :h, :w]


__all__ = ["providers", "layout", "onnx_session", "ImportedGraph"]
