"""Raster input with GDAL: open, band selection, validity masks, windowed reads, ground sample
distance, extent windows, warped VRTs at another GSD."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

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


@contextlib.contextmanager
def gdal_cache_limit(max_bytes: int = 128 * 1024**2) -> Iterator[None]:
    """Cap GDAL's (process-wide) block cache for a streaming job, then restore it. GDAL's
    default is 5% of RAM; a pass over a huge raster would otherwise fill all of it."""
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, max_bytes))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


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
    return [
        i
        for i in range(1, ds.RasterCount + 1)
        if ds.GetRasterBand(i).GetColorInterpretation() != gdal.GCI_AlphaBand
    ]


#: Relative GSD difference above which a raster is resampled to the model's GSD (mapping, the
#: tone step's sample, adaptation's source scale).
GSD_TOLERANCE = 0.10


def pixel_size_metres(ds: gdal.Dataset) -> Optional[float]:
    """Mean ground sample distance in metres, or None when the raster has no georeference.

    Projected CRSs use their linear unit (US feet count as feet); geographic CRSs and (normal, not
    transverse) Mercator projections such as Web Mercator, whose units grow with latitude, are
    scaled by the cosine of the latitude at the raster centre.
    """
    gt = ds.GetGeoTransform(can_return_null=True)
    wkt = ds.GetProjection()
    if gt is None or not wkt:
        return None
    px = math.hypot(gt[1], gt[4])
    py = math.hypot(gt[2], gt[5])
    size = (px + py) / 2.0
    srs = osr.SpatialReference(wkt=wkt)
    lat = _centre_latitude(ds, srs, gt)
    if srs.IsGeographic():
        return size * 111_320.0 * max(math.cos(math.radians(lat if lat is not None else 0.0)), 1e-6)
    metres = size * srs.GetLinearUnits()
    projection = (srs.GetAttrValue("PROJECTION") or "").lower()
    if "mercator" in projection and "transverse" not in projection and lat is not None:
        metres *= max(math.cos(math.radians(lat)), 1e-6)
    return metres


def _centre_latitude(
    ds: gdal.Dataset, srs: osr.SpatialReference, gt: Sequence[float]
) -> Optional[float]:
    col, row = ds.RasterXSize / 2.0, ds.RasterYSize / 2.0
    x = gt[0] + col * gt[1] + row * gt[2]
    y = gt[3] + col * gt[4] + row * gt[5]
    if srs.IsGeographic():  # GDAL geotransforms are in (lon, lat) order
        return y
    try:
        geo = srs.CloneGeogCS()
        geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        src = srs.Clone()
        src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        _, lat, _ = osr.CoordinateTransformation(src, geo).TransformPoint(x, y)
    except (RuntimeError, TypeError):
        return None
    return lat if math.isfinite(lat) else None


def window_from_extent(ds: gdal.Dataset, extent: Sequence[float]) -> Window:
    """The pixel window of ``(xmin, ymin, xmax, ymax)`` (raster CRS), widened to whole pixels and
    clipped to the raster. Raises :class:`RasterError` for a rotated grid or an empty overlap."""
    if len(extent) != 4:
        raise RasterError(f"extent must be xmin,ymin,xmax,ymax, got {list(extent)}")
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmin < xmax and ymin < ymax):
        raise RasterError(f"extent must have xmin < xmax and ymin < ymax, got {list(extent)}")
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise RasterError("an extent needs a georeferenced raster")
    if gt[2] != 0 or gt[4] != 0:
        raise RasterError("an extent cannot be used with a rotated raster grid")
    c0, c1 = sorted(((xmin - gt[0]) / gt[1], (xmax - gt[0]) / gt[1]))
    r0, r1 = sorted(((ymax - gt[3]) / gt[5], (ymin - gt[3]) / gt[5]))
    eps = 1e-6
    c0, r0 = max(0, math.floor(c0 + eps)), max(0, math.floor(r0 + eps))
    c1 = min(ds.RasterXSize, math.ceil(c1 - eps))
    r1 = min(ds.RasterYSize, math.ceil(r1 - eps))
    if c1 <= c0 or r1 <= r0:
        raise RasterError(f"extent {list(extent)} does not overlap the raster")
    return Window(c0, r0, c1 - c0, r1 - r0)


def subset(ds: gdal.Dataset, window: Window) -> gdal.Dataset:
    """A virtual (VRT) dataset of a window; nodata, alpha and mask bands carry over."""
    return gdal.Translate(
        "", ds, format="VRT", srcWin=[window.xoff, window.yoff, window.xsize, window.ysize]
    )


def warp_to_gsd(ds: gdal.Dataset, gsd: float) -> gdal.Dataset:
    """A warped VRT of ``ds`` resampled to ``gsd`` metres (same CRS, north-up), with an alpha band
    marking pixels without valid source data. Downsampling averages, upsampling is bilinear."""
    current = pixel_size_metres(ds)
    if current is None:
        raise RasterError("cannot resample a raster without georeference")
    gt = ds.GetGeoTransform()
    factor = gsd / current
    res_x = math.hypot(gt[1], gt[4]) * factor
    res_y = math.hypot(gt[2], gt[5]) * factor
    return gdal.Warp(
        "",
        ds,
        format="VRT",
        xRes=res_x,
        yRes=res_y,
        dstAlpha=True,
        resampleAlg="average" if factor > 1 else "bilinear",
        multithread=False,
    )


class RasterReader:
    """Windowed reads of selected bands as float32 plus a validity mask (GDAL mask semantics:
    nodata values, alpha bands and per-dataset masks all make a pixel invalid)."""

    def __init__(
        self, source: str | os.PathLike[str] | gdal.Dataset, bands: Optional[Sequence[int]] = None
    ) -> None:
        self.ds = source if isinstance(source, gdal.Dataset) else open_dataset(source)
        self.path = self.ds.GetDescription()
        self.bands = list(bands) if bands else data_band_numbers(self.ds)
        for b in self.bands:
            if not 1 <= b <= self.ds.RasterCount:
                raise RasterError(
                    f"band {b} does not exist: {self.path} has {self.ds.RasterCount} band(s)"
                )
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
        valid = self.read_valid(window)
        valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def read_valid(self, window: Window) -> np.ndarray:
        """Only the validity mask ``valid[h, w]`` of a window (the data are not decoded unless
        a band's mask is derived from them)."""
        w = window
        valid = np.ones((w.ysize, w.xsize), dtype=bool)
        for b in self.bands:
            band = self.ds.GetRasterBand(b)
            if band.GetMaskFlags() & gdal.GMF_ALL_VALID:
                continue
            valid &= band.GetMaskBand().ReadAsArray(w.xoff, w.yoff, w.xsize, w.ysize) > 0
        return valid

    def is_empty(self, window: Window) -> bool:
        """Cheap test, without decoding pixels, that a window holds no valid pixel: true when a
        selected band masked by its nodata value has no data stored there (sparse GeoTIFF
        blocks read as nodata)."""
        for b in self.bands:
            band = self.ds.GetRasterBand(b)
            if not band.GetMaskFlags() & gdal.GMF_NODATA:
                continue
            flags, _ = band.GetDataCoverageStatus(
                window.xoff, window.yoff, window.xsize, window.ysize
            )
            if flags == gdal.GDAL_DATA_COVERAGE_STATUS_EMPTY:
                return True
        return False

    def close(self) -> None:
        self.ds = None

    def __enter__(self) -> "RasterReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
