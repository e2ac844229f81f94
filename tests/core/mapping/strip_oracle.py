"""The reference blender of the mapping tests: the first streaming accumulator of the engine,
which blends tiles given in row-major order into full-width row strips (one tile row of weighted
sums in memory). :class:`lovecs_core.mapping.blend.BandAccumulator` replaced it in the engine;
the tests check that both blend alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lovecs_core.mapping.tiling import Tile, TileGrid, WeightCache


def _row_end(grid: TileGrid, iy: int) -> int:
    """First raster row that tile rows after ``iy`` may still touch (rows above are final)."""
    return grid.ys[iy + 1] if iy + 1 < len(grid.ys) else grid.height


@dataclass
class Strip:
    """Finished rows ``[row_off, row_off + rows)`` of the blended result.

    ``probs[C, rows, width]`` are the weighted mean class probabilities (0 where nothing was
    predicted), ``covered`` marks pixels that got positive weight, ``valid`` the input mask.
    The arrays are views into the accumulator: use them before the next ``add``.
    """

    row_off: int
    probs: np.ndarray
    covered: np.ndarray
    valid: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.valid.shape[0])


class StripAccumulator:
    """Blend tiles (given in row-major order) into full-width row strips, streaming.

    Holds one tile row of weighted sums: ``(C + 1) x tile_h x width`` floats.
    """

    def __init__(self, grid: TileGrid, num_classes: int) -> None:
        self.grid = grid
        self.num_classes = num_classes
        h, w = grid.tile_h, grid.width
        self._acc = np.zeros((num_classes, h, w), dtype=np.float32)
        self._wsum = np.zeros((h, w), dtype=np.float32)
        self._valid = np.zeros((h, w), dtype=bool)
        self._top = 0  # raster row held in buffer row 0
        self._expect = 0  # running index of the next tile in row-major order
        self._weights = WeightCache(self.grid)
        self._pending: Optional[tuple[int, int]] = None

    def add(
        self, tile: Tile, probs: Optional[np.ndarray], valid: Optional[np.ndarray]
    ) -> list[Strip]:
        """Add one tile's probabilities ``[C, h, w]`` (None: skipped, nothing predicted) and its
        validity mask (None: no valid pixel); returns the strips that became final (maybe none)."""
        nx = len(self.grid.xs)
        index = tile.iy * nx + tile.ix
        if index != self._expect:
            raise ValueError(
                f"tiles must arrive in row-major order: expected #{self._expect}, got #{index}"
            )
        self._shift()
        self._expect += 1
        win = tile.window
        r0 = win.yoff - self._top
        rows = slice(r0, r0 + win.ysize)
        cols = slice(win.xoff, win.xoff + win.xsize)
        if valid is not None:
            self._valid[rows, cols] |= valid
        if probs is not None:
            w = self._weights(tile.ix, tile.iy)
            self._acc[:, rows, cols] += probs * w
            self._wsum[rows, cols] += w
        if tile.ix == nx - 1:
            return [self._finish_rows(_row_end(self.grid, tile.iy))]
        return []

    def _finish_rows(self, end: int) -> Strip:
        n = end - self._top
        acc, wsum = self._acc[:, :n], self._wsum[:n]
        covered = wsum > 0
        np.divide(acc, wsum, out=acc, where=covered)  # in place: no strip-sized copies
        strip = Strip(self._top, acc, covered, self._valid[:n])
        self._pending = (n, end)
        return strip

    def _shift(self) -> None:
        """Drop the rows handed out last and move the still open rows to the top."""
        if self._pending is None:
            return
        n, end = self._pending
        keep = self._acc.shape[1] - n
        for buf in (self._acc, self._wsum[None], self._valid[None]):
            buf[:, :keep] = buf[:, n : n + keep]
            buf[:, keep:] = 0
        self._top = end
        self._pending = None
