"""Mapping one output block by itself, bit for bit as the whole-raster run maps it.

A distributed run (:mod:`.ray_map`) cuts the output into *blocks*: rectangles whose sides are
multiples of the GeoTIFF's internal tiling (:data:`~.geotiff.BLOCK`, 256 px), so each finished
block is a set of whole TIFF blocks. Every block is mapped on the *same global tile grid* as one
process (:func:`~.tiling.make_grid`): a worker runs the model on every tile that touches its block
(the blending overlap: a tile straddling two blocks is computed for both) and blends them with
:class:`BlockBlender`, which repeats :class:`~.blend.BandAccumulator`'s arithmetic for each pixel
of the block: the same float32 products and sums in the same order (tile rows along the
accumulator's walk, tiles within a row in order), the same uint16 carry of the pixels that a later
tile row still covers, the same division. Elementwise float32 operations do not depend on the
array's shape, so the block's probabilities, and hence its classes and confidence, equal the
single-process ones exactly (``tests/core/test_blockmap.py`` checks every pixel).
"""

from __future__ import annotations

import bisect
import math
from typing import Iterator, Optional

import numpy as np
import torch

from .blend import Q_SCALE, Piece, columns_first, transpose_grid
from .geotiff import BLOCK
from .pipeline import TileEngine
from .raster import RasterReader, Window
from .tiling import Tile, TileGrid, WeightCache

#: Largest block side by default: a worker holds about ``4.5 x classes x side^2`` float32 bytes
#: (sums, carry, probabilities): 94 MB for 5 classes at 2048 px.
MAX_BLOCK_SIDE = 2048
#: Blocks per worker aimed at by :func:`block_side`: enough to balance the load and to lose
#: little when a worker dies, few enough that tiles computed twice stay rare.
BLOCKS_PER_WORKER = 4


