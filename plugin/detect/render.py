"""Rendering a :class:`~.plan.RenderPlan` to 8-bit RGB pixels for the daemon (any
thread: only the plan's cloned data provider is read).

:func:`render_grid` fixes the pixel grid of the extent at the model's GSD;
:func:`render_window` renders one window of it, so that a large extent is streamed to
the daemon window by window (:func:`upload_spec`, ``OrtholensClient.upload``) and never
held whole; :func:`render_pixels` renders the whole grid at once (one message).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsRasterBlockFeedback,
    QgsRasterProjector,
    QgsRectangle,
)

from protocol.params import PixelSource, PixelUpload
from protocol.window import Window

from .plan import RenderPlan

#: Largest rendered image side, pixels: 8000 x 8000 = 64 Mpx, the most one in-extent
#: detection of the daemon takes (3 x 8000 x 8000 uint8 = 183 MiB, under the protocol's
#: frame limit). Larger extents are rendered coarser, and the user is told.
MAX_RENDER_SIDE = 8000


@dataclass(frozen=True)
class RenderGrid:
    """The pixel grid an extent is rendered on (north-up, in the plan's ``crs``).

    Attributes:
        width, height: pixels.
        pixel_size: ground size of a pixel, metres (the plan's CRS units).
        x0, y1: left and top edges of the grid, CRS units.
        capped: True when the extent was too large for the largest side at the model's
            GSD and the pixel was enlarged.
    """

    width: int
    height: int
    pixel_size: float
    x0: float
    y1: float
    capped: bool

    @property
    def transform(self) -> List[float]:
        """``[a, b, c, d, e, f]``: x = a*col + b*row + c, y = d*col + e*row + f."""
        return [self.pixel_size, 0.0, self.x0, 0.0, -self.pixel_size, self.y1]

    def window_extent(self, window: Window) -> QgsRectangle:
        """The extent of a window of this grid (pixels of the grid), CRS units."""
        px = self.pixel_size
        return QgsRectangle(self.x0 + window.col * px, self.y1 - window.row_stop * px,
                            self.x0 + window.col_stop * px, self.y1 - window.row * px)


@dataclass
class RenderedPixels:
    """An RGB image of a :class:`~.plan.RenderPlan`.

    Attributes:
        array: uint8 ``(3, H, W)``, C-contiguous.
        transform: ``[a, b, c, d, e, f]``: x = a*col + b*row + c, y = d*col + e*row + f
            (``c`` = left edge, ``a`` = pixel width, ``f`` = top edge, ``e`` = -pixel
            height, in the plan's ``crs``, metres).
        gsd_m: the ground size of a pixel actually used, metres (> the model's when
            capped).
        capped: True when the extent was too large for :data:`MAX_RENDER_SIDE` at the
            model's GSD and was rendered coarser.
    """

    array: np.ndarray
    transform: List[float]
    gsd_m: float
    capped: bool

    @property
    def height(self) -> int:
        """Rows, pixels."""
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        """Columns, pixels."""
        return int(self.array.shape[2])


def render_size(plan: RenderPlan, gsd_m: float, max_side: int = MAX_RENDER_SIDE) -> tuple:
    """``(width, height, pixel_size, gsd_used_m, capped)`` for rendering ``plan``.

    ``pixel_size`` is in the plan's CRS units (metres, = ``gsd_used_m``). The image covers
    ``plan.extent`` from its top-left corner and may overhang its right/bottom edge by
    less than one pixel. When a side would exceed ``max_side``, the pixel is enlarged
    so that it does not (``capped`` True).

    Raises:
        ValueError: ``gsd_m`` is not positive.
    """
    if not gsd_m > 0:
        raise ValueError(f"gsd_m must be > 0, got {gsd_m}")
    px = gsd_m
    w = max(1, math.ceil(plan.extent.width() / px - 1e-6))
    h = max(1, math.ceil(plan.extent.height() / px - 1e-6))
    capped = False
    if max(w, h) > max_side:
        px = gsd_m * max(w, h) / max_side
        capped = True
        w = min(max_side, max(1, math.ceil(plan.extent.width() / px - 1e-6)))
        h = min(max_side, max(1, math.ceil(plan.extent.height() / px - 1e-6)))
    return w, h, px, px, capped


def render_grid(plan: RenderPlan, gsd_m: float, max_side: int = MAX_RENDER_SIDE
                ) -> RenderGrid:
    """The grid :func:`render_pixels` and :func:`render_window` render ``plan`` on
    (see :func:`render_size`).

    Raises:
        ValueError: ``gsd_m`` is not positive.
    """
    w, h, px, _, capped = render_size(plan, gsd_m, max_side)
    return RenderGrid(w, h, px, plan.extent.xMinimum(), plan.extent.yMaximum(), capped)


def argb_to_rgb(raw: bytes, width: int, height: int) -> np.ndarray:
    """Native-endian 32-bit ``0xAARRGGBB`` pixels (a QGIS ARGB32 block, or a
    ``QImage.Format_ARGB32`` buffer) to uint8 ``(3, height, width)`` RGB."""
    px = np.frombuffer(raw, dtype=np.uint32, count=width * height).reshape(height, width)
    return np.stack([((px >> s) & 0xFF).astype(np.uint8) for s in (16, 8, 0)])


def render_pixels(plan: RenderPlan, gsd_m: float, max_side: int = MAX_RENDER_SIDE,
                  is_cancelled: Optional[Callable[[], bool]] = None) -> RenderedPixels:
    """Read ``plan``'s extent from its provider as an 8-bit RGB image (any thread).

    Args:
        plan: from :func:`~.plan.prepare_detect`.
        gsd_m: wanted ground size of a pixel, metres (the model card's ``gsd_m``).
        max_side: largest width or height; larger images are rendered coarser.
        is_cancelled: polled between bands; a True answer raises ``InterruptedError``.

    Returns:
        :class:`RenderedPixels` in the plan's ``crs``.

    Raises:
        RuntimeError: the provider returned no data (e.g. a web service that failed).
        InterruptedError: cancelled.
    """
    grid = render_grid(plan, gsd_m, max_side)
    arr = render_window(plan, grid, Window(0, 0, grid.height, grid.width), is_cancelled)
    return RenderedPixels(array=arr, transform=grid.transform, gsd_m=grid.pixel_size,
                          capped=grid.capped)


def render_window(plan: RenderPlan, grid: RenderGrid, window: Window,
                  is_cancelled: Optional[Callable[[], bool]] = None) -> np.ndarray:
    """Render one window of ``grid`` (any thread).

    A window holds the pixels of the same grid as a whole render: windows rendered
    side by side make up the image :func:`render_pixels` returns.

    Args:
        plan: from :func:`~.plan.prepare_detect`.
        grid: from :func:`render_grid`.
        window: the window, pixels of ``grid``.
        is_cancelled: polled between bands; a True answer raises ``InterruptedError``.

    Returns:
        uint8 ``(3, window.height, window.width)`` RGB, C-contiguous.

    Raises:
        RuntimeError: the provider returned no data (e.g. a web service that failed).
        InterruptedError: cancelled.
    """
    feedback = QgsRasterBlockFeedback()
    source = plan.provider
    if plan.reproject:
        source = QgsRasterProjector()
        source.setCrs(plan.src_crs, plan.crs, plan.context or QgsCoordinateTransformContext())
        source.setInput(plan.provider)
    extent = grid.window_extent(window)
    rows, cols = window.shape
    channels = []
    for band in plan.bands:
        if is_cancelled and is_cancelled():
            raise InterruptedError("cancelled")
        block = source.block(band, extent, cols, rows, feedback)
        if (block is None or not block.isValid() or block.width() != cols
                or block.height() != rows):
            err = plan.provider.error().summary() if plan.provider.error() else ""
            raise RuntimeError(f"the layer returned no pixels for band {band}"
                               + (f": {err}" if err else ""))
        raw = bytes(block.data())
        if plan.mode == "argb":
            channels = list(argb_to_rgb(raw, cols, rows))
        else:
            channels.append(np.frombuffer(raw, dtype=np.uint8,
                                          count=cols * rows).reshape(rows, cols))
    if plan.mode == "gray":
        channels = channels * 3
    return np.ascontiguousarray(np.stack(channels, axis=0))


def upload_spec(plan: RenderPlan, grid: RenderGrid) -> PixelUpload:
    """The ``upload`` request of ``grid``'s pixels: uint8 RGB, the plan's CRS, the grid's
    transform; the no-data value as in :func:`pixel_source`."""
    nodata = plan.nodata if plan.nodata is not None and 0 <= plan.nodata <= 255 else None
    return PixelUpload(crs=plan.crs_wkt, transform=tuple(grid.transform), width=grid.width,
                       height=grid.height, count=3, dtype="uint8", nodata=nodata)


def pixel_source(plan: RenderPlan, rendered: RenderedPixels) -> PixelSource:
    """The request ``source`` of rendered pixels (sent with ``rendered.array``).

    A no-data value outside 0..255 cannot occur in uint8 pixels and is left out.
    """
    nodata = plan.nodata if plan.nodata is not None and 0 <= plan.nodata <= 255 else None
    return PixelSource(crs=plan.crs_wkt, transform=tuple(float(v) for v in rendered.transform),
                       nodata=nodata)


__all__ = ["MAX_RENDER_SIDE", "RenderGrid", "RenderedPixels", "render_size", "render_grid",
           "argb_to_rgb", "render_pixels", "render_window", "upload_spec", "pixel_source"]
