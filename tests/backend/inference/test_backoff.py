"""backend.inference.backoff: model batches that survive a device running out of
memory (halved and retried, down to one tile), on small arrays and on a real grid of
the Vienna scene with a fake predictor that fails above a number of tiles a call; and
the real torch out-of-memory path where a CUDA GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

import protocol as P
from backend.inference import detect as D
from backend.inference.backoff import BatchBackoff, is_out_of_memory
from backend.models.catalog import load_card
from protocol.errors import JobError
from protocol.params import DetectParams, FileSource
from tests.support import DEFAULT_MODEL, VIENNA, FakePredictor, predict_vienna


def _cuda_oom():
    import torch
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _oom(card, limit=2, error=_cuda_oom):
    """A brightness predictor on a GPU whose memory holds ``limit`` tiles a call."""
    return FakePredictor(card, limit=limit, error=error, device="cuda:0 fake")


def test_out_of_memory_errors_are_told_from_others():
    import torch
    for exc in (MemoryError(), _cuda_oom(), RuntimeError("CUDA out of memory."),
                RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to "
                             "allocate memory for requested buffer"),
                RuntimeError("std::bad_alloc"), RuntimeError("CUBLAS_STATUS_ALLOC_FAILED"),
                RuntimeError("cudaErrorMemoryAllocation")):
        assert is_out_of_memory(exc), exc
    assert isinstance(_cuda_oom(), torch.cuda.OutOfMemoryError)
    for exc in (RuntimeError("shape mismatch"), ValueError("memory layout"),
                KeyboardInterrupt()):
        assert not is_out_of_memory(exc), exc


def test_a_batch_halves_until_it_fits_and_keeps_every_tile_in_order():
    card = load_card(DEFAULT_MODEL)
    tiles = np.arange(7 * 3 * 2 * 2, dtype=np.uint8).reshape(7, 3, 2, 2)
    want = tiles.astype(np.float32).mean(1, keepdims=True) / 255.0
    predictor = _oom(card, limit=2, error=lambda: MemoryError("bad allocation"))
    warnings = []
    backoff = BatchBackoff(8, warnings)
    out = backoff.predict(predictor, tiles)
    assert out.shape == (7, 2, 2, 2)
    np.testing.assert_allclose(out[:, 1:], want, rtol=1e-6)
    np.testing.assert_allclose(out[:, :1], 1 - want, rtol=1e-6)
    # 7 tiles fail, 3 (7 // 2) fail, then one at a time
    assert predictor.calls == [7, 3] + [1] * 7 and backoff.size == 1
    assert warnings == [
        "the inference device (cuda:0 fake) ran out of memory at 7 tiles per batch; "
        "continued with 3 (slower)",
        "the inference device (cuda:0 fake) ran out of memory at 3 tiles per batch; "
        "continued with 1 (slower)"]
    assert BatchBackoff(0).size == 1 and BatchBackoff(3).warnings == []
    one = BatchBackoff(4).predict(_oom(card, limit=None), tiles[:1])
    np.testing.assert_allclose(one, out[:1])


def _grid_probs(predictor, batch_size, warnings=None, extent=(-1700, 338500, -1640, 338560),
                tile_size=128, overlap=32):
    """``(probs, valid, n_tiles)`` of ``predictor`` over ``extent`` of the Vienna scene
    (EPSG:31256)."""
    return predict_vienna(predictor, extent, batch_size, tile_size=tile_size, overlap=overlap,
                          warnings=warnings)[:3]


def test_oom_halves_the_batch_and_retries_the_same_tiles():
    card = load_card(DEFAULT_MODEL)
    ref, ref_valid, n = _grid_probs(_oom(card, limit=1000), 8)
    predictor = _oom(card, limit=2)
    warnings = []
    probs, valid, n2 = _grid_probs(predictor, 8, warnings)
    assert n2 == n > 8
    np.testing.assert_array_equal(probs, ref)  # every tile ran, none twice, none lost
    np.testing.assert_array_equal(valid, ref_valid)
    assert predictor.calls[:3] == [8, 4, 2]  # halved until it fits...
    assert max(predictor.calls[3:]) == 2     # ...and stays there for the rest of the job
    assert sum(c for c in predictor.calls if c <= 2) == n
    assert len(warnings) == 2 and "out of memory at 8 tiles" in warnings[0]
    assert "continued with 2" in warnings[1]


def test_oom_warning_reaches_stats_and_memoryerror_counts():
    """ONNX Runtime allocation failures arrive as MemoryError / 'Failed to allocate
    memory' errors: the same back-off, reported in ``stats["warnings"]``."""
    card = load_card(DEFAULT_MODEL)
    predictor = _oom(card, limit=1, error=lambda: MemoryError("bad allocation"))
    req = DetectParams(FileSource(str(VIENNA)), DEFAULT_MODEL,
                       extent=(-1700, 338500, -1640, 338560), batch_size=4)
    res = D.run_detect(req, [], predictor=predictor, overrides={"tile_size": 128, "overlap": 32})
    assert any("ran out of memory at 4 tiles per batch" in w for w in res["stats"]["warnings"])
    assert res["stats"]["tiles"] > 4 and max(predictor.calls[2:]) == 1


def test_oom_on_a_single_tile_is_a_clear_error():
    card = load_card(DEFAULT_MODEL)
    predictor = _oom(card, limit=0)
    with pytest.raises(JobError) as ei:
        _grid_probs(predictor, 2)
    assert ei.value.code == P.E_BUSY and "out of memory even for one tile" in ei.value.message


def test_other_engine_errors_are_not_taken_for_oom():
    card = load_card(DEFAULT_MODEL)
    predictor = _oom(card, limit=0, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _grid_probs(predictor, 4)
    assert predictor.calls == [4]
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : "
                                           "Failed to allocate memory for requested buffer"))


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU: the real torch "
                    "out-of-memory path (build.py ALLOWED_SKIPS)")
def test_real_cuda_oom_halves_the_batch_and_gives_the_same_probabilities():
    """The torch engine on the GPU with its memory capped (a quarter of a GiB more than
    the weights and one tile need): a batch of 64 tiles of 512 px raises torch's real
    ``OutOfMemoryError``, the job halves the batch until it fits and the probabilities
    equal those of one tile a batch."""
    import torch

    from backend.inference.predictors import TorchPredictor
    card = load_card(DEFAULT_MODEL)
    predictor = TorchPredictor(card, "cuda:0")
    dev = torch.device("cuda:0")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    one = np.random.default_rng(0).integers(0, 256, (1, card.bands, 512, 512), np.uint8)
    predictor.predict_raw(one)
    need = torch.cuda.max_memory_allocated(dev)
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (need + 2**28) / total), dev)
    big = dict(extent=(-1750, 338300, -1450, 338600), tile_size=512, overlap=128)
    try:
        ref, ref_valid, n = _grid_probs(predictor, 1, [], **big)
        torch.cuda.empty_cache()
        warnings = []
        probs, valid, n2 = _grid_probs(predictor, 64, warnings, **big)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
        torch.cuda.empty_cache()
    assert n2 == n >= 64
    assert warnings and "out of memory at 64 tiles" in warnings[0], warnings
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_allclose(probs, ref, atol=2e-3)
