"""Mapping one output block by itself, bit for bit as the whole-raster run maps it.

A distributed run (:mod:`lovecs_core.mapping.ray.map`) cuts the output into *blocks*: rectangles whose sides are
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
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from ..rasters.geotiff import BLOCK
from ..rasters.reading import RasterReader, Window
from .blend import Q_SCALE, Piece, columns_first, transpose_grid
from .pipeline import TileEngine, piece_arrays
from .tiling import Tile, TileGrid, WeightCache

#: Largest block side by default: a worker holds the current tile row of the block in float32
#: (``4.5 x classes x tile x side`` bytes, 47 MB for 5 classes, 512 px tiles and 4096 px) and the
#: block's class codes (1 byte per pixel, 16 MB).
MAX_BLOCK_SIDE = 4096
#: Blocks per worker aimed at by :func:`block_sides`: a tile crossing a block edge runs once for
#: each block, so fewer, larger blocks cost less; two per worker keep one queued while the other
#: runs and lose less when a worker dies.
BLOCKS_PER_WORKER = 2


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _runs(offsets: tuple[int, ...], size: int, length: int, side: int) -> int:
    """Tile runs along one axis when it is cut into ``side`` px blocks."""
    return sum(
        len(_touching(offsets, size, a, min(a + side, length))) for a in range(0, length, side)
    )


def block_sides(grid: TileGrid, workers: int) -> tuple[int, int]:
    """Block width and height (multiples of :data:`BLOCK`, at least a tile, at most
    :data:`MAX_BLOCK_SIDE`): about :data:`BLOCKS_PER_WORKER` blocks per worker, cut so that
    the fewest tiles run (each block runs every tile that touches it)."""
    width, height = grid.width, grid.height
    wanted = max(1, BLOCKS_PER_WORKER * workers)
    low = _round_up(max(grid.tile_w, grid.tile_h), BLOCK)
    best: Optional[tuple[int, int, int, int]] = None
    for nx in range(1, wanted + 1):
        ny = -(-wanted // nx)
        bw = min(max(_round_up(width / nx, BLOCK), low), MAX_BLOCK_SIDE)
        bh = min(max(_round_up(height / ny, BLOCK), low), MAX_BLOCK_SIDE)
        count = -(-width // bw) * -(-height // bh)
        runs = _runs(grid.xs, grid.tile_w, width, bw) * _runs(grid.ys, grid.tile_h, height, bh)
        key = (max(0, wanted - count), runs, bw, bh)  # enough blocks first, then fewest runs
        if best is None or key < best:
            best = key
    assert best is not None
    return best[2], best[3]


def block_windows(width: int, height: int, side: int, side_y: Optional[int] = None) -> list[Window]:
    """The raster cut into ``side x side_y`` windows (default square; smaller at the right and
    bottom), row-major. Sides must be multiples of :data:`BLOCK` so blocks hold whole TIFF
    blocks."""
    side_y = side if side_y is None else side_y
    if min(side, side_y) <= 0 or side % BLOCK or side_y % BLOCK:
        raise ValueError(f"block sides must be positive multiples of {BLOCK}, got {side}, {side_y}")
    return [
        Window(x, y, min(side, width - x), min(side_y, height - y))
        for y in range(0, height, side_y)
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
    """Blends the tiles touching one block (given in :func:`block_tiles` order) with
    :class:`~.blend.BandAccumulator`'s arithmetic, handing out finished pieces of the block (one
    band per tile row) as :meth:`add` and :meth:`finish` complete them. Holds one tile row of
    the block in float32 and the rows the next tile row also covers as the uint16 carry."""

    def __init__(self, grid: TileGrid, block: Window, num_classes: int) -> None:
        self.flip = columns_first(grid)
        self.grid = g = transpose_grid(grid) if self.flip else grid
        b = Window(block.yoff, block.xoff, block.ysize, block.xsize) if self.flip else block
        self.r0, self.c0, self.height, w = b.yoff, b.xoff, b.ysize, b.xsize
        c, th = num_classes, min(g.tile_h, b.ysize)
        self._sum = np.zeros((c, th, w), np.float32)  # block rows [a, b) of the tile row
        self._w = np.zeros((th, w), np.float32)
        self._valid = np.zeros((th, w), bool)
        self._cq = np.zeros((c, th, w), np.uint16)  # block rows [carry, b) of the last one
        self._cw = np.zeros((th, w), np.float32)
        self._cv = np.zeros((th, w), bool)
        self._carry = 0
        self._weights = WeightCache(g)
        self._order = iter(block_tiles(grid, block))
        self._row: Optional[int] = None  # the tile row being summed
        self._rows = (0, 0)  # its block rows [a, b)

    def add(
        self, tile: Tile, probs: Optional[np.ndarray], valid: Optional[np.ndarray]
    ) -> list[Piece]:
        """Add one tile's probabilities ``[C, h, w]`` (None: skipped) and validity mask (None:
        no valid pixel); returns the pieces that became final."""
        if tile != next(self._order, None):
            raise ValueError(f"tile {tile.ix},{tile.iy} out of order for this block")
        if self.flip:
            w = tile.window
            tile = Tile(tile.iy, tile.ix, Window(w.yoff, w.xoff, w.ysize, w.xsize))
            probs = None if probs is None else probs.transpose(0, 2, 1)
            valid = None if valid is None else valid.T
        pieces = []
        if tile.iy != self._row:
            if self._row is not None:
                pieces.append(self._finish_row())
            self._start_row(tile.iy)
        win = tile.window
        a, b = self._rows
        c0 = max(win.xoff, self.c0)
        c1 = min(win.xoff + win.xsize, self.c0 + self._w.shape[1])
        tr = slice(self.r0 + a - win.yoff, self.r0 + b - win.yoff)
        tc = slice(c0 - win.xoff, c1 - win.xoff)
        cols = slice(c0 - self.c0, c1 - self.c0)
        if valid is not None:
            self._valid[: b - a, cols] |= valid[tr, tc]
        if probs is not None:
            wt = self._weights(tile.ix, tile.iy)[tr, tc]
            self._sum[:, : b - a, cols] += np.multiply(probs[:, tr, tc], wt)
            self._w[: b - a, cols] += wt
        return pieces

    def finish(self) -> list[Piece]:
        """The last pieces, after the block's last tile."""
        if next(self._order, None) is not None:
            raise ValueError("the block still misses tiles")
        if self._row is None:
            return []
        piece, self._row = self._finish_row(), None
        return [piece]

    def _start_row(self, iy: int) -> None:
        """Block rows of tile row ``iy``: those the previous tile row covers start from its
        carry (as in :meth:`BandAccumulator._extend`), the others from zero."""
        g = self.grid
        a = max(g.ys[iy], self.r0) - self.r0
        b = min(g.ys[iy] + g.tile_h, self.r0 + self.height) - self.r0
        carried = a
        if iy > 0:
            carried = min(b, max(a, g.ys[iy - 1] + g.tile_h - self.r0))
        k = carried - a
        if k:
            assert self._carry == a, "the carry must start where the tile row does"
            w = self._cw[:k]
            q = self._cq[:, :k].astype(np.float32) * np.float32(1.0 / Q_SCALE)
            self._sum[:, :k] = q * w
            self._w[:k] = w
            self._valid[:k] = self._cv[:k]
        self._sum[:, k : b - a] = 0
        self._w[k : b - a] = 0
        self._valid[k : b - a] = False
        self._row, self._rows = iy, (a, b)

    def _finish_row(self) -> Piece:
        """Rows the current tile row finishes become a piece; the rows the next tile row also
        covers go to the carry as uint16 (as in :meth:`BandAccumulator._finish`)."""
        g, iy = self.grid, self._row
        assert iy is not None
        a, b = self._rows
        end = g.ys[iy + 1] if iy + 1 < len(g.ys) else g.height
        n = max(a, min(b, end - self.r0))
        m, s, w, v = n - a, self._sum, self._w, self._valid
        covered = w[:m] > 0
        probs = np.zeros((s.shape[0], m, s.shape[2]), np.float32)
        np.divide(s[:, :m], w[:m], out=probs, where=covered)
        piece = Piece(self.r0 + a, self.c0, probs, covered, v[:m].copy())
        if b > n:
            ws = w[m : b - a]
            q = np.zeros((s.shape[0], b - n, s.shape[2]), np.float32)
            np.divide(s[:, m : b - a], ws, out=q, where=ws > 0)
            self._cq[:, : b - n] = np.rint(q * Q_SCALE)
            self._cw[: b - n] = ws
            self._cv[: b - n] = v[m : b - a]
            self._carry = n
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


