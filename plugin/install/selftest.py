"""The engine's self-test after a setup: start it, ping it, list its models, and detect
on a small generated chip. No QGIS here (GDAL writes the chip).

The chip (:func:`write_chip`) is generated, not a copy of any data set: 256 x 256
pixels at 0.1 m in UTM 33N, a grey roof with two rows of dark, gridded rectangles shaped
like solar panels. Whether the model finds them is not the test; that the engine reads a
raster, runs its model and answers with a result is.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from protocol.errors import EngineSetupError, OrtholensError

#: The chip's size (pixels), ground sampling distance (m) and CRS.
CHIP_PX, CHIP_GSD_M, CHIP_EPSG = 256, 0.1, 32633


def write_chip(path: Path) -> Path:
    """Write the self-test chip (see the module docstring) as a GeoTIFF at ``path``
    (folders created); returns ``path``.

    Raises:
        EngineSetupError: GDAL cannot write it.
    """
    import numpy as np
    from osgeo import gdal, osr

    n = CHIP_PX
    yy, xx = np.mgrid[0:n, 0:n]
    roof = 150 + ((xx * 7 + yy * 13) % 17).astype(np.int32) - 8  # a little texture
    rgb = np.stack([roof, roof - 4, roof - 10]).astype(np.int32)
    for row_top in (40, 140):  # two rows of panels, 1.0 m x 1.7 m, 0.1 m gaps
        for col_left in range(30, 220, 11):
            y0, y1, x0, x1 = row_top, row_top + 17, col_left, col_left + 10
            rgb[0, y0:y1, x0:x1] = 35
            rgb[1, y0:y1, x0:x1] = 45
            rgb[2, y0:y1, x0:x1] = 70
            rgb[:, y0:y1:6, x0:x1] += 25  # cell lines
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 3, gdal.GDT_Byte)
    if ds is None:
        raise EngineSetupError(f"The self-test chip cannot be written to {path}.")
    ds.SetGeoTransform((500000.0, CHIP_GSD_M, 0.0, 5300000.0, 0.0, -CHIP_GSD_M))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(CHIP_EPSG)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rgb[b])
    ds.FlushCache()
    ds = None
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SelfTest:
    """What the self-test saw.

    Attributes:
        version: the engine's version (``pong``).
        device: its device string (``pong``), e.g. ``cpu``.
        device_info: its device description (``pong["device_info"]``).
        models: the ids of its models.
        default_model: the model it offers first on this device.
        polygons: polygons found on the chip.
        detect_s: the chip's detection time, seconds.
        start_s: the time from starting the engine to its first answer, seconds.
    """

    version: str = "?"
    device: str = "?"
    device_info: Dict[str, Any] = field(default_factory=dict)
    models: List[str] = field(default_factory=list)
    default_model: Optional[str] = None
    polygons: int = 0
    detect_s: float = 0.0
    start_s: float = 0.0

    def summary(self) -> str:
        """One line: version, device, models, the chip's detection."""
        return (f"engine {self.version} on {describe_device(self.device_info, self.device)}; "
                f"models: {', '.join(self.models)}; test chip detected in "
                f"{self.detect_s:.1f} s ({self.polygons} polygons)")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready copy."""
        return dict(self.__dict__)


def describe_device(info: Optional[Dict[str, Any]], device: str = "") -> str:
    """The device of a ``pong`` in words: ``NVIDIA H200, 139.8 GiB, PyTorch 2.14.1`` or
    ``CPU, 2 cores, ONNX Runtime (no PyTorch)``; ``device`` when ``info`` is empty."""
    info = info or {}
    torch = info.get("torch")
    if info.get("kind") == "cuda":
        mem = info.get("memory_gib")
        parts = [str(info.get("name") or device or "GPU")]
        if isinstance(mem, (int, float)):
            parts.append(f"{mem:g} GiB")
        parts.append(f"PyTorch {torch}" if torch else "PyTorch")
        return ", ".join(parts)
    if info.get("kind") == "cpu":
        cores = info.get("cores")
        parts = ["CPU"] + ([f"{cores} cores"] if isinstance(cores, int) else [])
        if info.get("runtime") == "onnxruntime":
            parts.append("ONNX Runtime" + (f" and PyTorch {torch}" if torch
                                           else " (no PyTorch)"))
        elif torch:
            parts.append(f"PyTorch {torch}")
        return ", ".join(parts)
    return device or "an unknown device"


def run_self_test(python: str, cwd: str, folder: Path, log: Callable[[str], None],
                  is_cancelled: Callable[[], bool] = lambda: False,
                  timeout_s: float = 180.0) -> SelfTest:
    """Start the engine of ``python`` on a free loopback port, check it, stop it.

    Steps: start (``python -m backend``; its log is ``folder/daemon.log``), ``ping``,
    ``models`` (at least one), a detection with its default model on the chip
    (``folder/chip.tif``, written by :func:`write_chip`).

    Args:
        python: the engine's interpreter.
        cwd: the engine's working directory.
        folder: where the chip and the daemon's log go (created).
        log: called with one line per step.
        is_cancelled: polled between steps and during the detection.
        timeout_s: longest wait for the start and for the detection, seconds each.

    Returns:
        A :class:`SelfTest`.

    Raises:
        EngineSetupError: a step failed; the message says which and ends with the
            engine's log when it did not start.
        InterruptedError: cancelled.
    """
    from protocol.client import OrtholensClient

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chip = write_chip(folder / "chip.tif")
    port = free_port()
    report = SelfTest()
    proc = _start_engine(python, cwd, port, folder / "daemon.log", report, log, timeout_s)
    try:
        with OrtholensClient(f"tcp://127.0.0.1:{port}", timeout_s=30.0) as client:
            _ping(client, report, log)
            _list_models(client, report, log)
            if is_cancelled():
                raise InterruptedError("cancelled")
            _detect_chip(client, chip, report, log, is_cancelled, timeout_s)
    except OrtholensError as exc:
        if getattr(exc, "code", None) == "cancelled":
            raise InterruptedError("cancelled") from None
        if isinstance(exc, EngineSetupError):
            raise
        raise EngineSetupError(f"Self-test failed: {exc}",
                               log_path=str(folder / "daemon.log")) from None
    finally:
        _stop(proc)
    return report


def _start_engine(python: str, cwd: str, port: int, log_path: Path, report: SelfTest,
                  log: Callable[[str], None], timeout_s: float):
    """Start ``python -m backend`` on 127.0.0.1:``port`` and wait for its first answer;
    sets ``report.start_s``.

    Returns:
        The engine's ``subprocess.Popen``.

    Raises:
        EngineSetupError: it does not start (the message ends with its log).
    """
    from protocol.launcher import start_daemon

    log(f"Self-test: starting the engine on 127.0.0.1:{port}…")
    t0 = time.monotonic()
    try:
        proc = start_daemon(python, port, cwd=cwd, wait_s=timeout_s, log_path=str(log_path))
    except OrtholensError as exc:
        raise EngineSetupError(f"Self-test: the engine does not start: {exc}",
                               log_path=str(log_path)) from None
    report.start_s = time.monotonic() - t0
    return proc


def _ping(client: Any, report: SelfTest, log: Callable[[str], None]) -> None:
    """``ping``: the engine's version and device into ``report``."""
    pong = client.ping()
    report.version = str(pong.get("version", "?"))
    report.device = str(pong.get("device", "?"))
    report.device_info = dict(pong.get("device_info") or {})
    log(f"Self-test: ping answered in {report.start_s:.1f} s after the start: "
        f"engine {report.version} on {describe_device(report.device_info, report.device)}")


