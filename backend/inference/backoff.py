"""Model batches that survive the inference device running out of memory.

:class:`BatchBackoff` runs tiles through a predictor in batches of at most
``size`` tiles; when the device (a CUDA GPU through PyTorch, or ONNX Runtime's
allocator) runs out of memory it halves the batch and runs the same tiles again, down
to one tile a batch, and notes it for the user.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import numpy as np

import protocol as P
from protocol.errors import JobError

#: Words of the errors that device allocators raise (CUDA via PyTorch, ONNX Runtime).
_OOM_MARKERS = ("out of memory", "failed to allocate memory", "bad_alloc", "bad allocation",
                "cudaerrormemoryallocation", "cublas_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure of the inference device: ``MemoryError``,
    ``torch.cuda.OutOfMemoryError``, or an ONNX Runtime / CUDA error saying so."""
    # torch's class is matched by name: this module must not import torch (ONNX-only
    # installs), and a predictor that raises it has torch loaded anyway.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, Exception) and any(m in str(exc).lower() for m in _OOM_MARKERS)


class BatchBackoff:
    """Runs model batches; on out-of-memory halves the batch size and retries the same
    tiles (down to one tile a batch), noting it in ``warnings``.

    Args:
        batch_size: tiles per model call to start with.
        warnings: list the notes are appended to (the job's ``stats["warnings"]``).
    """

    def __init__(self, batch_size: int, warnings: Optional[List[str]] = None):
        self.size = max(1, int(batch_size))
        self.warnings = warnings if warnings is not None else []

    def predict(self, predictor, tiles: np.ndarray) -> np.ndarray:
        """``predictor.predict_raw(tiles)`` (raw tiles (N, bands, H, W) -> float32
        (N, channels, H, W)), in calls of at most :attr:`size` tiles.

        Raises:
            JobError: ``busy`` when even a single tile does not fit in memory.
        """
        out, i = [], 0
        while i < len(tiles):
            part = tiles[i:i + self.size]
            try:
                out.append(predictor.predict_raw(part))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                free_device_memory()
                if len(part) <= 1:
                    raise JobError(f"the inference device ({predictor.device}) ran out of "
                                   f"memory even for one tile: free memory (close other "
                                   f"GPU programs) and try again", P.E_BUSY) from None
                self.size = max(1, len(part) // 2)
                self.warnings.append(f"the inference device ({predictor.device}) ran out of "
                                     f"memory at {len(part)} tiles per batch; continued "
                                     f"with {self.size} (slower)")
                continue
            i += len(part)
        return out[0] if len(out) == 1 else np.concatenate(out, axis=0)


def free_device_memory() -> None:
    """Return cached CUDA blocks after an out-of-memory (when torch is in use)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort only
        pass
