"""One tiled, DEFLATE-compressed GeoTIFF written under a temporary name: :class:`StripWriter`.

The file is renamed to its final name only by :meth:`StripWriter.commit`;
:meth:`StripWriter.abort` removes it. Full-width strips are buffered up to whole block rows and
flushed from GDAL's cache at once (memory ``O(block x width)``); windows of any shape
(:meth:`StripWriter.write_window`) are assembled into whole blocks, each handed to GDAL when
complete and flushed every :data:`FLUSH_BLOCKS` blocks, so memory holds only the partly filled
blocks.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from osgeo import gdal

from ..contract import temporary_path
from .blocks import BlockAssembler
from .outputs import OutputError, remove_raster, sidecars, write_error

gdal.UseExceptions()

BLOCK = 256
#: GDAL compresses blocks (and overview blocks) on this many threads, with the same pixels: up to
#: 1.4x the single-thread rate for an 8192 x 8192 class map on a loaded 2-core machine
#: (bench/encode_threads.py); a GPU machine's many cores need it, or the writer is the wall.
ENCODE_THREADS = "ALL_CPUS"
CREATION_OPTIONS = [
    "TILED=YES",
    f"BLOCKXSIZE={BLOCK}",
    f"BLOCKYSIZE={BLOCK}",
    "COMPRESS=DEFLATE",
    "BIGTIFF=IF_SAFER",
    "SPARSE_OK=TRUE",
    f"NUM_THREADS={ENCODE_THREADS}",
]
#: Window writes: GDAL's cache is flushed (blocks compressed and written) after this many blocks.
FLUSH_BLOCKS = 64
_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}


def overview_factors(width: int, height: int, smallest: int = 128) -> list[int]:
    """2, 4, 8 ... while the overview's longer side stays above ``smallest`` pixels."""
    factors, f = [], 2
    while max(width, height) / f >= smallest:
        factors.append(f)
        f *= 2
    return factors