def block_side(width: int, height: int, workers: int, tile: int) -> int:
    """A block side (a multiple of :data:`BLOCK`) giving about :data:`BLOCKS_PER_WORKER` blocks
    per worker, between one tile (rounded up to whole TIFF blocks) and :data:`MAX_BLOCK_SIDE`."""
    target = math.sqrt(width * height / max(1, BLOCKS_PER_WORKER * workers))
    side = int(target // BLOCK) * BLOCK
    low = max(BLOCK, math.ceil(tile / BLOCK) * BLOCK)
    return max(low, min(side, max(low, MAX_BLOCK_SIDE)))


def block_windows(width: int, height: int, side: int) -> list[Window]:
    """The raster cut into ``side x side`` windows (smaller at the right and bottom), row-major.
    ``side`` must be a multiple of :data:`BLOCK` so blocks hold whole TIFF blocks."""
    if side <= 0 or side % BLOCK:
        raise ValueError(f"block side must be a positive multiple of {BLOCK}, got {side}")
    return [
        Window(x, y, min(side, width - x), min(side, height - y))
        for y in range(0, height, side)
        for x in range(0, width, side)
    ]


def _touching(offsets: tuple[int, ...], size: int, start: int, stop: int) -> range:
    """Indices of tiles ``[offset, offset + size)`` that intersect ``[start, stop)``."""
    first = max(0, bisect.bisect_right(offsets, start - size))  # offset + size > start
    last = bisect.bisect_left(offsets, stop)  # offset < stop
    return range(first, last)


def block_tiles(grid: TileGrid, block: Window) -> list[Tile]:
    """The grid's tiles that touch ``block``, in the order the accumulator takes them
    (:func:`~.blend.tile_order`: row-major, or column-major on a raster wider than tall)."""
    xs = _touching(grid.xs, grid.tile_w, block.xoff, block.xoff + block.xsize)
    ys = _touching(grid.ys, grid.tile_h, block.yoff, block.yoff + block.ysize)

    def tile(ix: int, iy: int) -> Tile:
        return Tile(ix, iy, Window(grid.xs[ix], grid.ys[iy], grid.tile_w, grid.tile_h))

    if columns_first(grid):
        return [tile(ix, iy) for ix in xs for iy in ys]
    return [tile(ix, iy) for iy in ys for ix in xs]


class BlockBlender:
    """Blends the tiles touching one block (given in :func:`block_tiles` order) into the
    block's :class:`~.blend.Piece`, with :class:`~.blend.BandAccumulator`'s arithmetic."""

    def __init__(self, grid: TileGrid, block: Window, num_classes: int) -> None:
        self.flip = columns_first(grid)
        self.grid = g = transpose_grid(grid) if self.flip else grid
        b = Window(block.yoff, block.xoff, block.ysize, block.xsize) if self.flip else block
        self.r0, self.c0, h, w = b.yoff, b.xoff, b.ysize, b.xsize
        c = num_classes
        self._sum = np.zeros((c, h, w), np.float32)
        self._w = np.zeros((h, w), np.float32)
        self._valid = np.zeros((h, w), bool)
        self._cq = np.zeros((c, h, w), np.uint16)  # the carry of rows a later tile row covers
        self._cw = np.zeros((h, w), np.float32)
        self._cv = np.zeros((h, w), bool)
        self.probs = np.zeros((c, h, w), np.float32)
        self.covered = np.zeros((h, w), bool)
        self.valid = np.zeros((h, w), bool)
        self._weights = WeightCache(g)
        self._order = iter(block_tiles(grid, block))
        self._row: Optional[int] = None  # the tile row being summed
        self._rows = (0, 0)  # its block rows [a, b)

    def add(self, tile: Tile, probs: Optional[np.ndarray], valid: Optional[np.ndarray]) -> None:
        """Add one tile's probabilities ``[C, h, w]`` (None: skipped) and validity mask (None:
        no valid pixel)."""
        if tile != next(self._order, None):
            raise ValueError(f"tile {tile.ix},{tile.iy} out of order for this block")
        if self.flip:
            w = tile.window
            tile = Tile(tile.iy, tile.ix, Window(w.yoff, w.xoff, w.ysize, w.xsize))
            probs = None if probs is None else probs.transpose(0, 2, 1)
            valid = None if valid is None else valid.T
        if tile.iy != self._row:
            if self._row is not None:
                self._finish_row()
            self._start_row(tile.iy)
        win = tile.window
        a, b = self._rows
        c0 = max(win.xoff, self.c0)
        c1 = min(win.xoff + win.xsize, self.c0 + self._w.shape[1])
        tr = slice(self.r0 + a - win.yoff, self.r0 + b - win.yoff)
        tc = slice(c0 - win.xoff, c1 - win.xoff)
        cols = slice(c0 - self.c0, c1 - self.c0)
        if valid is not None:
            self._valid[a:b, cols] |= valid[tr, tc]
        if probs is not None:
            wt = self._weights(tile.ix, tile.iy)[tr, tc]
            self._sum[:, a:b, cols] += np.multiply(probs[:, tr, tc], wt)
            self._w[a:b, cols] += wt

    def _start_row(self, iy: int) -> None:
        """Block rows of tile row ``iy``: those the previous tile row covers start from its
        carry (as in :meth:`BandAccumulator._extend`), the others from zero."""
        g = self.grid
        height = self._w.shape[0]
        a = max(g.ys[iy], self.r0) - self.r0
        b = min(g.ys[iy] + g.tile_h, self.r0 + height) - self.r0
        carried = a
        if iy > 0:
            carried = min(b, max(a, g.ys[iy - 1] + g.tile_h - self.r0))
        if carried > a:
            rows = slice(a, carried)
            w = self._cw[rows]
            q = self._cq[:, rows].astype(np.float32) * np.float32(1.0 / Q_SCALE)
            self._sum[:, rows] = q * w
            self._w[rows] = w
            self._valid[rows] = self._cv[rows]
        self._sum[:, carried:b] = 0
        self._w[carried:b] = 0
        self._valid[carried:b] = False
        self._row, self._rows = iy, (a, b)

    def _finish_row(self) -> None:
        """Rows the current tile row finishes become output; the rows the next tile row also
        covers go to the carry as uint16 (as in :meth:`BandAccumulator._finish`)."""
        g, iy = self.grid, self._row
        assert iy is not None
        a, b = self._rows
        end = g.ys[iy + 1] if iy + 1 < len(g.ys) else g.height
        n = max(a, min(b, end - self.r0))
        s, w, v = self._sum, self._w, self._valid
        if n > a:
            covered = w[a:n] > 0
            np.divide(s[:, a:n], w[a:n], out=self.probs[:, a:n], where=covered)
            self.covered[a:n] = covered
            self.valid[a:n] = v[a:n]
        if b > n:
            ws = w[n:b]
            q = np.zeros((s.shape[0], b - n, s.shape[2]), np.float32)
            np.divide(s[:, n:b], ws, out=q, where=ws > 0)
            self._cq[:, n:b] = np.rint(q * Q_SCALE)
            self._cw[n:b] = ws
            self._cv[n:b] = v[n:b]

    def result(self) -> Piece:
        """The block's finished piece (after its last tile)."""
        if next(self._order, None) is not None:
            raise ValueError("the block still misses tiles")
        if self._row is not None:
            self._finish_row()
            self._row = None
        piece = Piece(self.r0, self.c0, self.probs, self.covered, self.valid)
        return piece.transposed() if self.flip else piece


def _batches(
    engine: TileEngine, reader: RasterReader, tiles: list[Tile], grid: TileGrid
) -> Iterator[tuple[list[Tile], list[Optional[np.ndarray]], Optional[np.ndarray]]]:
    """Tiles read in groups of up to ``engine.batch_size`` tiles to compute: the group's tiles,
    their validity masks and the probabilities of the computed ones (in order)."""
    pad_h, pad_w = engine.padded_size(grid)
    group: list[Tile] = []
    masks: list[Optional[np.ndarray]] = []
    arrays: list[np.ndarray] = []
    for t in tiles:
        valid, x = engine.read_tile(reader, t, pad_h, pad_w)
        group.append(t)
        masks.append(valid)
        if x is not None:
            arrays.append(x)
        if len(arrays) >= engine.batch_size:
            yield group, masks, engine.forward(torch.from_numpy(np.stack(arrays)), grid)
            group, masks, arrays = [], [], []
    if group:
        probs = engine.forward(torch.from_numpy(np.stack(arrays)), grid) if arrays else None
        yield group, masks, probs


def map_block(
    engine: TileEngine, reader: RasterReader, grid: TileGrid, block: Window
) -> tuple[Piece, int, list[Tile]]:
    """Map one block: run ``engine``'s model (already :meth:`~.TileEngine.prepared`) on every
    tile touching it and blend them; returns ``(piece, tiles computed, tiles skipped)``."""
    tiles = block_tiles(grid, block)
    blender = BlockBlender(grid, block, engine.card.num_classes)
    computed, skipped = 0, []
    for group, masks, probs in _batches(engine, reader, tiles, grid):
        k = 0
        for t, valid in zip(group, masks):
            p = None
            if valid is not None:
                assert probs is not None
                p, k = probs[k], k + 1
                computed += 1
            else:
                skipped.append(t)
            blender.add(t, p, valid)
        engine.reporter.check()
    return blender.result(), computed, skipped
