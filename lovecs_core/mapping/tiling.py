"""Tile grid and smooth blend weights.

Tiles all have the same size (``min(tile, raster side)``) and are shifted inwards at the right and
bottom borders, so no tile hangs outside the raster. Neighbouring tiles are blended with a raised
cosine ramp over their overlap; the first quarter of each overlap next to a tile's *interior* edge
gets weight 0, so border pixels of a tile (whose context the model could not see) never reach the
output as long as the model's receptive radius fits in that quarter. At the raster border a tile
keeps full weight, so the summed weight is positive at every pixel.

:class:`~.blend.BandAccumulator` blends the tiles, streaming (the tests keep a simpler strip
accumulator as its reference: ``tests/core/mapping/strip_oracle.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..rasters.reading import Window


def axis_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``min(tile, length)`` along one axis, covering ``length``.

    The stride is ``tile - overlap``; the last tile is moved back to end exactly at ``length``.
    """
    if length <= 0:
        raise ValueError(f"raster side must be positive, got {length}")
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(
            f"need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}"
        )
    if length <= tile:
        return [0]
    stride = tile - overlap
    offsets = list(range(0, length - tile, stride))
    if offsets[-1] != length - tile:
        offsets.append(length - tile)
    return offsets


def margin_for(overlap: int) -> int:
    """Pixels at an interior tile edge that get weight 0 (a quarter of the overlap, rounded up)."""
    return math.ceil(overlap / 4) if overlap >= 3 else 0


def ramp(overlap: int) -> np.ndarray:
    """Rising weights over an overlap of ``overlap`` pixels: zeros over the margin, then a raised
    cosine. ``ramp(o) + ramp(o)[::-1] == 1``: two neighbours sum to one across their overlap."""
    m = margin_for(overlap)
    k = np.arange(overlap, dtype=np.float64)
    n = overlap - 2 * m
    t = np.clip((k - m + 1) / (n + 1), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def axis_weights(offsets: list[int], size: int, index: int) -> np.ndarray:
    """1D blend weights of tile ``index`` (of ``size`` pixels) along an axis with ``offsets``."""
    w = np.ones(size, dtype=np.float32)
    start = offsets[index]
    if index > 0:  # interior edge on the low side: ramp up over the overlap with the previous tile
        ov = offsets[index - 1] + size - start
        w[:ov] *= ramp(ov)
    if index < len(offsets) - 1:  # interior edge on the high side
        ov = start + size - offsets[index + 1]
        w[size - ov :] *= ramp(ov)[::-1]
    return w


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: its column/row index in the grid and its pixel window."""

    ix: int
    iy: int
    window: Window


@dataclass(frozen=True)
class TileGrid:
    """Tiles of equal size covering a ``width x height`` raster, in row-major order."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def tiles(self) -> Iterator[Tile]:
        for iy, y in enumerate(self.ys):
            for ix, x in enumerate(self.xs):
                yield Tile(ix, iy, Window(x, y, self.tile_w, self.tile_h))

    def weights(self, ix: int, iy: int) -> np.ndarray:
        """2D blend weights ``[tile_h, tile_w]`` of a tile (outer product of the axis ramps)."""
        return np.outer(
            axis_weights(list(self.ys), self.tile_h, iy),
            axis_weights(list(self.xs), self.tile_w, ix),
        )


class WeightCache:
    """The blend weights of a grid's tiles, computed once per kind: tiles away from the first and
    the last two of an axis share their weights."""

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, ix: int, iy: int) -> np.ndarray:
        nx, ny = len(self.grid.xs), len(self.grid.ys)
        key = (ix if ix in (0, nx - 2, nx - 1) else -1, iy if iy in (0, ny - 2, ny - 1) else -1)
        if key not in self._cache:
            self._cache[key] = self.grid.weights(ix, iy)
        return self._cache[key]

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self._cache.values())


def make_grid(width: int, height: int, tile: int, overlap: int) -> TileGrid:
    """A :class:`TileGrid` of ``tile``-sized tiles (clipped to the raster) with ``overlap``."""
    tw, th = min(tile, width), min(tile, height)
    xs = axis_offsets(width, tile, overlap)
    ys = axis_offsets(height, tile, overlap)
    return TileGrid(width, height, tw, th, tuple(xs), tuple(ys))
