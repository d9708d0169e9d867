"""Blending tile predictions one tile row at a time (no QGIS, no rasterio).

A :class:`RowBlender` holds the weighted sums of one tile row's height of the output (channels x
tile height x raster width floats, whatever the raster's height). Tiles are added with their
weights (:meth:`RowBlender.add`); when a tile row is complete, :meth:`RowBlender.flush` divides the
rows no later tile can touch by their summed weights and hands them out, then moves the rest (the
overlap with the next tile row) to the top and clears below it: every tile row starts where the last
flush ended, so one tile row's height is always enough. With weights > 0 an identity network gives
back its input exactly, and overlapping tiles blend without seams.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


class RowBlender:
    def __init__(self, channels: int, height: int, width: int) -> None:
        """``height``: rows of one tile (in the raster); ``width``: the raster's width."""
        self.channels, self.height, self.width = channels, height, width
        self.acc = np.zeros((channels, height, width), dtype=np.float32)
        self.wsum = np.zeros((height, width), dtype=np.float32)
        self.valid = np.zeros((height, width), dtype=bool)
        self._scratch = np.empty((channels, 0, 0), dtype=np.float32)   # prediction x weight, reused per tile

    def add_valid(self, x0: int, valid: np.ndarray) -> None:
        """Mark the input pixels under columns [x0, x0 + valid width) that hold data (or-ed: tiles overlap)."""
        self.valid[:, x0:x0 + valid.shape[1]] |= valid

    def add(self, prediction: np.ndarray, x0: int, weight: np.ndarray) -> None:
        """Add one tile's prediction (C, >= h, >= w; the padding beyond the raster is cut off) at column
        ``x0`` with its (h, w) ``weight``."""
        h, w = weight.shape
        if self._scratch.shape[1:] != (h, w):
            self._scratch = np.empty((self.channels, h, w), dtype=np.float32)
        np.multiply(prediction[:, :h, :w], weight, out=self._scratch)
        self.acc[:, :h, x0:x0 + w] += self._scratch
        self.wsum[:h, x0:x0 + w] += weight

    def flush(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """(blended (C, n, width) float32, valid (n, width) bool) of the top ``n`` rows, which are final;
        the rows below them are carried to the top for the next tile row, and the rest cleared."""
        blended = self.acc[:, :n] / np.maximum(self.wsum[:n], 1e-12)
        valid = self.valid[:n].copy()
        carry = self.height - n
        if carry > 0:
            self.acc[:, :carry] = self.acc[:, n:].copy()
            self.wsum[:carry] = self.wsum[n:].copy()
            self.valid[:carry] = self.valid[n:].copy()
        self.acc[:, carry:] = 0
        self.wsum[carry:] = 0
        self.valid[carry:] = False
        return blended, valid
