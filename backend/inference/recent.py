"""The class maps of the engine's recent detections, kept so that a retrain of the same
area reuses what the model predicted there instead of running it again.

A user detects an extent, corrects the result and retrains on it at once: the retrain
needs the current model's class map over the reviewed area (to find the mistakes, to
weight them and to score the model before the candidate), which is the map the
detection just made. :func:`remember` keeps that map (uint8, 1 byte a pixel, and the
valid mask) with the model's seconds per pixel in the detection; :func:`find` returns the
part of it over a retrain's grid when the grid lies on the same pixels (the same CRS,
GSD and bands, an origin a whole number of pixels away, inside the map) and everything
else that makes the map is the same: the model's weights and graph, the raster file,
its stretch to 8 bits and the post-processing options.

The map is the one the user saw: post-processing ran on the whole extent, so an object
cut by a retrain part's border is kept or dropped as in the detection, not as a
detection of the part alone would have it.

Maps are kept in this process only (the daemon's), the most recent first, at most
:data:`MAX_MB` in all; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import numpy as np

#: Most MB of class maps and valid masks kept (2 bytes a pixel: 128 Mpx, a 1.1 km
#: square at 0.1 m).
MAX_MB = 256.0
#: Largest distance of a grid's origin from a whole pixel of a kept map, pixels.
ALIGN_TOL_PX = 1e-3


@dataclass(frozen=True)
class MapKey:
    """What makes a class map besides the grid's origin and size.

    Attributes:
        model: ``(card id, version, weights path, weights mtime_ns)``.
        predictor: ``(class or graph file, device)`` of the predictor that ran.
        source: ``(real path, mtime_ns, size)`` of the raster file.
        crs_wkt: the grid's CRS; gsd: its pixel size ``(a, e)`` in CRS units.
        bands: 1-based bands read; stretch: the 8-bit stretch, or None.
        options: the post-processing options (``pipeline.Options`` without the batch
            size, which changes no pixel).
    """

    model: Tuple
    predictor: Tuple
    source: Tuple
    crs_wkt: str
    gsd: Tuple[float, float]
    bands: Tuple[int, ...]
    stretch: Optional[Tuple]
    options: Any


@dataclass
class Reused:
    """A kept map over a retrain's grid.

    Attributes:
        class_map: uint8 (H, W) cleaned class map (0 background) on the grid.
        valid: bool (H, W) valid-data mask on the grid.
        seconds_per_px: the detection's model seconds per pixel (in the predictor,
            overlapping tiles included): what running the model here would have cost.
    """

    class_map: np.ndarray
    valid: np.ndarray
    seconds_per_px: float


@dataclass
class _Kept:
    transform: Any
    class_map: np.ndarray
    valid: np.ndarray
    seconds_per_px: float

    @property
    def nbytes(self) -> int:
        return int(self.class_map.nbytes + self.valid.nbytes)


_LOCK = threading.Lock()
_KEPT: "OrderedDict[Tuple[MapKey, Tuple], _Kept]" = OrderedDict()


def map_key(card, predictor, source: Mapping[str, Any], grid, opts) -> Optional[MapKey]:
    """The key of a class map made by ``predictor`` (of ``card``) on ``grid`` of the
    raster ``source`` (a request's source dict) with post-processing ``opts``; None when
    it cannot be kept: a source that is not a file (pixels sent with the request, a URL)
    or a file that cannot be read."""
    if source.get("kind") != "file":
        return None
    try:
        path = os.path.realpath(str(source["path"]))
        st = os.stat(path)
        weights = card.weights_path
        wst = os.stat(weights) if weights is not None and os.path.exists(weights) else None
    except (KeyError, OSError, TypeError):
        return None
    inner = getattr(predictor, "_predictor", predictor)  # a timing wrapper's
    graph = getattr(inner, "graph", None)
    pred = (str(graph) if graph is not None else type(inner).__name__,
            str(getattr(inner, "device", "")))
    model = (card.id, card.version, str(weights), wst.st_mtime_ns if wst else None)
    stretch = tuple(tuple(map(float, r)) for r in grid.stretch) if grid.stretch else None
    return MapKey(model, pred, (path, st.st_mtime_ns, st.st_size), grid.crs_wkt,
                  (float(grid.transform.a), float(grid.transform.e)), tuple(grid.bands),
                  stretch, dataclasses.replace(opts, batch_size=0))


def remember(key: Optional[MapKey], grid, class_map: np.ndarray, valid: np.ndarray,
             seconds: float) -> None:
    """Keep a detection's class map over ``grid``.

    Args:
        key: :func:`map_key` (None: nothing is kept).
        grid: the detection's grid (``backend.inference.grid.Grid``).
        class_map: uint8 (H, W) cleaned class map; valid: bool (H, W).
        seconds: the detection's seconds in the predictor
            (``pipeline.RegionDetector.model_seconds``).
    """
    if key is None or class_map.shape != (grid.height, grid.width):
        return
    kept = _Kept(grid.transform, np.ascontiguousarray(class_map, np.uint8),
                 np.ascontiguousarray(valid, bool), seconds / max(1, class_map.size))
    if kept.nbytes > MAX_MB * 1e6:
        return
    slot = (key, tuple(grid.transform)[:6] + (grid.width, grid.height))
    with _LOCK:
        _KEPT.pop(slot, None)
        _KEPT[slot] = kept
        while _kept_bytes() > MAX_MB * 1e6:
            _KEPT.popitem(last=False)


def find(key: Optional[MapKey], grid) -> Optional[Reused]:
    """The part of a kept map over ``grid`` (most recent first), or None when no kept
    map with ``key`` covers it on the same pixels."""
    if key is None:
        return None
    t = grid.transform
    with _LOCK:
        items = [(slot, kept) for slot, kept in reversed(_KEPT.items()) if slot[0] == key]
    for _, kept in items:
        k = kept.transform
        col = (t.c - k.c) / k.a
        row = (t.f - k.f) / k.e
        c0, r0 = int(round(col)), int(round(row))
        if abs(col - c0) > ALIGN_TOL_PX or abs(row - r0) > ALIGN_TOL_PX:
            continue
        h, w = kept.class_map.shape
        if r0 < 0 or c0 < 0 or r0 + grid.height > h or c0 + grid.width > w:
            continue
        win = (slice(r0, r0 + grid.height), slice(c0, c0 + grid.width))
        return Reused(kept.class_map[win].copy(), kept.valid[win].copy(),
                      kept.seconds_per_px)
    return None


def forget() -> None:
    """Drop every kept map (tests start from none)."""
    with _LOCK:
        _KEPT.clear()


def _kept_bytes() -> int:
    return sum(k.nbytes for k in _KEPT.values())


def kept_mb() -> float:
    """MB of the maps kept now."""
    with _LOCK:
        return _kept_bytes() / 1e6


__all__ = ["ALIGN_TOL_PX", "MAX_MB", "MapKey", "Reused", "find", "forget", "kept_mb",
           "map_key", "remember"]
