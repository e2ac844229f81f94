"""Streaming blend of overlapping tiles into finished pieces, in memory ``O(min(width, height))``.

:class:`BandAccumulator` takes the tiles of a :class:`~.tiling.TileGrid` one tile row after the
other (left to right) and hands back each piece of the output as soon as no later tile can touch
it. It holds one tile's window in full precision (float32 sums and weights) and, for
the overlap below the current tile row, a compact *carry* across the raster: per pixel the
blended probabilities so far as uint16 (``round(p * 65535)``, error <= 7.7e-6), their summed
weight as float32 and the validity mask; 15 bytes per pixel with 5 classes, about 0.94 KB per
raster column for a 64 px overlap (instead of 24 bytes x tile height, 12 KB, for float32 sums of
whole tile rows). The final mix ``(q * w_up + s) / (w_up + w_down)`` keeps the error of ``q``
(pixels under three tile rows pass the carry twice: <= 1.5e-5 there), far below what changes a
class except at exact ties. The carry has as many rows as the largest overlap of two tile rows:
the overlap, or up to a tile's height where the last tile row is shifted inwards (a raster side
that is not ``tile + k x stride``). :func:`tile_order` walks the grid along its longer side
(columns first on a raster wider than tall), so the carry spans the shorter side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from ..rasters.reading import Window
from .tiling import Tile, TileGrid, WeightCache

#: Scale of the uint16 carry of blended probabilities.
Q_SCALE = 65535.0


@dataclass
class Piece:
    """Finished pixels ``[row_off, +h) x [col_off, +w)``: weighted mean class probabilities
    ``probs[C, h, w]`` (0 where nothing was predicted), ``covered`` (positive weight) and the
    input's ``valid`` mask. Arrays may be views: use them before the next ``add``."""

    row_off: int
    col_off: int
    probs: np.ndarray
    covered: np.ndarray
    valid: np.ndarray

    def transposed(self) -> "Piece":
        return Piece(
            self.col_off,
            self.row_off,
            self.probs.transpose(0, 2, 1),
            self.covered.T,
            self.valid.T,
        )


def transpose_grid(grid: TileGrid) -> TileGrid:
    """The same grid with rows and columns swapped."""
    return TileGrid(grid.height, grid.width, grid.tile_h, grid.tile_w, grid.ys, grid.xs)


def columns_first(grid: TileGrid) -> bool:
    """Walk the grid column by column: on a raster wider than tall, so the carry spans the
    (shorter) height."""
    return grid.width > grid.height


def tile_order(grid: TileGrid) -> Iterator[Tile]:
    """The grid's tiles in the order :class:`BandAccumulator` takes them: row-major, or
    column-major when :func:`columns_first`."""
    if not columns_first(grid):
        yield from grid.tiles()
        return
    for ix, x in enumerate(grid.xs):
        for iy, y in enumerate(grid.ys):
            yield Tile(ix, iy, Window(x, y, grid.tile_w, grid.tile_h))