@dataclass
class BlockMap:
    """One block's outputs (raster orientation) and the tiles it ran and skipped."""

    classes: np.ndarray
    confidence: Optional[np.ndarray]
    probabilities: Optional[np.ndarray]
    computed: int
    skipped: list[Tile]


def map_block(
    engine: TileEngine,
    reader: RasterReader,
    grid: TileGrid,
    block: Window,
    confidence_dtype: Optional[str] = None,
    probabilities: bool = False,
) -> BlockMap:
    """Map one block: run ``engine``'s model (already :meth:`~.TileEngine.prepared`) on every
    tile touching it, blend them and turn the finished pieces into class codes (and confidence,
    probabilities: :func:`~.pipeline.piece_arrays`)."""
    codes = np.asarray(engine.card.class_codes(), dtype=np.uint8)
    h, w = block.ysize, block.xsize
    out = BlockMap(
        np.zeros((h, w), np.uint8),
        np.zeros((h, w), confidence_dtype) if confidence_dtype else None,
        np.zeros((len(codes), h, w), np.float32) if probabilities else None,
        0,
        [],
    )

    def put(piece: Piece) -> None:
        classes, conf, probs = piece_arrays(piece, codes, confidence_dtype, probabilities)
        ph, pw = classes.shape
        rows = slice(piece.row_off - block.yoff, piece.row_off - block.yoff + ph)
        cols = slice(piece.col_off - block.xoff, piece.col_off - block.xoff + pw)
        out.classes[rows, cols] = classes
        if out.confidence is not None:
            out.confidence[rows, cols] = conf
        if out.probabilities is not None:
            out.probabilities[:, rows, cols] = probs

    blender = BlockBlender(grid, block, engine.card.num_classes)
    for group, masks, probs in _batches(engine, reader, block_tiles(grid, block), grid):
        k = 0
        for t, valid in zip(group, masks):
            p = None
            if valid is not None:
                assert probs is not None
                p, k = probs[k], k + 1
                out.computed += 1
            else:
                out.skipped.append(t)
            for piece in blender.add(t, p, valid):
                put(piece)
        engine.reporter.check()
    for piece in blender.finish():
        put(piece)
    return out
