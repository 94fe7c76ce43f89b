"""What the plugin tests share: paths to the repository, the engine's Python and the real
data, the default model, free ports, waiting on Qt, the requests sent to a daemon, a test
engine, small rasters, results as the engine sends them and a stand-in client.

Imported as ``helpers`` (``tests/plugin`` is on ``sys.path``: pytest puts the folder of
the root ``conftest.py`` there). What every test suite shares (the repository, the real
data, the default model, free ports, starting and stopping an engine) comes from
``tests.support``. Real data: ``ORTHOLENS_DATA``, default ``<repo>/../shared/data``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from backend.config import data_dir  # noqa: F401 (for the plugin tests)
from tests.support import (DEFAULT_MODEL, REPO, VIENNA, INSIDE as PV01_HELDOUT,  # noqa: F401
                           default_model, free_port, start_engine, stop_engine)

#: The Python of the engine's environment (``ORTHOLENS_BACKEND_PYTHON`` overrides it).
BACKEND_PYTHON = Path(os.environ.get("ORTHOLENS_BACKEND_PYTHON",
                                     REPO / ".venv" / "backend" / "bin" / "python"))
#: The shipped models' folder (``ORTHOLENS_MODELS`` overrides it).
MODELS = Path(os.environ.get("ORTHOLENS_MODELS", REPO / "models"))

#: The master password of the test profile's QGIS authentication database
#: (``tests/plugin/.qgis-settings``), where the engine token is kept.
TEST_MASTER_PASSWORD = "ortholens-tests"


def wait_until(pred: Callable[[], Any], timeout_s: float = 15.0) -> bool:
    """Process Qt events until ``pred()`` is true (True) or ``timeout_s`` passes (False)."""
    from qgis.PyQt.QtCore import QCoreApplication
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if pred():
            return True
        time.sleep(0.02)
    return False


def record_requests(monkeypatch) -> List[str]:
    """Record the type of every request a daemon client sends from now on, in any
    thread (the request still goes out); returns the list that receives them. A call
    that sends nothing waits for no answer: no time-out can make it slow."""
    from protocol.connection import DaemonConnection
    sent: List[str] = []
    send = DaemonConnection._send

    def recording_send(self, header, arrays=()):
        sent.append(str(header.get("type")))
        return send(self, header, arrays)

    monkeypatch.setattr(DaemonConnection, "_send", recording_send)
    return sent


def flush_deletes() -> None:
    """Delete the Qt objects ``deleteLater`` scheduled, now."""
    from qgis.PyQt.QtCore import QCoreApplication, QEvent
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QCoreApplication.processEvents()


def start_test_engine(log_path: Path, port: Optional[int] = None, host: str = "127.0.0.1",
                      **options: Any) -> Tuple[str, subprocess.Popen]:
    """Start the repository's engine (``BACKEND_PYTHON -m backend``) on ``host`` and wait
    up to 120 s for its first answer; stop it with :func:`stop_process`.

    Args:
        log_path: the engine's log file.
        port: its port (default: a free one on ``host``).
        host: the loopback address it binds.
        **options: further :func:`protocol.launcher.start_daemon` arguments (``env``,
            ``token``, ``args``).

    Returns:
        ``(endpoint, process)``, the endpoint as ``tcp://host:port``.
    """
    return start_engine(log_path, port, host, python=str(BACKEND_PYTHON), **options)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate an engine the tests started; kill it when it has not exited in 15 s."""
    stop_engine(proc)


def make_raster(path: Path, bands: int = 3, size=(16, 12), srs_epsg=None,
                geotransform=(1000.0, 0.5, 0.0, 2000.0, 0.0, -0.5)) -> Path:
    """Write a small GeoTIFF of uint8 gradients with GDAL; ``srs_epsg=None`` -> no CRS.

    Args:
        path: the file to write.
        bands: band count.
        size: ``(width, height)`` in pixels.
        srs_epsg: EPSG code of its CRS, or None for none.
        geotransform: GDAL's six affine coefficients (CRS units).
    """
    import numpy as np
    from osgeo import gdal, osr

    w, h = size
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, bands, gdal.GDT_Byte)
    ds.SetGeoTransform(geotransform)
    if srs_epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(srs_epsg)
        ds.SetProjection(srs.ExportToWkt())
    for b in range(bands):
        arr = (np.arange(w * h, dtype=np.uint32).reshape(h, w) * (b + 1) % 256).astype(np.uint8)
        ds.GetRasterBand(b + 1).WriteArray(arr)
    ds.FlushCache()
    ds = None
    return path


