"""Pixel uploads: an image streamed window by window (``upload`` / ``window``), then
detected as an ``upload`` source; its limits, errors and clean-up; and the real
detection of an uploaded tile equal to the detection of the file."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import protocol as P
from backend.daemon.uploads import UploadStore, window_side
from protocol.client import OrtholensClient
from protocol.errors import DaemonError, JobCancelled
from protocol.params import DetectParams, FileSource, PixelUpload, UploadSource
from protocol.window import Window
from tests.support import (DEFAULT_MODEL, INSIDE, REPO, ask, raw_dealer as raw,
                           running_server)

CRS = "EPSG:32651"
TRANSFORM = (0.1, 0.0, 254315.0, 0.0, -0.1, 3601415.0)


def image(h=150, w=200, count=3, dtype=np.uint8):
    """A deterministic image whose every pixel differs from its neighbours."""
    a = np.arange(count * h * w, dtype=np.uint64).reshape(count, h, w) * 7919 % 251
    return a.astype(dtype)


def read_back(request, arrays, progress, cancelled):
    """A detect_fn that reads its source as the real detection does and reports it."""
    from backend.inference.raster import open_source
    with open_source(request["source"], arrays[0] if arrays else None) as ds:
        a = ds.read()
        return {"crs": ds.crs.to_wkt(), "features": [],
                "stats": {"path": request["source"].get("path"), "shape": list(a.shape),
                          "digest": digest(a),
                          "transform": list(ds.transform)[:6], "nodata": ds.nodata,
                          "epsg": ds.crs.to_epsg()}}


def digest(a):
    """A checksum of the values and positions of ``a``'s pixels."""
    return int((a.astype(np.int64) * np.arange(a.size).reshape(a.shape) % 1000003).sum())


@contextmanager
def running(tmp_path, **kw):
    """A server in a thread whose detections read back their source
    (:func:`read_back`), its uploads under ``tmp_path / "uploads"``."""
    with running_server(detect_fn=kw.pop("detect_fn", read_back),
                        upload_dir=str(tmp_path / "uploads"), **kw) as (server, _):
        yield server


def spec(img, **kw):
    return PixelUpload(CRS, TRANSFORM, img.shape[2], img.shape[1], img.shape[0],
                       str(img.dtype), **kw)


def windows_of(img, log=None):
    def read(window):
        if log is not None:
            log.append(window)
        return img[(slice(None),) + window.slices()]
    return read


def test_the_window_side_fits_a_frame():
    """(How the windows cover the image: tests/protocol/test_window.py.)"""
    assert window_side(None, 3, "uint8") == P.DEFAULT_WINDOW_PX
    assert window_side(4096, 16, "float32") == 2048         # a window fits in a frame
    assert 2048 ** 2 * 16 * 4 <= P.MAX_FRAME_BYTES


def test_an_uploaded_image_is_detected_exactly_as_sent_then_deleted(tmp_path):
    img = image()
    with running(tmp_path) as server, OrtholensClient(server.endpoint) as c:
        log, progress = [], []
        src = c.upload(spec(img, window_px=64, nodata=0), windows_of(img, log),
                       on_progress=lambda f, m: progress.append(f))
        assert isinstance(src, UploadSource)
        # 3 x 4 windows of the 64-pixel grid, row by row, clipped at the edges
        assert log == P.upload_windows(200, 150, 64) and len(log) == 12
        assert log[3] == Window(0, 192, 64, 8) and log[-1] == Window(128, 192, 22, 8)
        assert progress[-1] == 1.0 and progress == sorted(progress)
        res = c.detect(DetectParams(src, "m"))
        stats = res["stats"]
        assert stats["shape"] == [3, 150, 200] and stats["digest"] == digest(img)
        assert stats["transform"] == list(TRANSFORM) and stats["epsg"] == 32651
        assert stats["nodata"] == 0
        # the job read the daemon's own file (no roots check), deleted when it ended
        assert Path(stats["path"]).parent == tmp_path / "uploads"
        assert not Path(stats["path"]).exists() and len(server.uploads) == 0
        with pytest.raises(DaemonError) as ei:  # one detection per upload
            c.detect(DetectParams(src, "m"))
        assert ei.value.code == P.E_NOT_FOUND and ei.value.field == "source"
        assert "upload" in ei.value.message


