"""Reliability and security: the gaps of the bad-input matrix (16-bit and
float rasters, a model without weights), a public daemon's token and roots, and a scan
of the code for unsafe deserialisation (out-of-memory back-off:
tests/backend/inference/test_backoff.py).

Real data: pv01 held-out tiles converted to other data types in a temporary folder. See
README "Reliability and security" for the whole matrix.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

import protocol as P
from backend.inference import detect as D
from protocol.errors import JobError
from backend.models.catalog import load_card
from protocol.params import DetectParams
from tests.support import (DEFAULT_MODEL, REPO, against_mask, heldout, start_engine,
                           stop_engine, write_raster)

#: 4 panel arrays, all found by the shipped model
TILE = heldout("PV01_325190_1204246")


def _request(source, **kw):
    req = {"v": 1, "id": "r", "type": "detect", "model": DEFAULT_MODEL, "source": source}
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
    return write_raster(tmp_path / f"tile_{dtype}.tif", out, profile, nodata=None)


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
    """The same for pixels sent by the plugin (source kind ``pixels``): the 8-bit
    tile's polygons, which are the tile's 4 panel arrays."""
    with rasterio.open(_converted(tmp_path, dtype)) as src:
        arr, t, crs = src.read(), src.transform, src.crs.to_wkt()
    ref = D.run_detect(_request({"kind": "file", "path": str(TILE)}), [])
    res = D.run_detect(_request({"kind": "pixels", "crs": crs, "transform": list(t)[:6]},
                                stretch=_UNDO[dtype]), [arr])
    assert [f["wkt"] for f in res["features"]] == [f["wkt"] for f in ref["features"]]
    iou, arrays = against_mask(res["features"], TILE)
    assert len(res["features"]) == arrays == 4 and iou > 0.9


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
    card = load_card(DEFAULT_MODEL)
    folder = tmp_path / DEFAULT_MODEL
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

    card = load_card(DEFAULT_MODEL)
    (tmp_path / DEFAULT_MODEL).mkdir()
    shutil.copy(card.path / "card.json", tmp_path / DEFAULT_MODEL / "card.json")
    monkeypatch.setenv("ORTHOLENS_MODELS", str(tmp_path))
    with Server(port=0, device="cpu") as server, OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as ei:
            c.detect(DetectParams(source={"kind": "file", "path": str(TILE)}, model=DEFAULT_MODEL))
    assert ei.value.code == P.E_NOT_FOUND and "no weights" in ei.value.message


# ----------------------------------------------------------------------------- GPU OOM


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


def test_cli_public_bind_needs_a_token_and_then_enforces_token_and_roots(tmp_path):
    """``python -m backend --host 0.0.0.0``: without a token it refuses to start (exit
    2, a message naming the fix); with one, requests without it are ``forbidden`` and
    rasters outside ``ORTHOLENS_ROOTS`` cannot be read."""
    import os
    import subprocess
    import sys

    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError

    env = {k: v for k, v in os.environ.items() if k != "ORTHOLENS_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "backend", "--host", "0.0.0.0", "--port", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert ("ortholens daemon: binding '0.0.0.0' (not loopback) requires a token "
            "(--token or ORTHOLENS_TOKEN)") in r.stderr

    endpoint, proc = start_engine(tmp_path / "d.log", host="0.0.0.0", token="s3cret",
                                  env={"ORTHOLENS_ROOTS": str(tmp_path)}, wait_s=60)
    try:
        with OrtholensClient(endpoint, timeout_s=10) as anon:
            with pytest.raises(DaemonError) as ei:
                anon.ping()
            assert ei.value.code == P.E_FORBIDDEN and "token" in ei.value.message
        with OrtholensClient(endpoint, token="s3cret", timeout_s=10) as c:
            assert c.ping()["type"] == "pong"
            with pytest.raises(DaemonError) as ei:
                c.detect(DetectParams(source={"kind": "file", "path": str(TILE)},
                                      model=DEFAULT_MODEL))
            assert ei.value.code == P.E_FORBIDDEN and "ORTHOLENS_ROOTS" in ei.value.message
    finally:
        stop_engine(proc)


