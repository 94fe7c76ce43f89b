"""Overlapping tiles over a pixel grid and seamless stitching of their probabilities.

Tiles of ``tile`` x ``tile`` pixels are laid with stride ``tile - overlap``; the last
row/column is shifted back to end at the grid edge, so every tile lies inside the grid
unless the grid is smaller than a tile (then one padded tile covers it).

Stitching is a weighted average: each tile's probabilities are multiplied by a
separable ramp window that falls linearly towards the tile edges over ``overlap / 2``
pixels (edges that lie on the grid border keep full weight), accumulated, and divided
by the accumulated weight. The result is continuous across tile borders (no seams),
and pixels near a tile edge, where a CNN sees the least context, count least (the
approach of overlap-tile inference, Ronneberger et al. 2015, with smooth blending).

:func:`plan_tiling` decides tile side, overlap and whether a second, half-tile shifted
tiling is added; :class:`Stitcher` blends them over the whole grid or over one window
of it (a region of a batch job) with the same weights, so a run in regions equals one
over the whole grid bit for bit (``backend.inference.pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np

from protocol.window import Window

#: Tile sides are multiples of this (the encoders downsample by 32).
TILE_MULTIPLE = 32


def round32(n: int) -> int:
    """``n`` rounded up to a multiple of 32 pixels, at least 32."""
    return max(TILE_MULTIPLE, -(-int(n) // TILE_MULTIPLE) * TILE_MULTIPLE)


@dataclass(frozen=True)
class TilePlan:
    """How a grid is tiled.

    Attributes:
        height, width: tile size, pixels (multiples of :data:`TILE_MULTIPLE`).
        overlap: overlap of neighbouring tiles, pixels (0 when one tile covers the grid).
        shifted: a second tiling offset by half a tile on both axes is added, so that
            its tile borders fall on the first tiling's tile centres.
    """

    height: int
    width: int
    overlap: int
    shifted: bool

    @property
    def shape(self) -> Tuple[int, int]:
        """``(height, width)`` of a tile, pixels."""
        return self.height, self.width

    @property
    def shift(self) -> Tuple[int, int]:
        """``(rows, cols)`` offset of the shifted tiling, pixels ((0, 0) without one)."""
        return (self.height // 2, self.width // 2) if self.shifted else (0, 0)

    def axes(self, height: int, width: int) -> List[Tuple[List[int], List[int]]]:
        """``[(row starts, col starts)]`` of the plain tiling, then of the shifted one
        when there is one (its starts are negative where it begins outside the grid)."""
        out = [(positions(height, self.height, self.overlap),
                positions(width, self.width, self.overlap))]
        if self.shifted:
            sr, sc = self.shift
            out.append(([r - sr for r in positions(height + sr, self.height, self.overlap)],
                        [c - sc for c in positions(width + sc, self.width, self.overlap)]))
        return out

    def offsets(self, height: int, width: int) -> List[Tuple[int, int]]:
        """``(row, col)`` of every tile over an ``height`` x ``width`` grid, in the order
        they are run and stitched: the plain tiling row-major, then the shifted one."""
        return [(r, c) for rows, cols in self.axes(height, width) for r in rows for c in cols]

    def intersecting(self, window: Window, height: int, width: int) -> List[Tuple[int, int]]:
        """``(row, col)`` of the tiles of an ``height`` x ``width`` grid that meet
        ``window``, in the order of :meth:`offsets` (the whole grid's run order)."""
        out: List[Tuple[int, int]] = []
        for rows, cols in self.axes(height, width):
            rr = [r for r in rows if r < window.row_stop and r + self.height > window.row]
            cc = [c for c in cols if c < window.col_stop and c + self.width > window.col]
            out.extend((r, c) for r in rr for c in cc)
        return out

    def window(self, row: int, col: int) -> Window:
        """The tile at ``(row, col)`` as a window of the grid."""
        return Window(row, col, self.height, self.width)


def balanced_side(length: int, max_side: int, overlap: int) -> int:
    """The tile side along an axis of ``length`` pixels: as many tiles as sides of
    ``max_side`` overlapping by ``overlap`` need, each as short as they can be to cover
    the axis (rounded up to :data:`TILE_MULTIPLE`), so the model runs on the fewest
    pixels beyond the grid's (1920 px at 1024 / 64: two tiles of 992, not three of 1024).

    Args:
        length: grid length, pixels (> 0).
        max_side: the card's tile side, pixels (a multiple of 32).
        overlap: pixels, 0 <= overlap < max_side.
    """
    if length <= max_side:  # one tile, still longer than the overlap the plan keeps
        return min(max_side, max(round32(length), round32(overlap + 1)))
    n = -(-(length - overlap) // (max_side - overlap))
    return min(max_side, round32(-(-(length + (n - 1) * overlap) // n)))


def plan_tiling(card, height: int, width: int, tile_size: Optional[int] = None,
                overlap: Optional[int] = None) -> TilePlan:
    """The tiling of an ``height`` x ``width`` pixel grid.

    Args:
        card: anything with ``tile_size``, ``overlap`` (pixels) and ``shifts`` (bool)
            attributes, normally a ``backend.models.catalog.ModelCard``.
        height, width: grid size, pixels (> 0).
        tile_size, overlap: override the card's values (None: the card's).

    Returns:
        A :class:`TilePlan` whose tiles are at most ``tile_size`` on a side and as short
        as covering each axis allows (:func:`balanced_side`). A grid inside one tile
        runs as one tile of its size rounded up to multiples of 32, without overlap and
        without the shifted tiling (there are no tile borders to hide, and shifted
        tiles would be half reflection padding).
    """
    tile_size = int(tile_size or card.tile_size)
    overlap = int(card.overlap if overlap is None else overlap)
    if height <= tile_size and width <= tile_size:
        return TilePlan(round32(height), round32(width), 0, False)
    return TilePlan(balanced_side(height, tile_size, overlap),
                    balanced_side(width, tile_size, overlap), overlap, bool(card.shifts))


def positions(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets (pixels) of tiles along one axis.

    Args:
        length: grid length in pixels (> 0).
        tile: tile length in pixels (> 0).
        overlap: overlap in pixels, 0 <= overlap < tile.

    Returns:
        Sorted starts; the first is 0 and the last is ``max(0, length - tile)``.

    Raises:
        ValueError: on invalid sizes.
    """
    if length <= 0 or tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"invalid tiling: length={length} tile={tile} overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp(tile: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights (float32, length ``tile``) for one tile axis.

    Weights rise linearly from ~0 to 1 over ``overlap // 2`` pixels at each side that
    is *not* on the grid border (``at_start``/``at_end`` True keep weight 1 there).
    """
    w = np.ones(tile, np.float32)
    n = overlap // 2
    if n > 0:
        r = (np.arange(n, dtype=np.float32) + 0.5) / n
        if not at_start:
            w[:n] = r
        if not at_end:
            w[-n:] = r[::-1]
    return w


class Stitcher:
    """Accumulates weighted tile probabilities over a window of a grid.

    The weights of a tile depend on where it lies in the *whole* grid (a tile edge on
    the grid border keeps full weight, :func:`ramp`), never on the window, so stitching
    the same tiles in the same order gives bit for bit the same probabilities on a
    window as on the whole grid: one detection and the regions of a batch job agree.

    Memory: ``(C + 1) x h x w`` float32 and ``h x w`` bool for a window of ``h x w``.

    Args:
        channels: C, number of probability channels.
        height, width: the whole grid's size, pixels.
        tile: tile side, or ``(height, width)``, pixels (:class:`TilePlan`).
        overlap: overlap of neighbouring tiles, pixels.
        window: the part of the grid to stitch (default: the whole grid).
    """

    def __init__(self, channels: int, height: int, width: int, tile, overlap: int,
                 window: Optional[Window] = None):
        self.height, self.width, self.overlap = height, width, overlap
        self.tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
        self.window = window or Window(0, 0, height, width)
        shape = self.window.shape
        self.acc = np.zeros((channels,) + shape, np.float32)
        self.wsum = np.zeros(shape, np.float32)
        #: bool (h, w): pixels some added tile marked valid
        self.valid = np.zeros(shape, bool)
        self._done = False

    def add(self, row: int, col: int, probs: np.ndarray,
            valid: Optional[np.ndarray] = None) -> None:
        """Blend one tile's probabilities, float32 (C, th, tw), at whole-grid pixel
        offset (row, col), and its valid-data mask, bool (th, tw), when given.

        Offsets may be negative; the parts of a tile outside the window are ignored.

        Raises:
            RuntimeError: a tile that meets the window, after :meth:`result`.
        """
        th, tw = self.tile
        tile = Window(row, col, th, tw)
        part = tile.intersection(self.window)
        part = part and part.intersection(Window(0, 0, self.height, self.width))
        if part is None:
            return
        if self._done:
            raise RuntimeError("the stitcher's result was taken; add no more tiles")
        wy = ramp(th, self.overlap, row <= 0, row + th >= self.height)
        wx = ramp(tw, self.overlap, col <= 0, col + tw >= self.width)
        src = part.slices(tile)
        dst = part.slices(self.window)
        weight = wy[src[0], None] * wx[None, src[1]]
        self.acc[(slice(None),) + dst] += probs[(slice(None),) + src] * weight
        self.wsum[dst] += weight
        if valid is not None:
            self.valid[dst] |= valid[src]

    def result(self) -> np.ndarray:
        """Stitched probabilities, float32 (C, h, w); pixels never covered are 0.

        The weighted sums are divided in place (no second grid-sized array; on a 25 Mpx
        grid that halves the time): the same array is returned on every call."""
        if not self._done:
            np.maximum(self.wsum, 1e-12, out=self.wsum)
            np.divide(self.acc, self.wsum, out=self.acc)
            self._done = True
        return self.acc

    def masked_result(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(probs, valid)``: :meth:`result` with every pixel no tile marked valid set
        to background (probability 1 on channel 0, 0 elsewhere), and the valid mask."""
        probs = self.result()
        probs[:, ~self.valid] = 0.0
        probs[0, ~self.valid] = 1.0
        return probs, self.valid


def batches(items: List, size: int) -> Iterator[List]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
