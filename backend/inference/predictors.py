"""Inference predictors: one interface over ONNX Runtime (CPU), PyTorch (GPU/CPU) and
ensembles of them.

A predictor maps a batch of *raw* tiles, ``(N, bands, H, W)`` in the card's input dtype
(uint8) with H and W multiples of 32, to probabilities float32
``(N, channels, H, W)`` (:meth:`Predictor.predict_raw`). The first ``1 + classes``
channels are class probabilities (softmax over the class axis, background first);
an ensemble appends, per member, its own probability of each foreground class, so the
stitched grid can tell which members vote for each polygon (``agreement``).

Choice (:func:`get_predictor`): a model imported from an ONNX file (``card.onnx_only``)
always runs its file (:class:`ImportedPredictor`). Otherwise ONNX Runtime on a GPU where
its CUDA provider is installed (the engine's ``cuda`` extra); else PyTorch on CUDA (fp16
autocast, channels_last) when a GPU is present; otherwise ONNX Runtime on the CPU when
the card's ``model.onnx`` exists; otherwise PyTorch on the CPU. An engine installed for
detection only has no PyTorch (nothing here imports it at module level); it runs the
ONNX files.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np

from backend.inference.imported import ImportedGraph, onnx_session
from backend.inference.imported import providers as onnx_providers
from backend.models.card import ModelCard
from backend.models.torch_models import load_torch_model
from protocol.errors import ModelCorrupt, ModelNotFound

_CACHE: Dict[Tuple, "Predictor"] = {}
_LOCK = threading.Lock()


def cuda_available() -> bool:
    """True when PyTorch sees a CUDA device."""
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def torch_available() -> bool:
    """True when PyTorch can be imported (an engine installed for detection only, with
    ONNX Runtime, has none)."""
    try:
        import torch  # noqa: F401
        return True
    except Exception:
        return False


def device_name() -> str:
    """``"cuda:0 <GPU name>"`` or ``"cpu"``."""
    if cuda_available():
        import torch
        return f"cuda:0 {torch.cuda.get_device_name(0)}"
    return "cpu"


def device_info() -> Dict[str, object]:
    """What the engine runs models on, for the ``pong`` reply and the plugin's dock.

    Returns:
        ``{"kind": "cuda", "name": str, "memory_gib": float}`` on a GPU, else
        ``{"kind": "cpu", "cores": int}``; both with ``"runtime"`` (``"onnxruntime"``
        or ``"torch"``: what runs the models), ``"provider"`` (ONNX Runtime's execution
        provider that runs them, e.g. ``"CUDAExecutionProvider"``, or None without
        ONNX Runtime) and ``"torch"`` (the PyTorch version, or None when it is not
        installed: detection only, no retraining).
    """
    torch_version = None
    try:
        import torch
        torch_version = str(torch.__version__)
    except Exception:
        torch = None
    try:
        provider: Optional[str] = onnx_providers()[0]
    except Exception:  # no onnxruntime
        provider = None
    onnx_gpu = provider is not None and provider != "CPUExecutionProvider"
    runtime = "onnxruntime" if provider is not None and (
        onnx_gpu or not cuda_available()) else "torch"
    info: Dict[str, object] = {"runtime": runtime, "provider": provider,
                               "torch": torch_version}
    if torch is not None and cuda_available():
        props = torch.cuda.get_device_properties(0)
        info.update(kind="cuda", name=str(props.name),
                    memory_gib=round(props.total_memory / 2 ** 30, 1))
    elif onnx_gpu:
        info.update(kind="cuda", **_nvidia_smi())
    else:
        info.update(kind="cpu", cores=int(os.cpu_count() or 1))
    return info


def _nvidia_smi() -> Dict[str, object]:
    """``{"name", "memory_gib"}`` of GPU 0 as ``nvidia-smi`` reports it (an engine with
    ONNX Runtime's CUDA provider and no PyTorch); ``{"name": "GPU"}`` when it cannot."""
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[0]
        name, mib = (x.strip() for x in out.split(","))
        return {"name": name, "memory_gib": round(float(mib) / 1024, 1)}
    except Exception:  # noqa: BLE001 - no driver tool: say less
        return {"name": "GPU"}


def normalize(tiles: np.ndarray, card: ModelCard) -> np.ndarray:
    """Scale and standardise raw tiles as the card says.

    Args:
        tiles: (N, bands, H, W) of the card's input dtype (uint8 for 3-band RGB).

    Returns:
        float32 (N, bands, H, W): ``(x / scale - mean) / std`` per band.
    """
    n = card.normalize
    mean = np.asarray(n.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(n.std, np.float32).reshape(1, -1, 1, 1)
    x = tiles.astype(np.float32) * np.float32(1.0 / float(n.scale))
    x -= mean
    x /= std
    return x


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax, float32."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


class Predictor:
    """Base class of single-model predictors.

    ``predict(x)``: normalised float32 (N, B, H, W) -> probabilities float32
    (N, 1 + classes, H, W). ``predict_raw(tiles)``: raw tiles -> the same.
    """

    card: ModelCard
    device: str = "cpu"
    kind: str = "?"
    n_members: int = 1

    @property
    def channels(self) -> int:
        """Output channels of :meth:`predict_raw`."""
        return self.card.num_outputs

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Normalised float32 (N, bands, H, W) -> float32 (N, 1 + classes, H, W)."""
        raise NotImplementedError

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """Raw tiles (N, bands, H, W), the card's dtype -> float32 (N, channels, H, W)."""
        return self.predict(normalize(tiles, self.card))


def apply_tta(x: np.ndarray, name: str) -> np.ndarray:
    """Apply a D4 transform to the last two axes of ``x`` (square tiles for rotations)."""
    if name == "identity":
        return x
    if name == "hflip":
        return x[..., ::-1]
    if name == "vflip":
        return x[..., ::-1, :]
    if name == "rot90":
        return np.rot90(x, 1, axes=(-2, -1))
    if name == "rot180":
        return np.rot90(x, 2, axes=(-2, -1))
    if name == "rot270":
        return np.rot90(x, 3, axes=(-2, -1))
    if name == "transpose":
        return np.swapaxes(x, -1, -2)
    if name == "antitranspose":
        return np.rot90(np.swapaxes(x, -1, -2), 2, axes=(-2, -1))
    raise ValueError(f"unknown TTA transform {name!r}")


_INVERSE = {"identity": "identity", "hflip": "hflip", "vflip": "vflip", "rot90": "rot270",
            "rot180": "rot180", "rot270": "rot90", "transpose": "transpose",
            "antitranspose": "antitranspose"}


def invert_tta(y: np.ndarray, name: str) -> np.ndarray:
    """Undo :func:`apply_tta` ``name`` on the last two axes."""
    return apply_tta(y, _INVERSE[name])


class EnsemblePredictor(Predictor):
    """Weighted mean of member probabilities over members x test-time augmentations.

    Method: probability averaging of independently trained networks and of flipped /
    rotated inputs (the fusion used by the Swiss national solar survey's ensembles, and
    standard TTA for aerial segmentation). Output channels: the fused ``1 + classes``
    probabilities, then for each member its TTA-averaged probability of each
    foreground class.

    Args:
        card: the ensemble card (``kind: ensemble``).
        members: ``[(predictor, weight)]``; all members must share the card's classes.

    Raises:
        ModelCorrupt: members with other classes or GSD than the ensemble card.
    """

    kind = "ensemble"

    def __init__(self, card: ModelCard, members):
        self.card = card
        self.members = [(e, float(w)) for e, w in members]
        names = [c.name for c in card.classes]
        for e, _ in self.members:
            if ([c.name for c in e.card.classes] != names or e.card.gsd_m != card.gsd_m
                    or e.card.families() != card.families()):
                raise ModelCorrupt(f"member {e.card.id!r} does not match ensemble "
                                   f"{card.id!r} (classes {names}, class families "
                                   f"{card.families()}, GSD {card.gsd_m} m)")
        self.n_members = len(self.members)
        self.device = self.members[0][0].device
        self.tta = list(card.tta)

    @property
    def channels(self) -> int:
        """Fused class channels, then one per member and foreground class."""
        return self.card.num_outputs + self.n_members * len(self.card.classes)

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """See :class:`EnsemblePredictor`: fused probabilities, then per-member ones."""
        c = self.card.num_outputs
        n, _, h, w = tiles.shape
        fused = np.zeros((n, c, h, w), np.float32)
        per_member = []
        wsum = sum(wt for _, wt in self.members)
        for predictor, wt in self.members:
            acc = np.zeros((n, c, h, w), np.float32)
            for t in self.tta:
                x = np.ascontiguousarray(apply_tta(tiles, t))
                acc += invert_tta(predictor.predict_raw(x), t)
            acc /= len(self.tta)
            fused += acc * (wt / wsum)
            per_member.append(acc[:, 1:])
        return np.concatenate([fused] + per_member, axis=1)


class OnnxPredictor(Predictor):
    """ONNX Runtime over a model Ortholens exported (``backend.models.export``), on the
    CPU or on a GPU through its CUDA (or TensorRT) provider: its output
    ``probabilities`` is used as it is, an output named ``logits`` (files exported
    before the graph ended in a softmax) goes through :func:`softmax`.

    The graph is the card's for the device kind (:meth:`ModelCard.graph_path`: an INT8
    graph on the CPU where the card keeps one). On the CPU the session uses every core
    for one model call and its threads do not spin between calls
    (``backend.inference.imported.onnx_session``), so that the reader thread that
    prepares the next tiles gets the cores while a batch is stitched. On a GPU the
    output is bound to the device and copied back once (:func:`run_bound`). An INT8
    graph's probabilities are 8-bit (steps of 1/255), so they are divided by their sum
    over the classes, which they then keep at 1 as every predictor's do.

    Args:
        card: the model card; its graph must exist.
        threads: intra-op threads on the CPU (default: all cores).
        providers: execution providers, best first (default
            ``backend.inference.imported.providers``).
        layer_gsd_m: the GSD of the layers it will run on, metres per pixel (None: the
            model's own); the card's INT8 graph serves only layers its
            ``quantization`` allows.

    Raises:
        ModelNotFound: no ONNX file. ModelCorrupt: ONNX Runtime cannot load it.
    """

    kind = "onnxruntime"

    def __init__(self, card: ModelCard, threads: Optional[int] = None,
                 providers: Optional[List[str]] = None, layer_gsd_m: Optional[float] = None):
        use = list(providers or onnx_providers())
        path = card.graph_path("cpu" if use[0] == "CPUExecutionProvider" else "cuda",
                               layer_gsd_m)
        self.session = onnx_session(card, threads, use, path)
        self.card = card
        self.graph = path.name
        #: ``"int8"`` when it runs the card's device graph (``graphs``), else ``"fp32"``
        self.precision = "fp32" if path == card.onnx_path else "int8"
        #: the provider that runs the graph (``CPUExecutionProvider``, ...)
        self.provider = self.session.get_providers()[0]
        self.device = "cuda:0" if self.provider != "CPUExecutionProvider" else "cpu"
        self.output = self.session.get_outputs()[0].name
        self.logits = self.output == "logits"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :meth:`Predictor.predict`."""
        x = np.ascontiguousarray(x, np.float32)
        if self.device == "cpu":
            out = self.session.run(None, {"input": x})[0]
        else:
            out = np.asarray(run_bound(self.session, x, self.output), np.float32)
        if self.logits:
            return softmax(out)
        if self.precision == "int8":  # 8-bit probabilities: make them sum to 1 again
            out /= np.maximum(out.sum(axis=1, keepdims=True), np.float32(1e-6))
        return out


def run_bound(session, x: np.ndarray, output: str) -> np.ndarray:
    """The ``output`` of ``x`` (float32 (N, bands, H, W)) through a GPU ``session`` with
    I/O binding: the input is copied to the device once and the output stays there
    until the one copy back ((N, classes, H, W))."""
    binding = session.io_binding()
    binding.bind_cpu_input("input", x)
    binding.bind_output(output, "cuda")
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


class ImportedPredictor(Predictor):
    """A model imported from an ONNX file (``card.onnx_only``): its graph run by ONNX
    Runtime, its outputs laid out as class probabilities
    (:class:`~backend.inference.imported.ImportedGraph`); on CUDA when ONNX Runtime
    offers it, else on the CPU.

    Args:
        card: the imported card, read from its folder.
        threads: intra-op threads on the CPU (default: all cores).

    Raises:
        ModelNotFound: no ONNX file. ModelCorrupt: ONNX Runtime cannot load it.
    """

    kind = "onnxruntime"

    def __init__(self, card: ModelCard, threads: Optional[int] = None):
        self.card = card
        self.graph = ImportedGraph(card, threads)
        self.device = self.graph.device

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :meth:`Predictor.predict`."""
        return self.graph.run(x)


class TorchPredictor(Predictor):
    """PyTorch; on CUDA with fp16 autocast and channels_last memory format.

    Args:
        card: the model card (normalisation, classes; weights unless ``model``).
        device: ``"cpu"`` or ``"cuda:0"``.
        model: an in-memory module (eval mode, on ``device``) to run instead of the
            card's weights: a retrain candidate that has no files yet, or whose ONNX
            export failed.
    """

    kind = "torch"

    def __init__(self, card: ModelCard, device: str = "cpu", model=None):
        import torch
        self.torch = torch
        self.card = card
        self.device = device
        self.model = load_torch_model(card, device) if model is None else model
        if device.startswith("cuda"):
            self.model = self.model.to(memory_format=torch.channels_last)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """See :meth:`Predictor.predict`."""
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


def forget_predictors() -> None:
    """Drop every cached predictor (:func:`get_predictor`): the next call loads the
    model files again (measurements of variants of the same model)."""
    with _LOCK:
        _CACHE.clear()


def get_predictor(card: ModelCard, prefer: Optional[str] = None,
                  layer_gsd_m: Optional[float] = None) -> Predictor:
    """A cached predictor for ``card``.

    Args:
        card: model card.
        prefer: ``"onnx"``, ``"torch"`` or None (GPU torch if CUDA, else ONNX, else
            torch CPU).
        layer_gsd_m: the GSD of the layer it will run on, metres per pixel (None: the
            model's own): an ONNX predictor runs the card's INT8 graph only where the
            card's ``quantization`` serves that layer (``ModelCard.graph_path``).

    An ensemble card gets an :class:`EnsemblePredictor` over its members' predictors
    (a member is looked for beside the ensemble's folder, then in the whole catalog);
    an imported card (``onnx_only``) an :class:`ImportedPredictor` whatever ``prefer``.

    Raises:
        ModelNotFound, ModelCorrupt: weights/ONNX missing or unreadable, unknown member.
    """
    weights = card.weights_path
    served = card.quantization is None or card.quantization.serves(layer_gsd_m)
    key = (card.id, card.version, str(card.path), prefer,
           weights.stat().st_mtime if weights.is_file() else None, served)
    if card.is_ensemble:
        members = [(get_predictor(_member_card(m.id, card), prefer, layer_gsd_m), m.weight)
                   for m in card.members]
        with _LOCK:
            predictor = _CACHE.get(key)
            same = predictor is not None and [id(e) for e, _ in predictor.members] == [
                id(e) for e, _ in members]
            if not same:
                predictor = _CACHE[key] = EnsemblePredictor(card, members)
            return predictor
    with _LOCK:
        predictor = _CACHE.get(key)
        if predictor is not None:
            return predictor
        onnx_gpu = prefer != "torch" and _onnx_gpu() and card.onnx_path.is_file()
        if card.onnx_only:
            predictor = ImportedPredictor(card)
        elif prefer == "torch" or (prefer is None and cuda_available() and not onnx_gpu):
            predictor = TorchPredictor(card, "cuda:0" if cuda_available() else "cpu")
        elif card.onnx_path.is_file() or prefer == "onnx":
            predictor = OnnxPredictor(card, layer_gsd_m=layer_gsd_m)
        elif not torch_available():
            raise ModelNotFound(
                f"model {card.id!r} has no ONNX file at {card.onnx_path}, and this engine "
                f"has no PyTorch to run its weights (it was installed for detection "
                f"only): reinstall the engine, or install it with PyTorch (the 'train' "
                f"extra) to export the model")
        else:
            predictor = TorchPredictor(card, "cpu")
        _CACHE[key] = predictor
        return predictor


def _onnx_gpu() -> bool:
    """True when ONNX Runtime can run on a GPU here (``imported.providers``)."""
    try:
        return onnx_providers()[0] != "CPUExecutionProvider"
    except Exception:  # no onnxruntime: PyTorch runs the models
        return False


def _member_card(member_id: str, ensemble: ModelCard) -> ModelCard:
    """The card of an ensemble's member: beside the ensemble's folder (shipped
    ensembles, test folders), else anywhere in the catalog (an ensemble of imported
    models, of shipped and imported ones).

    Raises:
        ModelNotFound, ModelCorrupt: no such member, or an unreadable card.
    """
    from backend.models.catalog import load_card
    if ensemble.path is None:
        return load_card(member_id)
    try:
        return load_card(member_id, ensemble.path.parent)
    except ModelNotFound:
        return load_card(member_id)
