"""A window: a rectangle of pixels of a grid, and the windows of a pixel upload.

:class:`Window` is a value (frozen, hashable) in the pixels of a grid the caller names:
an upload's image, the render grid of an extent, a raster's pixel grid. Row 0 is the
grid's top row and column 0 its left column; a window covers rows ``row`` to
``row_stop - 1`` and columns ``col`` to ``col_stop - 1`` (half-open, like Python
slices and ``rasterio.windows.Window``, whose argument order is ``col, row, width,
height`` where this one's is ``row, col, height, width``).

:func:`upload_windows` cuts an upload's image into the windows it travels in;
:func:`upload_window_at` finds the one a ``window`` request names.

Needs only the standard library.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import ProtocolError

_FIELDS = ("row", "col", "height", "width")


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels of a grid.

    Attributes:
        row, col: its top-left pixel, pixels of the grid (may be negative, or beyond
            the grid, for a window that overhangs it).
        height, width: its size, pixels, at least 1 each.

    Raises:
        TypeError: a value that is not an integer (``bool`` and ``float`` included).
        ValueError: ``height`` or ``width`` below 1.
    """

    row: int
    col: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in _FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool):
                raise TypeError(f"window {name} must be an integer, got {v!r}")
            object.__setattr__(self, name, operator.index(v))
        if self.height < 1 or self.width < 1:
            raise ValueError(f"a window is at least 1 x 1 pixels, got {self.height} x "
                             f"{self.width}")

    @classmethod
    def from_stops(cls, row: int, col: int, row_stop: int, col_stop: int) -> "Window":
        """The window of rows ``row`` to ``row_stop - 1`` and columns ``col`` to
        ``col_stop - 1``, pixels.

        Raises:
            ValueError: ``row_stop <= row`` or ``col_stop <= col`` (an empty window).
        """
        return cls(row, col, row_stop - row, col_stop - col)

    @property
    def row_stop(self) -> int:
        """The row below its last one, pixels (``row + height``)."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """The column right of its last one, pixels (``col + width``)."""
        return self.col + self.width

    @property
    def shape(self) -> Tuple[int, int]:
        """``(height, width)``, pixels: the last two dimensions of its array."""
        return self.height, self.width

    def slices(self, origin: Optional["Window"] = None) -> Tuple[slice, slice]:
        """``(rows, cols)`` slices that cut it out of an array of the grid: a ``(H, W)``
        array as ``a[w.slices()]``, a ``(bands, H, W)`` one as ``a[(slice(None),) +
        w.slices()]``; with ``origin``, out of an array that covers that window of the
        grid (an array of a tile or a region). The window must lie inside the array (a
        negative start would count from the array's end)."""
        r0, c0 = (origin.row, origin.col) if origin is not None else (0, 0)
        return (slice(self.row - r0, self.row_stop - r0),
                slice(self.col - c0, self.col_stop - c0))

    def intersection(self, other: "Window") -> Optional["Window"]:
        """The pixels both windows cover (of the same grid), or None when they share
        none (windows that only touch share none)."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window.from_stops(r0, c0, r1, c1)

    def grow(self, pixels: int, height: int, width: int) -> "Window":
        """This window grown by ``pixels`` on each side, clipped to a grid of
        ``height`` x ``width`` pixels (rows 0 to ``height - 1``, columns 0 to
        ``width - 1``). A negative ``pixels`` shrinks it.

        Raises:
            ValueError: nothing of it is left inside the grid.
        """
        return Window.from_stops(max(0, self.row - pixels), max(0, self.col - pixels),
                                 min(height, self.row_stop + pixels),
                                 min(width, self.col_stop + pixels))

    def to_wire(self) -> Dict[str, int]:
        """``{"row", "col", "height", "width"}``, for JSON."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "Window":
        """A window from its :meth:`to_wire` form.

        Raises:
            ProtocolError: ``bad_request`` for anything else (missing or extra keys,
                values that are not integers, a size below 1).
        """
        if not isinstance(d, Mapping) or set(d) != set(_FIELDS):
            raise ProtocolError(f"a window must be an object of {list(_FIELDS)}")
        try:
            return cls(*(d[name] for name in _FIELDS))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(str(exc)) from None


def upload_windows(width: int, height: int, window_px: int) -> List[Window]:
    """The windows a ``width`` x ``height`` pixel upload travels in, row by row: the
    top-left corner on multiples of ``window_px``, clipped at the image's right and
    bottom edges; together they cover the image once.

    Raises:
        ValueError: a size or ``window_px`` below 1.
    """
    if width < 1 or height < 1 or window_px < 1:
        raise ValueError(f"bad upload grid {width} x {height} / {window_px}")
    image = Window(0, 0, height, width)
    return [_clipped(r, c, window_px, image)
            for r in range(0, height, window_px) for c in range(0, width, window_px)]


def upload_window_at(width: int, height: int, window_px: int, row: int, col: int
                     ) -> Optional[Window]:
    """The window of :func:`upload_windows` whose top-left pixel is ``(row, col)``, or
    None when none starts there."""
    if (row < 0 or col < 0 or row >= height or col >= width or row % window_px
            or col % window_px):
        return None
    return _clipped(row, col, window_px, Window(0, 0, height, width))


def _clipped(row: int, col: int, window_px: int, image: Window) -> Window:
    """The ``window_px`` square at ``(row, col)`` (inside ``image``) clipped to it."""
    return Window(row, col, window_px, window_px).intersection(image)  # type: ignore[return-value]


__all__ = ["Window", "upload_windows", "upload_window_at"]
