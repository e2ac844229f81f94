"""Accuracy of a class map raster from a vector layer of reference points (or polygons): the
features are burnt onto the map's grid (:func:`~lovecs_core.rasters.corrections.read_corrections`,
which reprojects them and names features outside the map or with unknown codes), the map is
read once by row strips for its class areas and its codes at the sample pixels, and
:class:`~.points.PointAccuracy` does the statistics.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import numpy as np

from ..rasters.corrections import (
    CorrectionsError,
    class_field_name,
    named_ids,
    open_layer,
    read_corrections,
)
from .metrics import _category_names, code_strips
from .points import PIXEL, POINT, PointAccuracy, error_matrix

log = logging.getLogger(__name__)


def reference_codes(
    path: str | os.PathLike[str], class_field: Optional[str] = None, layer: Optional[str] = None
) -> list[int]:
    """The class codes 1..255 the reference features hold; raises :class:`CorrectionsError`
    when the layer holds no feature."""
    source, lyr = open_layer(path, layer)
    name = class_field_name(lyr, class_field, str(path))
    if lyr.GetFeatureCount() == 0:  # type: ignore[attr-defined]
        raise CorrectionsError(f"{path}: the reference layer holds no feature")
    values = {feature.GetField(name) for feature in lyr}  # type: ignore[attr-defined]
    del source
    return sorted(int(v) for v in values if v is not None and 1 <= int(v) <= 255)


def sample_map(
    band: Any, rows: np.ndarray, cols: np.ndarray, reporter: Any = None, strip: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """``(histogram, values)``: the map's pixels per code 0..255 and its codes at the pixels
    ``rows, cols``, in one pass of row strips (nodata reads as 0)."""
    histogram = np.zeros(256, np.int64)
    values = np.zeros(rows.size, np.uint8)
    height = band.YSize
    for y, codes in code_strips(band, strip):
        histogram += np.bincount(codes.ravel(), minlength=256)
        here = (rows >= y) & (rows < y + codes.shape[0])
        values[here] = codes[rows[here] - y, cols[here]]
        if reporter is not None:
            done = y + codes.shape[0]
            reporter("evaluating", done / height, f"row {done}/{height}")
    return histogram, values


def unmapped_problems(values: np.ndarray, feature: np.ndarray, codes: Sequence[int]) -> list[str]:
    """Messages for sample pixels where the map has no class (0, nodata) or a code that is not
    one of ``codes``."""
    problems = []
    nodata = values == 0
    if nodata.any():
        ids = np.unique(feature[nodata]).tolist()
        problems.append(
            f"{len(ids)} feature(s) fall on map pixels without a class (nodata or 0) "
            f"(id {named_ids(ids)}): left out"
        )
    other = ~nodata & ~np.isin(values, list(codes))
    if other.any():
        ids = np.unique(feature[other]).tolist()
        found = ", ".join(map(str, np.unique(values[other]).tolist()))
        problems.append(
            f"{len(ids)} feature(s) fall on map pixels of code(s) {found} that are not among the "
            f"classes (id {named_ids(ids)}): left out"
        )
    return problems


def evaluate_points(
    pred_path: str | os.PathLike[str],
    points_path: str | os.PathLike[str],
    codes: Optional[Sequence[int]] = None,
    names: Optional[Sequence[str]] = None,
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
    reporter: Any = None,
    confidence: float = 0.95,
) -> PointAccuracy:
    """Accuracy of the map ``pred_path`` at the reference features of ``points_path`` (any CRS;
    integer class field). Class codes default to those found in the map or the reference.
    Features left out are logged as warnings and listed in ``problems``."""
    from ..rasters.reading import open_dataset, pixel_size_metres

    grid = open_dataset(pred_path)
    found = reference_codes(points_path, class_field, layer)
    ref = read_corrections(points_path, grid, codes or found, class_field, layer)
    band = grid.GetRasterBand(1)
    histogram, values = sample_map(band, ref.rows, ref.cols, reporter)
    if codes is None:
        codes = sorted({*found, *(np.flatnonzero(histogram[1:]) + 1).tolist()})
    codes = list(codes)
    names = list(names) if names is not None else _category_names(band, codes)
    problems = ref.problems + unmapped_problems(values, ref.feature, codes)
    for problem in problems:
        log.warning("reference %s: %s", points_path, problem)
    keep = np.isin(values, codes)
    if not keep.any():
        raise CorrectionsError(
            f"{points_path}: no reference feature falls on a mapped pixel ({'; '.join(problems)})"
        )
    _, per_feature = np.unique(ref.feature[keep], return_counts=True)
    px = pixel_size_metres(grid)
    return PointAccuracy(
        codes,
        names,
        error_matrix(values[keep], ref.codes[keep], codes),
        unit=POINT if (per_feature == 1).all() else PIXEL,
        map_counts=histogram[codes],
        pixel_area=px * px if px else None,
        confidence=confidence,
        extra={
            "prediction": str(pred_path),
            "points": str(points_path),
            "features": int(per_feature.size),
            "problems": problems,
        },
    )
