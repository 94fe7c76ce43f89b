"""Rendering a :class:`~.plan.RenderPlan` to 8-bit RGB pixels for the daemon (any
thread: only the plan's cloned data provider is read)."""

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

from protocol.params import PixelSource

from .plan import RenderPlan

#: Largest rendered image side, pixels (3 x 8192 x 8192 uint8 = 192 MiB, under the
#: protocol's frame limit). Larger extents are rendered coarser, and the user is told.
MAX_RENDER_SIDE = 8192


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
    w, h, px, used, capped = render_size(plan, gsd_m, max_side)
    x0, y1 = plan.extent.xMinimum(), plan.extent.yMaximum()
    render_ext = QgsRectangle(x0, y1 - h * px, x0 + w * px, y1)
    feedback = QgsRasterBlockFeedback()
    source = plan.provider
    if plan.reproject:
        source = QgsRasterProjector()
        source.setCrs(plan.src_crs, plan.crs, plan.context or QgsCoordinateTransformContext())
        source.setInput(plan.provider)
    channels = []
    for band in plan.bands:
        if is_cancelled and is_cancelled():
            raise InterruptedError("cancelled")
        block = source.block(band, render_ext, w, h, feedback)
        if block is None or not block.isValid() or block.width() != w or block.height() != h:
            err = plan.provider.error().summary() if plan.provider.error() else ""
            raise RuntimeError(f"the layer returned no pixels for band {band}"
                               + (f": {err}" if err else ""))
        raw = bytes(block.data())
        if plan.mode == "argb":
            channels = list(argb_to_rgb(raw, w, h))
        else:
            channels.append(np.frombuffer(raw, dtype=np.uint8, count=w * h).reshape(h, w))
    if plan.mode == "gray":
        channels = channels * 3
    arr = np.ascontiguousarray(np.stack(channels, axis=0))
    return RenderedPixels(array=arr, transform=[px, 0.0, x0, 0.0, -px, y1],
                          gsd_m=used, capped=capped)


def pixel_source(plan: RenderPlan, rendered: RenderedPixels) -> PixelSource:
    """The request ``source`` of rendered pixels (sent with ``rendered.array``).

    A no-data value outside 0..255 cannot occur in uint8 pixels and is left out.
    """
    nodata = plan.nodata if plan.nodata is not None and 0 <= plan.nodata <= 255 else None
    return PixelSource(crs=plan.crs_wkt, transform=tuple(float(v) for v in rendered.transform),
                       nodata=nodata)


__all__ = ["MAX_RENDER_SIDE", "RenderedPixels", "render_size", "argb_to_rgb",
           "render_pixels", "pixel_source"]
