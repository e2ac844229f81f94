"""Helpers for core tests: tiny model files and small GeoTIFFs made on the fly."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from osgeo import gdal, osr

from lovecs_core.model.card import ClassInfo, ModelCard, save_model
from lovecs_core.model.networks import architecture, build_model

CLASSES = [
    ClassInfo(1, "building", "#E6194B"),
    ClassInfo(2, "road", "#FFE119"),
    ClassInfo(3, "water", "#0082C8"),
]


def tiny_card(
    bands: int = 3,
    classes: Sequence[ClassInfo] = CLASSES,
    csn: bool = True,
    gsd: Optional[float] = 1.0,
    tile: int = 64,
    overlap: int = 16,
) -> ModelCard:
    return ModelCard(
        architecture=architecture("tiny", csn=csn, width=8, depth=2),
        classes=list(classes),
        band_names=[f"b{i + 1}" for i in range(bands)],
        normalization={"source": {"mean": [100.0] * bands, "std": [50.0] * bands}},
        gsd=gsd,
        tile_size=tile,
        overlap=overlap,
        name="tiny test model",
    )


def tiny_model_file(path: Path, seed: int = 0, **card_kwargs) -> Path:
    torch.manual_seed(seed)
    card = tiny_card(**card_kwargs)
    model = build_model(card)
    return save_model(path, card, model.state_dict())


def write_geotiff(
    path: Path,
    data: np.ndarray,
    gsd: float = 1.0,
    epsg: int = 32640,
    nodata: Optional[float] = None,
    origin: tuple[float, float] = (500000.0, 2800000.0),
) -> Path:
    """Write a (bands, rows, cols) array as a georeferenced GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    dtype = gdal.GetDataTypeByName(
        {"uint8": "Byte"}.get(data.dtype.name, data.dtype.name.capitalize())
    )
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), data.shape[2], data.shape[1], data.shape[0], dtype, ["TILED=YES"]
    )
    ds.SetGeoTransform((origin[0], gsd, 0.0, origin[1], 0.0, -gsd))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        band.WriteArray(data[i])
    ds = None
    return path


def lonlat_centres(
    grid: gdal.Dataset, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, str]:
    """``(lon/lat of the pixel centres (N x 2), WGS 84's WKT)``: points in another CRS than the
    raster's."""
    from lovecs_core.rasters.corrections import pixel_centres

    native = osr.SpatialReference(wkt=grid.GetProjection())
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    for srs in (native, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs84 = osr.CoordinateTransformation(native, wgs84)
    xy = pixel_centres(grid, rows, cols)
    return np.array([to_wgs84.TransformPoint(x, y)[:2] for x, y in xy]), wgs84.ExportToWkt()
