"""The real daemon process (``python -m backend``): CLI, hostile input and an end-to-end
detection with the trained model (starting it: tests/protocol/test_launcher.py)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

import pytest
import zmq

import protocol as P
from protocol.client import OrtholensClient
from protocol.params import DetectParams
from tests.support import DEFAULT_MODEL, HELDOUT, INSIDE, LISTENING, REPO, stop_engine


def _read_line(stream, timeout_s: float) -> str:
    q: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: q.put(stream.readline()), daemon=True).start()
    try:
        return q.get(timeout=timeout_s)
    except queue.Empty:
        return ""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, get_free_port):
    """``python -m backend --port P`` in its own session; yields ``(endpoint, proc)``."""
    port = get_free_port()
    log = open(tmp_path_factory.mktemp("daemon") / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "--port", str(port)],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=log, text=True, start_new_session=True)
    try:
        line = _read_line(proc.stdout, 60)
        assert line.rstrip("\n") == LISTENING.format(port), (line, log.name)
        yield f"tcp://127.0.0.1:{port}", proc
    finally:
        stop_engine(proc, wait_s=10)
        log.close()


@pytest.fixture
def dealer(daemon):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(daemon[0])
    yield s
    s.close()
    ctx.term()


def _hdr(**kw) -> bytes:
    return json.dumps({"v": 1, "type": "ping", "id": "x", **kw}).encode()


_DECL = [{"dtype": "uint8", "shape": [2, 2]}]
_DETECT = {"type": "detect", "source": {"kind": "pixels", "crs": "EPSG:2056",
                                        "transform": [1, 0, 0, 0, -1, 0]}, "model": "m"}

HOSTILE = [
    # (name, frames, expected code, expected reply id)
    ("malformed json", [b"{\"v\": 1, \"type\": "], P.E_BAD_REQUEST, None),
    ("not utf-8", [b"\xff\xfe\xfd"], P.E_BAD_REQUEST, None),
    ("empty frame", [b""], P.E_BAD_REQUEST, None),
    ("json array", [b"[1, 2, 3]"], P.E_BAD_REQUEST, None),
    ("deep nesting", [b"[" * 200_000], P.E_BAD_REQUEST, None),
    ("unknown type", [_hdr(type="explode", id="u1")], P.E_UNKNOWN_TYPE, "u1"),
    ("type is a list", [_hdr(type=["ping"], id="u2")], P.E_UNKNOWN_TYPE, "u2"),
    ("wrong version", [_hdr(v=99, id="w1")], P.E_VERSION, "w1"),
    ("no version", [json.dumps({"type": "ping", "id": "w2"}).encode()], P.E_BAD_REQUEST, "w2"),
    ("too many frames", [_hdr(id="f1")] + [b"\x00"] * (P.MAX_FRAMES + 1), P.E_BAD_REQUEST, None),
    ("arrays declared, frames missing", [_hdr(id="t1", arrays=_DECL * 2, **_DETECT)],
     P.E_BAD_REQUEST, None),
    ("frame shorter than declared", [_hdr(id="t2", arrays=_DECL, **_DETECT), b"\x00\x00"],
     P.E_BAD_REQUEST, None),
    ("frame without declaration", [_hdr(id="t3"), b"\x00" * 4], P.E_BAD_REQUEST, None),
    ("oversized header", [_hdr(id="big", pad="x" * (P.MAX_HEADER_BYTES + 10))],
     P.E_BAD_REQUEST, None),
    ("huge integer", [_hdr(id="h1", threshold=int("9" * 400), **_DETECT)],
     P.E_BAD_REQUEST, "h1"),
    ("unknown field", [_hdr(id="k1", shell="rm -rf /")], P.E_BAD_REQUEST, "k1"),
    ("cancel without job", [_hdr(type="cancel", id="c1")], P.E_BAD_REQUEST, "c1"),
    ("cancel unknown job", [_hdr(type="cancel", id="c2", job_id="0" * 32)], P.E_NOT_FOUND, "c2"),
]


def test_hostile_messages_get_errors_and_daemon_survives(daemon, dealer):
    endpoint, proc = daemon
    for name, frames, code, rid in HOSTILE:
        dealer.send_multipart(frames)
        assert dealer.poll(10_000), f"{name}: no reply"
        header, _ = P.decode(dealer.recv_multipart(), P.MAX_REPLY_HEADER_BYTES)
        assert header["type"] == "error", name
        assert (header["code"], header["id"]) == (code, rid), (name, header)
        assert isinstance(header["message"], str) and len(header["message"]) <= 500, name
    assert proc.poll() is None
    with OrtholensClient(endpoint) as c:
        pong = c.ping()
    assert pong["type"] == "pong" and pong["version"] == "0.1.0"
    assert pong["protocol"] == P.PROTOCOL_VERSION and pong["jobs"] == 0
    assert pong["device"] == "cpu" or pong["device"].startswith("cuda:0 ")


def test_port_in_use_exits_2(daemon):
    port = daemon[0].rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, "-m", "backend", "--port", port], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "already in use" in r.stderr


def test_cli_refuses_public_bind_without_token(monkeypatch):
    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    r = subprocess.run([sys.executable, "-m", "backend", "--host", "0.0.0.0", "--port", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "ORTHOLENS_TOKEN"})
    assert r.returncode == 2 and r.stdout == ""
    assert "token" in r.stderr


# ----------------------------------------------------------------------------- end to end

def test_detect_real_tile_end_to_end(daemon):
    import rasterio
    import rasterio.features
    from rasterio.crs import CRS
    from shapely import wkt

    image = INSIDE
    mask_path = INSIDE.with_name(f"{INSIDE.stem}_mask.tif")
    progress = []
    with OrtholensClient(daemon[0], timeout_s=10) as c:
        res = c.detect(DetectParams(source={"kind": "file", "path": str(image)},
                                    model=DEFAULT_MODEL),
                       on_progress=lambda f, m: progress.append(f), job_timeout_s=300)
    assert res["type"] == "result" and isinstance(res["crs"], str) and res["crs"]
    feats = res["features"]
    assert feats, "no panel detected"
    for f in feats:
        assert f["class"] == "photovoltaic" and f["class_id"] == 1
        assert 0 < f["score"] <= 1 and f["area_m2"] > 0
        assert f["model"] == DEFAULT_MODEL and f["model_version"]
    with rasterio.open(image) as src:
        shape, transform = (src.height, src.width), src.transform
        assert CRS.from_user_input(res["crs"]) == src.crs
    with rasterio.open(mask_path) as src:
        ref = src.read(1) > 0
    assert ref.sum() > 100, "the reference tile should hold panels"
    pred = rasterio.features.rasterize([(wkt.loads(f["wkt"]), 1) for f in feats],
                                       out_shape=shape, transform=transform,
                                       fill=0, dtype="uint8") > 0
    iou = (pred & ref).sum() / (pred | ref).sum()
    assert iou > 0.5, f"IoU with the reference mask {iou:.3f}"
    assert progress and all(0 <= f <= 1 for f in progress)


def test_two_workers_run_real_detections_concurrently_and_correctly(tmp_path,
                                                                     get_free_port):
    """``--workers 2``: four real held-out tiles sent at once from four clients give
    exactly the polygons of one detection at a time in this process (the workers share
    the cached engine)."""
    from backend.inference.detect import run_detect

    tiles = sorted(HELDOUT.glob("PV01_*[0-9].tif"))[:4]
    assert len(tiles) == 4
    port = get_free_port()
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "--port", str(port),
                             "--workers", "2"], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    results, errors = {}, []

    def one(path):
        try:
            with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=10) as c:
                results[path.name] = c.detect(DetectParams(
                    source={"kind": "file", "path": str(path)}, model=DEFAULT_MODEL),
                    job_timeout_s=300)["features"]
        except Exception as exc:  # reported below, with the tile
            errors.append((path.name, repr(exc)))

    try:
        assert _read_line(proc.stdout, 60).rstrip("\n") == LISTENING.format(port)
        threads = [threading.Thread(target=one, args=(t,)) for t in tiles]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        stop_engine(proc, wait_s=10)
        log.close()
    assert not errors, errors
    assert sorted(results) == sorted(t.name for t in tiles)
    total = 0
    for t in tiles:
        want = run_detect(DetectParams(source={"kind": "file", "path": str(t)},
                                       model=DEFAULT_MODEL), [])["features"]
        got = results[t.name]
        assert [(f["wkt"], f["score"]) for f in got] == [(f["wkt"], f["score"])
                                                          for f in want], t.name
        total += len(got)
    assert total >= 5
