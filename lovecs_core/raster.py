"""Raster input with GDAL: open, band selection, validity masks, windowed reads, ground sample distance."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()


class RasterError(ValueError):
    """A raster cannot be opened or does not fit the request; the message says why."""


@dataclass(frozen=True)
class Window:
    """A pixel window: column/row offset and size."""

    xoff: int
    yoff: int
    xsize: int
    ysize: int


def parse_bands(text: Optional[str | Sequence[int]]) -> Optional[list[int]]:
    """``"3,2,1"`` -> ``[3, 2, 1]`` (1-based GDAL band numbers); empty/None -> None (automatic)."""
    if text is None:
        return None
    if isinstance(text, str):
        text = text.strip()
        if not text:
            return None
        try:
            bands = [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError as exc:
            raise RasterError(f"bands must be comma-separated band numbers like 3,2,1: {text!r}") from exc
    else:
        bands = [int(b) for b in text]
    if not bands or any(b < 1 for b in bands):
        raise RasterError(f"band numbers start at 1: {bands}")
    return bands


def open_dataset(path: str | os.PathLike[str]) -> gdal.Dataset:
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterError(f"cannot open raster {path}: {exc}") from exc
    if ds is None:
        raise RasterError(f"cannot open raster {path}")
    return ds


def data_band_numbers(ds: gdal.Dataset) -> list[int]:
    """All bands that are not alpha bands (1-based)."""
    return [i for i in range(1, ds.RasterCount + 1)
            if ds.GetRasterBand(i).GetColorInterpretation() != gdal.GCI_AlphaBand]


def pixel_size_metres(ds: gdal.Dataset) -> Optional[float]:
    """Mean ground sample distance in metres, or None when the raster has no georeference."""
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        return None
    px = math.hypot(gt[1], gt[4])
    py = math.hypot(gt[2], gt[5])
    size = (px + py) / 2.0
    srs = osr.SpatialReference(wkt=wkt)
    if srs.IsGeographic():
        lat = gt[3] + gt[5] * ds.RasterYSize / 2.0
        return size * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    return size * srs.GetLinearUnits()


class RasterReader:
    """Windowed reads of selected bands as float32 plus a validity mask (GDAL mask semantics:
    nodata values, alpha bands and per-dataset masks all make a pixel invalid)."""

    def __init__(self, source: str | os.PathLike[str] | gdal.Dataset,
                 bands: Optional[Sequence[int]] = None) -> None:
        self.ds = source if isinstance(source, gdal.Dataset) else open_dataset(source)
        self.path = self.ds.GetDescription()
        self.bands = list(bands) if bands else data_band_numbers(self.ds)
        for b in self.bands:
            if not 1 <= b <= self.ds.RasterCount:
                raise RasterError(f"band {b} does not exist: {self.path} has "
                                  f"{self.ds.RasterCount} band(s)")
        self.width = self.ds.RasterXSize
        self.height = self.ds.RasterYSize

    @property
    def band_count(self) -> int:
        return len(self.bands)

    def dtype_name(self) -> str:
        return gdal.GetDataTypeName(self.ds.GetRasterBand(self.bands[0]).DataType).lower()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(data[C, h, w] float32, valid[h, w] bool)`` for a window."""
        w = window
        data = self.ds.ReadAsArray(w.xoff, w.yoff, w.xsize, w.ysize, band_list=self.bands)
        data = np.asarray(data, dtype=np.float32).reshape(len(self.bands), w.ysize, w.xsize)
        valid = np.ones((w.ysize, w.xsize), dtype=bool)
        for b in self.bands:
            band = self.ds.GetRasterBand(b)
            if band.GetMaskFlags() & gdal.GMF_ALL_VALID:
                continue
            valid &= band.GetMaskBand().ReadAsArray(w.xoff, w.yoff, w.xsize, w.ysize) > 0
        valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def close(self) -> None:
        self.ds = None  # type: ignore[assignment]

    def __enter__(self) -> "RasterReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
