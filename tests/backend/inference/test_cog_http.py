"""A cloud-optimised GeoTIFF given by URL is read with HTTP range requests.

The Vienna orthophoto is written as a COG (GDAL's COG driver, through rasterio) and
served from 127.0.0.1 by a small HTTP server that honours ``Range`` and counts the bytes
it sends. A small extent read by URL must give the local file's polygons and fetch only
a part of the file.
"""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import pytest
import rasterio
import rasterio.shutil

from backend.inference import detect as D
from protocol.errors import JobError
from protocol.params import DetectParams, FileSource
from tests.support import DEFAULT_MODEL, VIENNA

#: 40 m x 40 m on the building complex where the model finds objects
EXTENT = (-1480.0, 338560.0, -1440.0, 338600.0)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with ``Range: bytes=a-b`` support; counts bytes sent."""

    path_on_disk: Path = Path()
    sent = [0]

    def log_message(self, *args):  # keep the test output quiet
        pass

    def _body(self):
        data = self.path_on_disk.read_bytes()
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not m:
            return 200, data, None
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else len(data) - 1
        b = min(b, len(data) - 1)
        return 206, data[a:b + 1], f"bytes {a}-{b}/{len(data)}"

    def do_HEAD(self):  # noqa: N802 - http.server API
        size = self.path_on_disk.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path != "/vienna_cog.tif":
            self.send_error(404)
            return
        code, body, rng = self._body()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", rng)
        self.end_headers()
        self.wfile.write(body)
        self.sent[0] += len(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cog = tmp_path_factory.mktemp("cog") / "vienna_cog.tif"
    rasterio.shutil.copy(str(VIENNA), str(cog), driver="COG", compress="DEFLATE",
                         blocksize=256)
    with rasterio.open(cog) as ds:
        assert ds.overviews(1), "a COG has overviews"
    _RangeHandler.path_on_disk = cog
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield cog, f"http://127.0.0.1:{server.server_address[1]}/vienna_cog.tif"
    server.shutdown()
    server.server_close()


def test_cog_by_url_equals_the_local_file_and_fetches_a_part(served):
    cog, url = served
    local = D.run_detect(DetectParams(FileSource(str(cog)), DEFAULT_MODEL, extent=EXTENT), [])
    _RangeHandler.sent[0] = 0
    remote = D.run_detect(DetectParams(FileSource(url), DEFAULT_MODEL, extent=EXTENT), [])
    assert [f["wkt"] for f in remote["features"]] == [f["wkt"] for f in local["features"]]
    assert remote["stats"]["width"] == local["stats"]["width"] == 400
    fetched, size = _RangeHandler.sent[0], cog.stat().st_size
    assert 0 < fetched < 0.25 * size, (fetched, size)


def test_missing_url_is_a_clear_input_error(served):
    _, url = served
    with pytest.raises(JobError) as info:
        D.run_detect(DetectParams(FileSource(url.replace("vienna_cog", "nothing")), DEFAULT_MODEL),
                     [])
    assert info.value.code == "invalid_input" and "nothing.tif" in info.value.message


