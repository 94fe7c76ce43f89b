"""Where a raster holds data, known without reading and warping its pixels.

A batch job over a sparse mosaic (a VRT of scattered tiles) spends most of its regions
on gaps: GDAL gives a VRT without masks no nodata there, so the gaps read as valid
black pixels, and every tile of such a region used to be read, warped and run through
the predictor (3.7 s a region of 2048 px on a 2-core CPU). :class:`SourceCoverage`
answers "can this window of the grid hold any data?" at the cost of its mask:

* a VRT file: the destination rectangles of its sources (``<DstRect>`` of every
  ``*Source`` element, GDAL's own notion of a VRT's data coverage): a window that meets
  none of them holds no data, and nothing is read;
* a raster with nodata, an alpha band or a mask: its mask over the window, read at full
  resolution in strips until the first valid pixel;
* anything else (every pixel valid): never empty, nothing read.

A window is compared in the raster's own pixels: the grid window's bounds, brought
into the raster's CRS when the grid is a reprojected view, grown by
:data:`MARGIN_PX` source pixels for the bilinear resampling's reach.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

import numpy as np

from backend.inference.grid import Grid
from protocol.window import Window

#: Source pixels added around a window: bilinear resampling reads one pixel beyond
#: the footprint, and one more absorbs rounding.
MARGIN_PX = 2
#: Rows of the mask read at once while looking for a valid pixel.
STRIP_ROWS = 512

Rect = Tuple[float, float, float, float]  # col0, row0, col1, row1 in source pixels


def vrt_source_rects(path: str) -> Optional[List[Rect]]:
    """The destination rectangles of a VRT file's sources, in its pixels.

    Args:
        path: a ``.vrt`` file (XML).

    Returns:
        ``[(col0, row0, col1, row1), ...]`` (floats, as the VRT writes them), or None
        when the file is no readable VRT XML or a source has no ``DstRect`` (it then
        covers the whole raster).
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    if root.tag != "VRTDataset":
        return None
    rects: List[Rect] = []
    for band in root.iter("VRTRasterBand"):
        for src in band:
            if not src.tag.endswith("Source"):
                continue
            dst = src.find("DstRect")
            if dst is None:
                return None
            try:
                x, y = float(dst.get("xOff", 0)), float(dst.get("yOff", 0))
                w, h = float(dst.get("xSize")), float(dst.get("ySize"))
            except (TypeError, ValueError):
                return None
            rects.append((x, y, x + w, y + h))
    return rects


class SourceCoverage:
    """Tells windows of a grid that cannot hold data (see the module docstring).

    Args:
        ds: the open rasterio dataset the grid reads.
        grid: the grid (``backend.inference.grid.Grid``).

    Attributes:
        kind: ``"vrt"`` (source rectangles), ``"mask"`` (the raster's mask is read) or
            ``"none"`` (every pixel valid: never empty).
    """

    def __init__(self, ds, grid: Grid):
        self.ds, self.grid = ds, grid
        path = str(getattr(ds, "name", "") or "")
        self.rects: Optional[List[Rect]] = None
        if getattr(ds, "driver", "") == "VRT" and os.path.isfile(path):
            self.rects = vrt_source_rects(path)
        flags = [set(f) for f in getattr(ds, "mask_flag_enums", [])]
        all_valid = all(len(f) == 1 and next(iter(f)).name == "all_valid" for f in flags)
        self.kind = "vrt" if self.rects is not None else ("none" if all_valid else "mask")

    def source_window(self, window: Window) -> Optional[Tuple[int, int, int, int]]:
        """``(row0, col0, row1, col1)`` of the raster's pixels a grid ``window`` reads
        (grown by :data:`MARGIN_PX`, clipped to the raster), or None when it misses the
        raster."""
        from rasterio.warp import transform_bounds

        t, g = self.grid.transform, self.grid
        x0, y0 = t @ (window.col, window.row_stop)
        x1, y1 = t @ (window.col_stop, window.row)
        bounds = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if g.source_crs_wkt:
            bounds = transform_bounds(g.crs_wkt, g.source_crs_wkt, *bounds, densify_pts=21)
        inv = ~self.ds.transform
        corners = [inv @ (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        c0 = max(0, math.floor(min(cols)) - MARGIN_PX)
        r0 = max(0, math.floor(min(rows)) - MARGIN_PX)
        c1 = min(self.ds.width, math.ceil(max(cols)) + MARGIN_PX)
        r1 = min(self.ds.height, math.ceil(max(rows)) + MARGIN_PX)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, c0, r1, c1

    def empty(self, window: Window) -> bool:
        """True when no pixel of the raster that ``window`` (pixels of the grid) reads
        holds data: the window meets no VRT source, or the raster's mask is 0 all over
        it. False whenever that is not certain."""
        if self.kind == "none":
            return False
        src = self.source_window(window)
        if src is None:
            return True
        r0, c0, r1, c1 = src
        if self.kind == "vrt":
            return not any(a < c1 and b < r1 and c > c0 and d > r0
                           for a, b, c, d in self.rects)
        return not self._mask_has_data(r0, c0, r1, c1)

    def _mask_has_data(self, r0: int, c0: int, r1: int, c1: int) -> bool:
        """Whether the dataset mask has a valid pixel in ``[r0, r1) x [c0, c1)``, read in
        strips of :data:`STRIP_ROWS` rows until the first one."""
        from rasterio.windows import Window as RioWindow

        for r in range(r0, r1, STRIP_ROWS):
            h = min(STRIP_ROWS, r1 - r)
            mask = self.ds.dataset_mask(window=RioWindow(c0, r, c1 - c0, h))
            if np.any(mask):
                return True
        return False


__all__ = ["MARGIN_PX", "STRIP_ROWS", "vrt_source_rects", "SourceCoverage"]
