"""A rectangle of pixels of a grid: the one shape of a pixel window.

Like ``rasterio.windows.Window`` (which the plugin side cannot import), but ordered
rows first as numpy indexes arrays. Used by pixel uploads, raster reading, tiling and
the regions of batch jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Window:
    """Pixels ``[row, row + height) x [col, col + width)`` of a grid.

    Attributes:
        row, col: top-left pixel, pixels of the grid (may be negative for a tile that
            starts outside it).
        height, width: size, pixels (>= 0).
    """

    row: int
    col: int
    height: int
    width: int

    @classmethod
    def from_stops(cls, row: int, col: int, row_stop: int, col_stop: int) -> "Window":
        """The window ``[row, row_stop) x [col, col_stop)`` (an empty one when a stop
        lies before its start)."""
        return cls(int(row), int(col), max(0, int(row_stop) - int(row)),
                   max(0, int(col_stop) - int(col)))

    @property
    def row_stop(self) -> int:
        """First row below the window."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """First column right of the window."""
        return self.col + self.width

    @property
    def shape(self) -> Tuple[int, int]:
        """``(height, width)``, pixels."""
        return self.height, self.width

    @property
    def is_empty(self) -> bool:
        """True when the window holds no pixel."""
        return self.height <= 0 or self.width <= 0

    def slices(self, origin: Optional["Window"] = None) -> Tuple[slice, slice]:
        """``(rows, cols)`` slices that index this window in an array covering
        ``origin`` (default: the whole grid, origin at pixel (0, 0))."""
        r0, c0 = (origin.row, origin.col) if origin is not None else (0, 0)
        return (slice(self.row - r0, self.row_stop - r0),
                slice(self.col - c0, self.col_stop - c0))

    def intersection(self, other: "Window") -> Optional["Window"]:
        """The pixels both windows hold, or None when they do not overlap."""
        w = Window.from_stops(max(self.row, other.row), max(self.col, other.col),
                              min(self.row_stop, other.row_stop),
                              min(self.col_stop, other.col_stop))
        return None if w.is_empty else w

    def grow(self, pixels: int, height: int, width: int) -> "Window":
        """The window grown by ``pixels`` on every side, clipped to an ``height`` x
        ``width`` grid."""
        return Window.from_stops(max(0, self.row - pixels), max(0, self.col - pixels),
                                 min(height, self.row_stop + pixels),
                                 min(width, self.col_stop + pixels))

    def to_wire(self) -> Dict[str, int]:
        """``{"row", "col", "height", "width"}`` for a JSON header."""
        return {"row": self.row, "col": self.col, "height": self.height,
                "width": self.width}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> "Window":
        """Inverse of :meth:`to_wire`."""
        return cls(int(d["row"]), int(d["col"]), int(d["height"]), int(d["width"]))