class StripWriter:
    """A tiled, DEFLATE-compressed GeoTIFF filled by consecutive strips ``[bands, h, width]``
    (:meth:`write`) or by windows in any order (:meth:`write_window`), not both."""

    def __init__(
        self,
        final: str | os.PathLike[str],
        width: int,
        height: int,
        bands: int,
        dtype: np.dtype | type,
        geotransform: Optional[Sequence[float]],
        projection: str,
        nodata: Optional[float],
        *,
        temporary: bool = True,
        predictor: bool = False,
    ) -> None:
        self.final = Path(final)
        self.path = temporary_path(self.final) if temporary else self.final
        self.width, self.height, self.bands = width, height, bands
        self.dtype = np.dtype(dtype)
        options = list(CREATION_OPTIONS)
        if predictor and self.dtype.kind == "f":
            options.append("PREDICTOR=3")
        self._committed = False
        self.ds: Optional[gdal.Dataset] = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.ds = gdal.GetDriverByName("GTiff").Create(
                str(self.path), width, height, bands, _GDAL_TYPES[self.dtype], options
            )
        except (OSError, RuntimeError) as exc:
            remove_raster(self.path)
            raise write_error(exc, self.path, self.final) from exc
        if geotransform is not None:
            self.ds.SetGeoTransform(tuple(geotransform))
        if projection:
            self.ds.SetProjection(projection)
        if nodata is not None:
            for b in range(1, bands + 1):
                self.ds.GetRasterBand(b).SetNoDataValue(float(nodata))
        rows = min(BLOCK, height)
        self._buf = np.empty((bands, rows, width), dtype=self.dtype)  # untouched until strips
        self._blocks: Optional[BlockAssembler] = None
        self._unflushed = 0
        self._fill = 0
        self._written = 0
        self._next = 0

    @property
    def dataset(self) -> gdal.Dataset:
        """The open GDAL dataset being written (an error once committed or aborted)."""
        if self.ds is None:
            raise RuntimeError(f"{self.final} is closed")
        return self.ds

    @property
    def rows_written(self) -> int:
        return self._written + self._fill

    def write(self, row_off: int, data: np.ndarray) -> None:
        """Append rows ``[row_off, row_off + h)``; strips must follow each other without gaps."""
        if self.ds is None:
            raise RuntimeError("writer is closed")
        if self._blocks is not None:
            raise ValueError("this writer takes windows (write_window), not strips")
        if row_off != self._next:
            raise ValueError(
                f"strips must be consecutive: expected row {self._next}, got {row_off}"
            )
        data = np.asarray(data).reshape(self.bands, -1, self.width)
        h = data.shape[1]
        if row_off + h > self.height:
            raise ValueError(f"strip rows {row_off}..{row_off + h} exceed height {self.height}")
        pos = 0
        while pos < h:
            n = min(self._buf.shape[1] - self._fill, h - pos)
            self._buf[:, self._fill : self._fill + n] = data[:, pos : pos + n]
            self._fill += n
            pos += n
            if self._fill == self._buf.shape[1]:
                self._flush()
        self._next += h

    def write_window(self, row_off: int, col_off: int, data: np.ndarray) -> None:
        """Write ``data[bands, h, w]`` at ``(row_off, col_off)``; windows may come in any order
        but must not overlap. Whole blocks go to GDAL as soon as they are complete."""
        if self.ds is None:
            raise RuntimeError("writer is closed")
        if self._next:
            raise ValueError("this writer takes strips (write), not windows")
        if self._blocks is None:
            self._blocks = BlockAssembler(self.width, self.height, self.bands, self.dtype, BLOCK)
        data = np.asarray(data, dtype=self.dtype)
        data = data.reshape((self.bands,) + data.shape[-2:])
        try:
            for x, y, block in self._blocks.add(row_off, col_off, data):
                for b in range(self.bands):
                    band = self.ds.GetRasterBand(b + 1)
                    band.WriteArray(np.ascontiguousarray(block[b]), x, y)
                    band = None
                self._unflushed += 1
                if self._unflushed >= FLUSH_BLOCKS:
                    self.ds.FlushCache()
                    self._unflushed = 0
        except (OSError, RuntimeError) as exc:
            exc.__traceback__ = None  # its frames may hold the dataset, which abort must close
            raise write_error(exc, self.path, self.final) from exc

    def _flush(self) -> None:
        if not self._fill or self.ds is None:
            return
        try:
            for b in range(self.bands):
                band = self.ds.GetRasterBand(b + 1)
                band.WriteArray(self._buf[b, : self._fill], 0, self._written)
                band = None
            self.ds.FlushCache()  # compress and write the finished blocks, free GDAL's cache
        except (OSError, RuntimeError) as exc:
            exc.__traceback__ = None  # its frames may hold the dataset, which abort must close
            raise write_error(exc, self.path, self.final) from exc
        self._written += self._fill
        self._fill = 0

    def finish(
        self,
        resampling: str = "NEAREST",
        progress: Optional[Callable[[float], bool]] = None,
        overviews: bool = True,
    ) -> None:
        """Write the last rows, build internal overviews and close the file (still temporary).

        ``progress(fraction) -> keep_going`` is called while overviews are built."""
        if self.ds is None:
            return
        self._flush()
        if self._blocks is not None:
            if not self._blocks.complete():
                raise ValueError(
                    f"only {self._blocks.done} of {self._blocks.total} blocks were written"
                )
        elif self._written != self.height:
            raise ValueError(f"only {self._written} of {self.height} rows were written")
        factors = overview_factors(self.width, self.height) if overviews else []
        if factors:
            callback = None
            stopped: list[bool] = []
            if progress is not None:

                def callback(fraction: float, *_: object) -> int:
                    if progress(fraction):
                        return 1
                    stopped.append(True)
                    return 0

            previous = gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
            gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", ENCODE_THREADS)
            try:
                self.ds.BuildOverviews(resampling, factors, callback=callback)
            except RuntimeError as exc:
                if stopped:
                    raise  # cancelled from the progress callback: the caller knows
                raise write_error(exc, self.path, self.final) from exc
            finally:
                gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", previous)
        self.close()

    def close(self) -> None:
        """Flush and close the file; the dataset is released even when the flush fails (a full
        disk), and the error is raised as an :class:`OutputError`."""
        ds, self.ds = self.ds, None
        self._buf = np.empty((0, 0, 0), dtype=self.dtype)
        if ds is not None:
            try:
                ds.FlushCache()
            except (OSError, RuntimeError) as exc:
                exc.__traceback__ = None  # its frames may hold the dataset: release it now
                raise write_error(exc, self.path, self.final) from exc
            finally:
                ds = None

    def commit(self) -> Path:
        """Rename the finished temporary file (and its ``.aux.xml``) to the final name. Marked
        done only once renamed; when the rename fails the temporary file is removed and the
        final name keeps what it had."""
        try:
            self.close()
            if self.path != self.final:
                if self.final.is_dir():
                    raise OutputError(
                        errno.EISDIR,
                        f"cannot write {self.final}: it is an existing folder; give a file name",
                    )
                os.replace(self.path, self.final)
                for old in sidecars(self.final)[1:]:  # stale sidecars describe the old file
                    old.unlink(missing_ok=True)
                aux = Path(str(self.path) + ".aux.xml")
                if aux.exists():
                    os.replace(aux, Path(str(self.final) + ".aux.xml"))
        except BaseException as exc:
            remove_raster(self.path)
            if isinstance(exc, (OSError, RuntimeError)):
                raise write_error(exc, self.path, self.final) from exc
            raise
        self._committed = True
        return self.final

    def abort(self) -> None:
        """Close and delete the file being written (no-op once committed). Never raises: a
        failed flush (full disk) must not keep the file from being removed."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            pass
        if not self._committed:
            remove_raster(self.path)