def test_the_client_reads_one_window_at_a_time(tmp_path):
    """Window k is read only after all but ``in_flight`` of the earlier windows were
    acknowledged: a large extent never sits whole in the client's memory."""
    img = image(300, 300)
    acked = []
    reads_after = []

    def read(window):
        reads_after.append(len(acked))
        return img[(slice(None),) + window.slices()]

    with running(tmp_path) as server, OrtholensClient(server.endpoint) as c:
        c.upload(spec(img, window_px=64), read, in_flight=2,
                 on_progress=lambda f, m: acked.append(f))
    assert len(reads_after) == 25
    assert all(k - n <= 2 for k, n in enumerate(reads_after)), reads_after
    assert len(acked) == 25


def test_float_and_single_band_images(tmp_path):
    img = image(70, 90, count=1, dtype=np.float32) / 3
    with running(tmp_path) as server, OrtholensClient(server.endpoint) as c:
        src = c.upload(spec(img, window_px=64), windows_of(img))
        stats = c.detect(DetectParams(src, "m"))["stats"]
        assert stats["shape"] == [1, 70, 90] and stats["digest"] == digest(img)


def test_bad_windows_are_refused_and_the_upload_survives(tmp_path):
    img = image(100, 100)
    with running(tmp_path) as server, raw(server.endpoint) as s:
        opened = ask(s, spec(img, window_px=64).to_header())
        assert opened["type"] == "upload" and opened["windows"] == 4
        uid = opened["upload_id"]
        bad = [({"row": 0, "col": 10}, [img[:, :64, 10:74]], "grid"),         # off grid
               ({"row": 0, "col": 0}, [img[:, :64, :63]], "must be uint8"),   # shape
               ({"row": 0, "col": 0}, [img[:, :64, :64].astype(np.uint16)], "uint16"),
               ({"row": 0, "col": 0}, [], "exactly one array"),
               ({"row": 0, "col": 0}, [img[:, :64, :64]] * 2, "exactly one array")]
        for fields, arrays, words in bad:
            r = ask(s, P.request("window", upload_id=uid, **fields), arrays)
            assert r["type"] == "error" and r["code"] == P.E_BAD_REQUEST, r
            assert words in r["message"], r["message"]
        r = ask(s, P.request("window", upload_id="nope", row=0, col=0), [img[:, :64, :64]])
        assert r["code"] == P.E_NOT_FOUND and r["field"] == "upload_id"
        # an incomplete upload cannot be detected
        ask(s, P.request("window", upload_id=uid, row=0, col=0), [img[:, :64, :64]])
        r = ask(s, DetectParams(UploadSource(uid), "m").to_header())
        assert r["code"] == P.E_INVALID_INPUT and "1 of its 4 windows" in r["message"]
        assert r["field"] == "source"
        for win in P.upload_windows(100, 100, 64)[1:]:
            last = ask(s, P.request("window", upload_id=uid, row=win.row, col=win.col),
                       [img[(slice(None),) + win.slices()]])
        assert last["complete"] and last["received"] == 4
        r = ask(s, P.request("window", upload_id=uid, row=0, col=0), [img[:, :64, :64]])
        assert r["code"] == P.E_BAD_REQUEST and "complete" in r["message"]


