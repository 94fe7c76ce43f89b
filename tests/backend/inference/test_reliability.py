"""Reliability and security: the gaps of the bad-input matrix (16-bit and
float rasters, a model without weights), out-of-memory back-off, and a scan of the code
for unsafe deserialisation.

Real data: pv01 held-out tiles converted to other data types in a temporary folder; the
Vienna orthophoto (0.3 m, EPSG:31256) for tiling. See README "Reliability and security"
for the whole matrix.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

import protocol as P
from backend.config import data_dir, pv01_dir
from backend.inference import detect as D
from backend.inference import pipeline as PL
from backend.inference.backoff import is_out_of_memory
from protocol.errors import JobError
from backend.inference.predictors import Predictor
from backend.inference.grid import plan_grid
from backend.inference.raster import WindowReader
from backend.models.catalog import load_card
from protocol.params import DetectParams

REPO = Path(__file__).resolve().parents[3]
MODEL = "pv-unet-efl0"
TILE = pv01_dir() / "heldout" / "PV01_325192_1204249.tif"
VIENNA = data_dir() / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"


def _request(source, **kw):
    req = {"v": 1, "id": "r", "type": "detect", "model": MODEL, "source": source}
    req.update(kw)
    return P.validate_request(req)


def _converted(tmp_path: Path, dtype: str) -> Path:
    """The real held-out tile as a 3-band ``dtype`` GeoTIFF (same georeferencing)."""
    with rasterio.open(TILE) as src:
        arr = src.read().astype(np.float64)
        profile = src.profile
    if dtype == "uint16":
        out = (arr * 257).astype(np.uint16)  # full 16-bit range, as cameras deliver
    else:
        out = (arr / 255.0).astype(np.float32)  # reflectance-like 0..1
    profile.update(dtype=dtype, nodata=None)
    path = tmp_path / f"tile_{dtype}.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(out)
    return path


# ----------------------------------------------------------------------------- bad input

#: min/max that undo each conversion of :func:`_converted`
_UNDO = {"uint16": {"mode": "minmax", "min": [0, 0, 0], "max": [65535, 65535, 65535]},
         "float32": {"mode": "minmax", "min": [0, 0, 0], "max": [1, 1, 1]}}


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_non_8bit_rgb_file_is_stretched_not_misread(dtype, tmp_path):
    """A 3-band 16-bit or float raster: never read as if 8-bit. With the min/max that
    undo the conversion it gives the 8-bit tile's polygons; by default it is stretched
    2-98 % with a warning that says so."""
    path = _converted(tmp_path, dtype)
    ref = D.run_detect(_request({"kind": "file", "path": str(TILE)}), [])
    undone = D.run_detect(_request({"kind": "file", "path": str(path)},
                                   stretch=_UNDO[dtype]), [])
    assert ref["features"] and ([f["wkt"] for f in undone["features"]]
                                == [f["wkt"] for f in ref["features"]])
    auto = D.run_detect(_request({"kind": "file", "path": str(path)}), [])
    assert any("stretched to 8 bits" in w and dtype in w for w in auto["stats"]["warnings"])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_non_8bit_pixels_are_stretched_too(dtype, tmp_path):
    """The same for pixels sent by the plugin (source kind ``pixels``)."""
    with rasterio.open(_converted(tmp_path, dtype)) as src:
        arr, t, crs = src.read(), src.transform, src.crs.to_wkt()
    ref = D.run_detect(_request({"kind": "file", "path": str(TILE)}), [])
    res = D.run_detect(_request({"kind": "pixels", "crs": crs, "transform": list(t)[:6]},
                                stretch=_UNDO[dtype]), [arr])
    assert [f["wkt"] for f in res["features"]] == [f["wkt"] for f in ref["features"]]


def test_gsd_far_from_model_is_resampled_with_warning():
    """A 0.3 m/pixel raster for a 0.1 m model: detected on the resampled grid and the
    user is warned (the plugin shows stats["warnings"], tests/plugin/test_faults.py)."""
    with rasterio.open(TILE) as src:
        arr, crs, t = src.read(), src.crs.to_wkt(), src.transform
    coarse = [t.a * 3, 0.0, t.c, 0.0, t.e * 3, t.f]  # the same pixels called 0.3 m
    res = D.run_detect(_request({"kind": "pixels", "crs": crs, "transform": coarse}), [arr])
    st = res["stats"]
    assert st["source_gsd_m"] == pytest.approx(0.3) and st["width"] == 3 * arr.shape[2]
    assert any("far from the model's" in w and "resampled" in w for w in st["warnings"])


def test_model_without_weights_is_not_found(tmp_path, monkeypatch):
    """Card present, weights (and ONNX) absent: ``not_found`` naming the missing file."""
    card = load_card(MODEL)
    folder = tmp_path / MODEL
    folder.mkdir()
    shutil.copy(card.path / "card.json", folder / "card.json")
    monkeypatch.setenv("ORTHOLENS_MODELS", str(tmp_path))
    req = _request({"kind": "file", "path": str(TILE)})
    with pytest.raises(JobError) as ei:
        D.run_detect(req, [])
    assert ei.value.code == P.E_NOT_FOUND
    assert "no weights" in ei.value.message and "weights.safetensors" in ei.value.message


def test_model_without_weights_is_not_found_through_the_daemon(tmp_path, monkeypatch):
    """The same error reaches a client of the daemon as ``DaemonError('not_found')``."""
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError

    card = load_card(MODEL)
    (tmp_path / MODEL).mkdir()
    shutil.copy(card.path / "card.json", tmp_path / MODEL / "card.json")
    monkeypatch.setenv("ORTHOLENS_MODELS", str(tmp_path))
    with Server(port=0, device="cpu") as server, OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as ei:
            c.detect(DetectParams(source={"kind": "file", "path": str(TILE)}, model=MODEL))
    assert ei.value.code == P.E_NOT_FOUND and "no weights" in ei.value.message


# ----------------------------------------------------------------------------- GPU OOM

class OomPredictor(Predictor):
    """Per-pixel brightness 'model' that runs out of memory above ``limit`` tiles a call,
    like a GPU whose memory fits only small batches."""

    kind = "test"
    device = "cuda:0 fake"

    def __init__(self, card, limit=2, error=None):
        import torch
        self.card = card
        self.limit = limit
        self.error = error or (lambda: torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB"))
        self.calls = []

    def predict_raw(self, tiles):
        self.calls.append(len(tiles))
        if len(tiles) > self.limit:
            raise self.error()
        p = tiles.astype(np.float32).mean(1, keepdims=True) / 255.0
        return np.concatenate([1 - p, p], 1)


def _grid_probs(predictor, batch_size, warnings=None, extent=(-1700, 338500, -1640, 338560),
                tile_size=128, overlap=32):
    """``predict_grid`` of ``engine`` over ``extent`` of the Vienna scene (EPSG:31256)."""
    card = predictor.card
    with rasterio.open(VIENNA) as ds:
        grid = plan_grid(ds, list(extent), None, card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        try:
            return PL.predict_grid(reader, grid, predictor, batch_size, tile_size=tile_size,
                                  overlap=overlap, warnings=warnings)
        finally:
            reader.close()


def test_oom_halves_the_batch_and_retries_the_same_tiles():
    card = load_card(MODEL)
    ref, ref_valid, n = _grid_probs(OomPredictor(card, limit=1000), 8)
    predictor = OomPredictor(card, limit=2)
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
    card = load_card(MODEL)
    predictor = OomPredictor(card, limit=1, error=lambda: MemoryError("bad allocation"))
    req = _request({"kind": "file", "path": str(VIENNA)},
                   extent=[-1700, 338500, -1640, 338560], batch_size=4)
    res = D.run_detect(req, [], predictor=predictor, overrides={"tile_size": 128, "overlap": 32})
    assert any("ran out of memory at 4 tiles per batch" in w for w in res["stats"]["warnings"])
    assert res["stats"]["tiles"] > 4 and max(predictor.calls[2:]) == 1


def test_oom_on_a_single_tile_is_a_clear_error():
    card = load_card(MODEL)
    predictor = OomPredictor(card, limit=0)
    with pytest.raises(JobError) as ei:
        _grid_probs(predictor, 2)
    assert ei.value.code == P.E_BUSY and "out of memory even for one tile" in ei.value.message


def test_other_engine_errors_are_not_taken_for_oom():
    card = load_card(MODEL)
    predictor = OomPredictor(card, limit=0, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _grid_probs(predictor, 4)
    assert predictor.calls == [4]
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : "
                                           "Failed to allocate memory for requested buffer"))


# ----------------------------------------------------------------------------- security

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve",
                  "marshal", "joblib"}


def unsafe_calls(source: str, name: str = "<src>") -> list:
    """``["file:line: why", ...]`` for code that could unpickle untrusted bytes: imports
    of pickle-like modules, ``torch.load`` without ``weights_only=True``, ``np.load`` /
    ``numpy.load`` with ``allow_pickle`` not literally False. Comments and docstrings
    (which may say "never pickled") are not code and are not flagged."""
    found = []
    tree = ast.parse(source, name)
    # ``from torch import load`` / ``from torch.serialization import load as f``
    loaders = {a.asname or a.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom)
               and (node.module or "").split(".")[0] == "torch"
               for a in node.names if a.name == "load"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [(node.module or "").split(".")[0]]
            if any(a.name in UNSAFE_MODULES for a in node.names):
                mods.append("pickle")
        else:
            mods = []
        for m in mods:
            if m in UNSAFE_MODULES:
                found.append(f"{name}:{node.lineno}: imports {m}")
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if func.endswith("torch.load") or func in loaders:
            w = kw.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
        if func in ("np.load", "numpy.load"):
            a = kw.get("allow_pickle")
            if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                found.append(f"{name}:{node.lineno}: {func} with allow_pickle")
        if func.split(".")[-1] in ("loads", "load", "Unpickler") and \
                func.split(".")[0] in UNSAFE_MODULES:
            found.append(f"{name}:{node.lineno}: {func}")
    return found


def test_scanner_finds_unsafe_deserialisation():
    bad = ("import pickle\nfrom joblib import load\nimport torch, numpy as np\n"
           "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\n"
           "np.load('a.npy', allow_pickle=True)\nnumpy.load('a', allow_pickle=flag)\n"
           "from torch import load\nload('w.pt')\n"
           "from torch.serialization import load as tl\ntl('w.pt', weights_only=False)\n")
    good = ('"""Nothing is ever pickled."""\n# import pickle\nimport torch, numpy as np\n'
            "torch.load('w.pt', weights_only=True)\nnp.load('a.npy')\n"
            "np.load('a.npy', allow_pickle=False)\n"
            "from torch import load as tl\ntl('w.pt', weights_only=True)\n")
    found = unsafe_calls(bad)
    assert len(found) == 8, found
    assert unsafe_calls(good) == []


def test_no_unsafe_deserialisation_in_the_code():
    """The daemon reads only JSON, raw array bytes, safetensors and ONNX."""
    files = sorted(p for d in ("protocol", "backend", "plugin", "tools")
                   for p in (REPO / d).rglob("*.py"))
    files.append(REPO / "build.py")
    assert len(files) > 15
    found = [hit for p in files
             for hit in unsafe_calls(p.read_text("utf-8"), str(p.relative_to(REPO)))]
    assert not found, "unsafe deserialisation:\n" + "\n".join(found)


def test_cli_public_bind_needs_a_token_and_then_enforces_token_and_roots(tmp_path,
                                                                        get_free_port):
    """``python -m backend --host 0.0.0.0``: without a token it refuses to start (exit
    2, a message naming the fix); with one, requests without it are ``forbidden`` and
    rasters outside ``ORTHOLENS_ROOTS`` cannot be read."""
    import os
    import signal
    import subprocess
    import sys

    from protocol.client import OrtholensClient
    from protocol.launcher import start_daemon
    from protocol.errors import DaemonError

    env = {k: v for k, v in os.environ.items() if k != "ORTHOLENS_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "backend", "--host", "0.0.0.0", "--port", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert ("ortholens daemon: binding '0.0.0.0' (not loopback) requires a token "
            "(--token or ORTHOLENS_TOKEN)") in r.stderr

    port = get_free_port()
    proc = start_daemon(sys.executable, port, str(REPO), host="0.0.0.0", token="s3cret",
                        env={"ORTHOLENS_ROOTS": str(tmp_path)}, wait_s=60,
                        log_path=str(tmp_path / "d.log"))
    try:
        endpoint = f"tcp://127.0.0.1:{port}"
        with OrtholensClient(endpoint, timeout_s=10) as anon:
            with pytest.raises(DaemonError) as ei:
                anon.ping()
            assert ei.value.code == P.E_FORBIDDEN and "token" in ei.value.message
        with OrtholensClient(endpoint, token="s3cret", timeout_s=10) as c:
            assert c.ping()["type"] == "pong"
            with pytest.raises(DaemonError) as ei:
                c.detect(DetectParams(source={"kind": "file", "path": str(TILE)}, model=MODEL))
            assert ei.value.code == P.E_FORBIDDEN and "ORTHOLENS_ROOTS" in ei.value.message
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


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
    card = load_card(MODEL)
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