def write_bgr16(src_path: Path, path: Path, colour_interpretation: bool = False) -> Path:
    """Write a 16-bit copy of the 3-band raster ``src_path``: bands in reverse order
    (B, G, R), values ``v * 40 + 1000``; with ``colour_interpretation`` the bands are
    labelled blue, green, red. Returns ``path``."""
    from osgeo import gdal

    src = gdal.Open(str(src_path))
    dst = gdal.GetDriverByName("GTiff").Create(str(path), src.RasterXSize, src.RasterYSize,
                                               3, gdal.GDT_UInt16)
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    for i, ci in enumerate((gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand)):
        band = dst.GetRasterBand(i + 1)
        band.WriteArray(src.GetRasterBand(3 - i).ReadAsArray().astype("uint16") * 40 + 1000)
        if colour_interpretation:
            band.SetColorInterpretation(ci)
    dst = src = None
    return path


def show_layer(iface: Any, path: Path, name: str):
    """Open the raster ``path`` as layer ``name``, add it to the project, make it the
    active layer and show all of it in the map canvas (in its CRS); returns the layer."""
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    return layer


#: The classes of a card with the one class ``photovoltaic``.
CLASSES = [{"id": 1, "name": "photovoltaic", "color": "#ff7f0e"}]
#: A card of :data:`DEFAULT_MODEL` with :data:`CLASSES`, as the engine lists it.
CARD = {"id": DEFAULT_MODEL, "version": "1.0.0", "gsd_m": 0.1, "classes": CLASSES}
#: 20 m x 20 m of the Vienna orthophoto: ``(xmin, ymin, xmax, ymax)`` in EPSG:31256.
VIENNA_PATCH = (-1610.0, 338490.0, -1590.0, 338510.0)
#: A corner inside pv01's tiles (EPSG:32651, metres).
X0, Y0 = 254315.0, 3601390.0


def square(x: float, y: float, side: float) -> str:
    """The WKT of the axis-aligned square with corner ``(x, y)`` and ``side`` (CRS
    units)."""
    return (f"POLYGON(({x} {y}, {x + side} {y}, {x + side} {y + side}, "
            f"{x} {y + side}, {x} {y}))")


def fake_result() -> Dict[str, Any]:
    """A result as the engine sends it: two detections of :data:`DEFAULT_MODEL` near
    ``(X0, Y0)`` in EPSG:32651, a 2 m square (score 0.91, agreement 1) and a 3 m
    MultiPolygon square (score 0.66, agreement 0.5)."""
    from qgis.core import QgsCoordinateReferenceSystem

    crs = QgsCoordinateReferenceSystem("EPSG:32651").toWkt(
        QgsCoordinateReferenceSystem.WKT_PREFERRED)
    feats = [
        {"wkt": square(X0, Y0, 2.0), "class": "photovoltaic", "class_id": 1, "score": 0.91,
         "agreement": 1.0, "area_m2": 4.0, "model": DEFAULT_MODEL, "model_version": "1.0.0"},
        {"wkt": "MULTIPOLYGON(((%s)))" % square(X0 + 5, Y0, 3.0)[9:-2], "class": "photovoltaic",
         "class_id": 1, "score": 0.66, "agreement": 0.5, "area_m2": 9.0,
         "model": DEFAULT_MODEL, "model_version": "1.0.0"},
    ]
    return {"crs": crs, "features": feats, "stats": {"seconds": 0.1}}


def result_in(crs_id: str, wkts: List[str], classes=("photovoltaic",)) -> Dict[str, Any]:
    """A daemon-like result in ``crs_id`` with one detected feature per WKT (class
    ``classes[0]``, score 0.8, ``area_m2`` 1, :data:`DEFAULT_MODEL` v2.0.0)."""
    from qgis.core import QgsCoordinateReferenceSystem

    crs = QgsCoordinateReferenceSystem(crs_id).toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)
    feats = [{"wkt": w, "class": classes[0], "class_id": 1, "score": 0.8, "agreement": 1.0,
              "area_m2": 1.0, "model": DEFAULT_MODEL, "model_version": "2.0.0"}
             for w in wkts]
    return {"crs": crs, "features": feats}


class FakeClient:
    """A stand-in for ``protocol.client.OrtholensClient`` (patched over
    ``plugin.tasks.connect_daemon``): it lists ``cards`` and answers every detection with
    ``result``; it started no engine.

    Args:
        cards: the ``models`` reply.
        result: the ``detect`` reply (``crs``, ``features``, ``stats``).
    """

    process = None

    def __init__(self, cards: List[Dict[str, Any]], result: Dict[str, Any]):
        self.cards, self.result = cards, result

    def models(self) -> List[Dict[str, Any]]:
        return self.cards

    def detect(self, *args: Any, **kw: Any) -> Dict[str, Any]:
        return copy.deepcopy(self.result)

    def close(self) -> None:
        pass