def test_upload_limits_token_cancel_and_expiry(tmp_path):
    img = image(100, 100)
    # each upload is 30 000 bytes: the second one does not fit in 50 000
    with running(tmp_path, token="s3cret", max_upload_bytes=50_000,
                 upload_idle_s=0.3) as server:
        with OrtholensClient(server.endpoint) as anon:
            with pytest.raises(DaemonError) as ei:
                anon.upload(spec(img), windows_of(img))
            assert ei.value.code == P.E_FORBIDDEN and ei.value.field == "token"
        with OrtholensClient(server.endpoint, token="s3cret") as c:
            first = c._call("upload", **{k: v for k, v in spec(img).to_header().items()
                                         if k not in ("v", "type", "id")})
            with pytest.raises(DaemonError) as ei:
                c.upload(spec(img), windows_of(img))
            assert ei.value.code == P.E_BUSY and "try again later" in ei.value.message
            # cancel drops an upload (its file too)
            assert c.cancel(first["upload_id"])["state"] == "cancelled"
            assert len(server.uploads) == 0 and not os.listdir(tmp_path / "uploads")
            # a cancelled upload stops reading and leaves nothing behind
            reads = []
            with pytest.raises(JobCancelled):
                c.upload(spec(img, window_px=64), windows_of(img, reads),
                         is_cancelled=lambda: len(reads) >= 2)
            assert len(reads) == 2 and len(server.uploads) == 0
            # an upload nobody sends to expires
            src = c.upload(spec(img), windows_of(img))
            time.sleep(0.4)
            server.uploads.prune(server.table.is_active)
            with pytest.raises(DaemonError) as ei:
                c.detect(DetectParams(src, "m"))
            assert ei.value.code == P.E_NOT_FOUND
    assert not (tmp_path / "uploads").exists() or not os.listdir(tmp_path / "uploads")


def test_a_client_that_sends_a_wrong_window_gets_a_clear_error(tmp_path):
    img = image(100, 100)
    with running(tmp_path) as server, OrtholensClient(server.endpoint) as c:
        with pytest.raises(P.ProtocolError) as ei:
            c.upload(spec(img, window_px=64),
                     lambda w: img[:, :w.height, :w.width - 1])
        assert "needs uint8 (3, 64, 64)" in str(ei.value)
        assert len(server.uploads) == 0  # dropped


def test_the_store_deletes_its_folder():
    store = UploadStore(idle_s=60)
    header = P.validate_request(spec(image(20, 20)).to_header())
    up = store.open(header)
    folder = store._folder
    assert os.path.isdir(folder) and len(store) == 1 and up["windows"] == 1
    store.close()
    assert not os.path.exists(folder)


def test_forbidden_and_missing_files_name_the_source_field(tmp_path):
    with running(tmp_path, restrict_paths=True, allowed_roots=[str(tmp_path / "r")]) as server, \
            OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as ei:
            c.detect(DetectParams(FileSource("/etc/passwd"), "m"))
        assert (ei.value.code, ei.value.field, ei.value.job_id) == (P.E_FORBIDDEN, "source",
                                                                   None)
    with running(tmp_path) as server, OrtholensClient(server.endpoint) as c:
        with pytest.raises(DaemonError) as ei:
            c.detect(DetectParams(FileSource(str(tmp_path / "missing.tif")), "m"))
        assert (ei.value.code, ei.value.field) == (P.E_NOT_FOUND, "source")
        assert ei.value.job_id is not None and "engine's computer" in ei.value.message


# ----------------------------------------------------------------------------- real model

def test_real_detection_of_an_uploaded_tile_equals_the_file(tmp_path):
    """The detection of a held-out tile streamed in 128-pixel windows gives exactly the
    polygons of the same tile read from its file."""
    import rasterio

    from backend.inference.detect import run_detect

    tile = INSIDE
    if not tile.is_file() or not (REPO / "models" / DEFAULT_MODEL / "card.json").is_file():
        pytest.skip(f"needs {tile} and the model {DEFAULT_MODEL}")
    with rasterio.open(tile) as ds:
        img = ds.read()
        up = PixelUpload(ds.crs.to_wkt(), tuple(ds.transform)[:6], ds.width, ds.height,
                         ds.count, str(img.dtype), window_px=128)
    with running(tmp_path, detect_fn=run_detect) as server, \
            OrtholensClient(server.endpoint, timeout_s=30) as c:
        by_file = c.detect(DetectParams(FileSource(str(tile)), DEFAULT_MODEL),
                           job_timeout_s=300)
        src = c.upload(up, windows_of(img))
        by_upload = c.detect(DetectParams(src, DEFAULT_MODEL), job_timeout_s=300)
    assert by_file["features"], "the held-out tile has panels"
    assert [f["wkt"] for f in by_upload["features"]] == [f["wkt"] for f in by_file["features"]]
    assert by_upload["stats"]["width"] == by_file["stats"]["width"]