def _list_models(client: Any, report: SelfTest, log: Callable[[str], None]) -> None:
    """``models``: their ids and the default one into ``report``.

    Raises:
        EngineSetupError: the engine lists no models.
    """
    cards = client.models()
    report.models = [str(c.get("id")) for c in cards]
    if not cards:
        raise EngineSetupError("Self-test: the engine lists no models (its "
                               "package should carry them): repair the engine.")
    default = next((c for c in cards if c.get("default")), cards[0])
    report.default_model = str(default["id"])
    log(f"Self-test: models {', '.join(report.models)} (default {report.default_model})")


def _detect_chip(client: Any, chip: Path, report: SelfTest, log: Callable[[str], None],
                 is_cancelled: Callable[[], bool], timeout_s: float) -> None:
    """A detection with the default model on the chip: its time and polygon count into
    ``report``."""
    from protocol.params import DetectParams

    t1 = time.monotonic()
    result = client.detect(DetectParams(source={"kind": "file", "path": str(chip)},
                                        model=report.default_model),
                           is_cancelled=is_cancelled, job_timeout_s=timeout_s)
    report.detect_s = time.monotonic() - t1
    report.polygons = len(result.get("features") or [])
    log(f"Self-test: detection on the {CHIP_PX} x {CHIP_PX} px test chip in "
        f"{report.detect_s:.1f} s ({report.polygons} polygons)")


def _stop(proc: Any) -> None:
    """Terminate the engine the self-test started; kill it when it does not exit in
    10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:  # noqa: BLE001 - a daemon that ignores SIGTERM
            proc.kill()


__all__ = ["CHIP_PX", "CHIP_GSD_M", "CHIP_EPSG", "write_chip", "free_port", "SelfTest",
           "describe_device", "run_self_test"]
