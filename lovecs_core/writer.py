"""GeoTIFF outputs written strip by strip: class map (uint8 codes, colour table, category names),
confidence, per-class probabilities.

Every file is written under a temporary name in the destination folder and renamed only by
:meth:`StripWriter.commit`; :meth:`StripWriter.abort` removes it. Rows are buffered up to whole
blocks and flushed from GDAL's cache at once, so memory stays ``O(block x width)``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from osgeo import gdal

from .card import ClassInfo
from .contract import temporary_path
from .outputfiles import OutputError, remove_raster, sidecars, write_error

gdal.UseExceptions()

BLOCK = 256
CREATION_OPTIONS = [
    "TILED=YES",
    f"BLOCKXSIZE={BLOCK}",
    f"BLOCKYSIZE={BLOCK}",
    "COMPRESS=DEFLATE",
    "BIGTIFF=IF_SAFER",
    "SPARSE_OK=TRUE",
]
#: Nodata of every output: class 0, confidence 0 (a softmax maximum is never 0), probability -1.
CLASS_NODATA = 0
CONFIDENCE_NODATA = 0
PROBABILITY_NODATA = -1.0
#: Overview resampling of class maps: NEAREST keeps codes and costs a fraction of MODE's time.
CLASS_OVERVIEWS = "NEAREST"
_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}


def overview_factors(width: int, height: int, smallest: int = 128) -> list[int]:
    """2, 4, 8 ... while the overview's longer side stays above ``smallest`` pixels."""
    factors, f = [], 2
    while max(width, height) / f >= smallest:
        factors.append(f)
        f *= 2
    return factors


class StripWriter:
    """A tiled, DEFLATE-compressed GeoTIFF filled by consecutive strips ``[bands, h, width]``."""

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
        self._buf = np.empty((bands, rows, width), dtype=self.dtype)
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
        if self._written != self.height:
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

            try:
                self.ds.BuildOverviews(resampling, factors, callback=callback)
            except RuntimeError as exc:
                if stopped:
                    raise  # cancelled from the progress callback: the caller knows
                raise write_error(exc, self.path, self.final) from exc
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


def set_class_metadata(ds: gdal.Dataset, classes: Sequence[ClassInfo], band: int = 1) -> None:
    """Colour table (nodata 0 transparent) and category names from the card's classes."""
    b = ds.GetRasterBand(band)
    table = gdal.ColorTable()
    table.SetColorEntry(0, (0, 0, 0, 0))
    for c in classes:
        table.SetColorEntry(int(c.code), (*c.rgb(), 255))
    b.SetRasterColorTable(table)
    b.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    names = [""] * (max(c.code for c in classes) + 1)
    names[0] = "no data"
    for c in classes:
        names[c.code] = c.name
    b.SetCategoryNames(names)
    b.SetDescription("land cover class")
    b = None


class PredictionWriter:
    """The outputs of one prediction: class map, optional confidence, optional probabilities.

    ``write(row_off, classes[h, W], confidence[h, W], probabilities[C, h, W])``; ``commit()``
    builds overviews and renames all files; ``abort()`` removes them.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        width: int,
        height: int,
        geotransform: Optional[Sequence[float]],
        projection: str,
        classes: Sequence[ClassInfo],
        *,
        confidence: Optional[str | os.PathLike[str]] = None,
        confidence_dtype: str = "uint8",
        probabilities: Optional[str | os.PathLike[str]] = None,
        metadata: Optional[dict[str, str]] = None,
        styled: bool = True,
    ) -> None:
        if confidence_dtype not in ("uint8", "float32"):
            raise ValueError(f"confidence_dtype must be uint8 or float32, not {confidence_dtype!r}")
        self.classes = list(classes)
        self.styled = styled
        self.confidence_dtype = confidence_dtype
        self.writers: list[StripWriter] = []
        try:
            self.map = self._add(
                out, 1, np.uint8, geotransform, projection, CLASS_NODATA, width, height
            )
            if styled:
                set_class_metadata(self.map.dataset, self.classes)
            if metadata:
                self.map.dataset.SetMetadata({k: str(v) for k, v in metadata.items()})
            self.conf = (
                None
                if confidence is None
                else self._add(
                    confidence,
                    1,
                    np.dtype(confidence_dtype),
                    geotransform,
                    projection,
                    CONFIDENCE_NODATA,
                    width,
                    height,
                )
            )
            if self.conf is not None:
                self.conf.dataset.GetRasterBand(1).SetDescription(
                    "confidence (max class probability, "
                    + ("percent)" if confidence_dtype == "uint8" else "0-1)")
                )
            self.probs = (
                None
                if probabilities is None
                else self._add(
                    probabilities,
                    len(self.classes),
                    np.float32,
                    geotransform,
                    projection,
                    PROBABILITY_NODATA,
                    width,
                    height,
                    predictor=True,
                )
            )
            if self.probs is not None:
                for i, c in enumerate(self.classes):
                    self.probs.dataset.GetRasterBand(i + 1).SetDescription(f"p({c.name})")
        except Exception:
            self.abort()
            raise

    def _add(
        self,
        path: str | os.PathLike[str],
        bands: int,
        dtype: type | np.dtype,
        gt: Optional[Sequence[float]],
        proj: str,
        nodata: float,
        width: int,
        height: int,
        predictor: bool = False,
    ) -> StripWriter:
        writer = StripWriter(
            path, width, height, bands, dtype, gt, proj, nodata, predictor=predictor
        )
        self.writers.append(writer)
        return writer

    def write(
        self,
        row_off: int,
        classes: np.ndarray,
        confidence: Optional[np.ndarray] = None,
        probabilities: Optional[np.ndarray] = None,
    ) -> None:
        self.map.write(row_off, classes)
        if self.conf is not None:
            if confidence is None:
                raise ValueError("this writer needs confidence values")
            self.conf.write(row_off, confidence)
        if self.probs is not None:
            if probabilities is None:
                raise ValueError("this writer needs class probabilities")
            self.probs.write(row_off, probabilities)

    def commit(
        self, overviews: bool = True, progress: Optional[Callable[[float], bool]] = None
    ) -> list[Path]:
        """Finish every file (overviews: :data:`CLASS_OVERVIEWS` for classes, average for the
        others) and rename them to their final names."""
        n = len(self.writers)
        for i, writer in enumerate(self.writers):
            part = None if progress is None else (lambda f, i=i: progress((i + f) / n))
            writer.finish(CLASS_OVERVIEWS if writer is self.map else "AVERAGE", part, overviews)
        done: list[Path] = []
        try:
            for w in self.writers:
                done.append(w.commit())
        except BaseException:
            for path in done:  # all or nothing: a map without its confidence is not a result
                remove_raster(path)
            raise
        return done

    def abort(self) -> None:
        for w in self.writers:
            w.abort()
