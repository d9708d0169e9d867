"""Where the tiles of a raster go and how much each pixel of a tile counts (no QGIS, no rasterio).

A :class:`TilePlan` cuts a ``height x width`` raster into square tiles of ``tile`` pixels that
overlap by at least ``overlap`` pixels; the last row/column of tiles is moved back inside the
raster (a raster smaller than a tile is one tile, padded by :func:`pad_to`). It lists the batches
in the order the engine runs them (row by row, ``batch_size`` tiles at a time), says which batch
ends a tile row and how many rows are final then, and gives each tile its blending weight: it ramps
up from a tile edge that lies inside the raster, is 1 in the middle and on the raster's own border,
and is > 0 everywhere, so overlapping tiles blend without seams.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` overlapping by at
    least ``overlap``; the last start is clamped so the tile ends at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def edge_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weight: (i+0.5)/overlap near a ramped edge, 1 elsewhere; always > 0."""
    w = np.ones(n, dtype=np.float64)
    if overlap > 0:
        ramp = (np.arange(min(overlap, n)) + 0.5) / overlap
        if ramp_start:
            w[: ramp.size] = np.minimum(w[: ramp.size], ramp)
        if ramp_end:
            w[n - ramp.size:] = np.minimum(w[n - ramp.size:], ramp[::-1])
    return w


def pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad (C, h0, w0) to (C, h, w) at the bottom/right, by reflection where possible."""
    ph, pw = h - x.shape[1], w - x.shape[2]
    if ph == 0 and pw == 0:
        return x
    pad = ((0, 0), (0, ph), (0, pw))
    if x.shape[1] > 1 and x.shape[2] > 1:
        return np.pad(x, pad, mode="reflect")
    return np.pad(x, pad, mode="edge")        # reflection needs two rows and two columns


class Batch(NamedTuple):
    """Tiles the network gets at once: all in tile row ``row`` (top ``y0``), columns ``x0s``, the
    first being column number ``first`` of the plan."""

    row: int
    y0: int
    first: int
    x0s: List[int]


@dataclass
class TilePlan:
    height: int
    width: int
    tile: int
    overlap: int
    batch_size: int
    ys: List[int] = field(init=False)
    xs: List[int] = field(init=False)
    batches: List[Batch] = field(init=False)
    _wx: List[np.ndarray] = field(init=False, repr=False)
    _wy: Dict[int, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ys = tile_starts(self.height, self.tile, self.overlap)
        self.xs = tile_starts(self.width, self.tile, self.overlap)
        self.batches = [Batch(row, y0, first, self.xs[first:first + self.batch_size])
                        for row, y0 in enumerate(self.ys) for first in range(0, len(self.xs), self.batch_size)]
        self._wx = [edge_ramp(self.tile_width, self.overlap, x0 > 0, x0 + self.tile_width < self.width)
                    .astype(np.float32) for x0 in self.xs]
        self._wy = {}

    # ------------------------------------------------------------------ sizes
    @property
    def tile_height(self) -> int:
        """Rows of a tile that lie in the raster (smaller rasters: all of it; the rest is padding)."""
        return min(self.tile, self.height)

    @property
    def tile_width(self) -> int:
        return min(self.tile, self.width)

    @property
    def n_tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    def describe(self) -> str:
        return (f"{self.width} x {self.height} pixels, {self.n_tiles} tile(s) of {self.tile} px with "
                f"{self.overlap} px overlap, batch {self.batch_size}")

    # ------------------------------------------------------------------ order
    def ends_row(self, index: int) -> bool:
        """Whether batch ``index`` is the last of its tile row (the row's final rows can then be written)."""
        return index + 1 == len(self.batches) or self.batches[index + 1].row != self.batches[index].row

    def final_rows(self, row: int) -> int:
        """How many rows, from the top of tile row ``row``, no later tile touches: up to the next tile
        row's top, or to the raster's bottom after the last tile row."""
        end = self.ys[row + 1] if row + 1 < len(self.ys) else self.height
        return end - self.ys[row]

    # ------------------------------------------------------------------ weights
    def weight(self, row: int, column: int) -> np.ndarray:
        """(tile_height, tile_width) float32 blending weight of the tile at (tile row, tile column)."""
        wy = self._wy.get(row)
        if wy is None:
            y0, th = self.ys[row], self.tile_height
            self._wy = {row: edge_ramp(th, self.overlap, y0 > 0, y0 + th < self.height).astype(np.float32)}
            wy = self._wy[row]
        return wy[:, None] * self._wx[column][None, :]