class BandAccumulator:
    """Blend tiles given in :func:`tile_order` into finished :class:`Piece` s (see module)."""

    def __init__(self, grid: TileGrid, num_classes: int) -> None:
        self.flip = columns_first(grid)
        self.grid = g = transpose_grid(grid) if self.flip else grid
        self.num_classes = c = num_classes
        th, tw = g.tile_h, g.tile_w
        span = tw  # the window starts where the current tile starts
        self._sum = np.zeros((c, th, span), np.float32)
        self._w = np.zeros((th, span), np.float32)
        self._valid = np.zeros((th, span), bool)
        self._scratch = np.empty((c, th, tw), np.float32)  # weighted tile, no temporary per tile
        self._x0 = 0  # raster column held in window column 0
        self._right = 0  # raster columns [x0, right) are in the window
        carry = max([y + th - n for y, n in zip(g.ys, g.ys[1:])] + [0])
        self._cq = np.zeros((c, carry, g.width), np.uint16)
        self._cw = np.zeros((carry, g.width), np.float32)
        self._cv = np.zeros((carry, g.width), bool)
        self._carry_rows = 0  # rows of the carry that hold data for the current tile row
        self._expect = 0
        self._weights = WeightCache(self.grid)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's buffers."""
        arrays = (self._sum, self._w, self._valid, self._scratch, self._cq, self._cw, self._cv)
        return sum(a.nbytes for a in arrays) + self._weights.nbytes

    def add(
        self, tile: Tile, probs: Optional[np.ndarray], valid: Optional[np.ndarray]
    ) -> list[Piece]:
        """Add one tile's probabilities ``[C, h, w]`` (None: skipped) and validity mask (None: no
        valid pixel); returns the pieces that became final."""
        if self.flip:
            w = tile.window
            tile = Tile(tile.iy, tile.ix, Window(w.yoff, w.xoff, w.ysize, w.xsize))
            probs = None if probs is None else probs.transpose(0, 2, 1)
            valid = None if valid is None else valid.T
        g = self.grid
        nx = len(g.xs)
        index = tile.iy * nx + tile.ix
        if index != self._expect:
            order = "column-major" if self.flip else "row-major"
            raise ValueError(
                f"tiles must arrive in {order} order: expected #{self._expect}, got #{index}"
            )
        self._expect += 1
        win = tile.window
        if tile.ix == 0:
            self._x0 = self._right = 0
        self._extend(win.xoff + win.xsize)
        cols = slice(win.xoff - self._x0, win.xoff - self._x0 + win.xsize)
        if valid is not None:
            self._valid[:, cols] |= valid
        if probs is not None:
            wt = self._weights(tile.ix, tile.iy)
            weighted = np.multiply(probs, wt, out=self._scratch[:, : win.ysize, : win.xsize])
            self._sum[:, :, cols] += weighted
            self._w[:, cols] += wt
        done = g.xs[tile.ix + 1] if tile.ix + 1 < nx else g.width
        pieces = [self._finish(done, tile.iy)]
        return [p.transposed() for p in pieces] if self.flip else pieces

    def _extend(self, right: int) -> None:
        """Bring raster columns up to ``right`` into the window, seeded from the carry."""
        if right <= self._right:
            return
        a, b = self._right - self._x0, right - self._x0
        new = slice(self._right, right)
        self._sum[:, :, a:b] = 0
        self._w[:, a:b] = 0
        self._valid[:, a:b] = False
        n = self._carry_rows
        if n:
            w = self._cw[:n, new]
            q = self._cq[:, :n, new].astype(np.float32) * np.float32(1.0 / Q_SCALE)
            self._sum[:, :n, a:b] = q * w
            self._w[:n, a:b] = w
            self._valid[:n, a:b] = self._cv[:n, new]
        self._right = right

    def _finish(self, done: int, iy: int) -> Piece:
        """Hand out columns ``[x0, done)`` of the rows this tile row finishes; keep the rows
        below in the carry for the next tile row; drop those columns from the window."""
        g = self.grid
        top = g.ys[iy]
        last_row = iy + 1 >= len(g.ys)
        end = g.height if last_row else g.ys[iy + 1]
        n, k = end - top, done - self._x0
        s, w, v = self._sum[:, :, :k], self._w[:, :k], self._valid[:, :k]
        covered = w[:n] > 0
        probs = np.zeros((self.num_classes, n, k), np.float32)
        np.divide(s[:, :n], w[:n], out=probs, where=covered)
        piece = Piece(top, self._x0, probs, covered, v[:n].copy())
        rows = 0 if last_row else top + g.tile_h - end
        if rows:
            cols = slice(self._x0, done)
            ws = w[n : n + rows]
            q = np.zeros((self.num_classes, rows, k), np.float32)
            np.divide(s[:, n : n + rows], ws, out=q, where=ws > 0)
            self._cq[:, :rows, cols] = np.rint(q * Q_SCALE)
            self._cw[:rows, cols] = ws
            self._cv[:rows, cols] = v[n : n + rows]
        if done >= g.width:
            self._carry_rows = rows
        keep = self._right - done
        if keep:
            for buf in (self._sum, self._w[None], self._valid[None]):
                buf[:, :, :keep] = buf[:, :, k : k + keep]
        self._x0 = done
        return piece
