"""Training labels from a vector layer (ROI polygons, lines or points with an integer class
field, as SCP and dzetsaka users keep them): burnt onto each image's pixel grid as a label raster
of class codes (0: no label) that ``lovecs train`` reads like any other.

Torch-free (GDAL/OGR and numpy). Features on none of the images, with unknown codes or without
a geometry are named, never dropped silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from osgeo import gdal

from .corrections import CorrectionsError, burn_features, outside_problem
from .reading import open_dataset


def write_label_raster(
    path: Path, grid: gdal.Dataset, rows: np.ndarray, cols: np.ndarray, codes: np.ndarray
) -> Path:
    """A uint8 GeoTIFF on ``grid``'s pixels: ``codes`` at ``(rows, cols)``, 0 elsewhere."""
    labels = np.zeros((grid.RasterYSize, grid.RasterXSize), np.uint8)
    labels[rows, cols] = codes
    driver = gdal.GetDriverByName("GTiff")
    out = driver.Create(
        str(path), grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Byte, ["COMPRESS=DEFLATE"]
    )
    out.SetGeoTransform(grid.GetGeoTransform())
    out.SetProjection(grid.GetProjection())
    out.GetRasterBand(1).WriteArray(labels)
    out.FlushCache()
    del out
    return path


def vector_label_pairs(
    vector: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    codes: Sequence[int],
    folder: str | os.PathLike[str],
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(image, label raster) pairs, problems``: the vector's features burnt onto every image
    they touch (label rasters written into ``folder``); images without a feature are left out.
    Raises :class:`CorrectionsError` when no feature lies on any image."""
    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    missed: Optional[set[int]] = None
    for i, image in enumerate(images):
        grid = open_dataset(str(image))
        burnt = burn_features(vector, grid, codes, class_field, layer)
        problems = burnt.problems
        missed = set(burnt.outside) if missed is None else missed & set(burnt.outside)
        if burnt.rows.size:
            name = Path(folder) / f"{i:04d}_{Path(image).stem}_labels.tif"
            label = write_label_raster(name, grid, burnt.rows, burnt.cols, burnt.codes)
            pairs.append((Path(image), label))
    if missed:
        problems = problems + [outside_problem(sorted(missed), "every image")]
    if not pairs:
        raise CorrectionsError(
            f"{vector}: no labelled feature lies on the images "
            f"({'; '.join(problems) or 'nothing to burn'})"
        )
    return pairs, problems
