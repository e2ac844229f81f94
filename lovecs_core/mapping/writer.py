"""The outputs of one prediction as GeoTIFFs: class map (uint8 codes, colour table, category
names), confidence, per-class probabilities; each file a :class:`~.geotiff.StripWriter`, written
under a temporary name and renamed only when all are complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from osgeo import gdal

from ..model.card import ClassInfo
from ..rasters.geotiff import StripWriter
from ..rasters.outputs import remove_raster

gdal.UseExceptions()

#: Nodata of every output: class 0, confidence 0 (a softmax maximum is never 0), probability -1.
CLASS_NODATA = 0
CONFIDENCE_NODATA = 0
PROBABILITY_NODATA = -1.0
#: Overview resampling of class maps: NEAREST keeps codes and costs a fraction of MODE's time.
CLASS_OVERVIEWS = "NEAREST"


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
        col_off: Optional[int] = None,
    ) -> None:
        """Full-width strips in order, or (with ``col_off``) windows of any shape in any
        order (:meth:`StripWriter.write_window`)."""
        outputs: list[tuple[StripWriter, Optional[np.ndarray], str]]
        outputs = [(self.map, classes, "class codes")]
        if self.conf is not None:
            outputs.append((self.conf, confidence, "confidence values"))
        if self.probs is not None:
            outputs.append((self.probs, probabilities, "class probabilities"))
        for writer, data, what in outputs:
            if data is None:
                raise ValueError(f"this writer needs {what}")
            if col_off is None:
                writer.write(row_off, data)
            else:
                writer.write_window(row_off, col_off, data)

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
