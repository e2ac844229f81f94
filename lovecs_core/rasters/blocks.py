"""Assembling windows of any shape into whole, aligned output blocks.

:class:`BlockAssembler` buffers only the blocks that are partly filled and hands each block back
the moment its last pixel arrives, so a writer never sends GDAL a partial block and memory holds
the blocks along the frontier of the windows written so far, not whole rows of the raster.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class BlockAssembler:
    """Blocks of ``block x block`` pixels (smaller at the right and bottom border) of a
    ``[bands, height, width]`` raster, filled by non-overlapping windows in any order."""

    def __init__(self, width: int, height: int, bands: int, dtype: np.dtype, block: int) -> None:
        self.width, self.height, self.bands = width, height, bands
        self.dtype, self.block = np.dtype(dtype), block
        self.nx, self.ny = -(-width // block), -(-height // block)
        self._open: dict[tuple[int, int], tuple[np.ndarray, list[int]]] = {}
        self.done = 0

    @property
    def total(self) -> int:
        return self.nx * self.ny

    @property
    def open_blocks(self) -> int:
        """Blocks partly filled (held in memory)."""
        return len(self._open)

    def extent(self, bx: int, by: int) -> tuple[int, int, int, int]:
        """``(xoff, yoff, xsize, ysize)`` of block ``(bx, by)``."""
        b = self.block
        x, y = bx * b, by * b
        return x, y, min(b, self.width - x), min(b, self.height - y)

    def add(
        self, row_off: int, col_off: int, data: np.ndarray
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Add ``data[bands, h, w]`` at ``(row_off, col_off)``; yields ``(xoff, yoff, block)``
        for every block it completes."""
        _, h, w = data.shape
        if row_off < 0 or col_off < 0 or row_off + h > self.height or col_off + w > self.width:
            raise ValueError(
                f"window {col_off},{row_off} {w}x{h} outside the {self.width}x{self.height} raster"
            )
        b = self.block
        for by in range(row_off // b, -(-(row_off + h) // b)):
            for bx in range(col_off // b, -(-(col_off + w) // b)):
                x, y, bw, bh = self.extent(bx, by)
                x0, x1 = max(x, col_off), min(x + bw, col_off + w)
                y0, y1 = max(y, row_off), min(y + bh, row_off + h)
                part = data[:, y0 - row_off : y1 - row_off, x0 - col_off : x1 - col_off]
                area = (x1 - x0) * (y1 - y0)
                if area == bw * bh and (bx, by) not in self._open:  # whole block: no copy
                    self.done += 1
                    yield x, y, part
                    continue
                entry = self._open.get((bx, by))
                if entry is None:
                    entry = self._open[(bx, by)] = (
                        np.empty((self.bands, bh, bw), self.dtype),
                        [0],
                    )
                buf, filled = entry
                buf[:, y0 - y : y1 - y, x0 - x : x1 - x] = part
                filled[0] += area
                if filled[0] > bw * bh:
                    raise ValueError(f"block {bx},{by} was written more than once")
                if filled[0] == bw * bh:
                    del self._open[(bx, by)]
                    self.done += 1
                    yield x, y, buf

    def complete(self) -> bool:
        return self.done == self.total and not self._open
