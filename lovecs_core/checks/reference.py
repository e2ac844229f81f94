"""Checks of reference labels before ``lovecs evaluate`` compares a map with them: the same grid
as the map (size, geotransform, CRS) and one band of class codes (not an RGB image). GDAL only.

A label raster holding no labelled pixel is refused by the evaluation itself, which reads every
pixel (:func:`no_labels_message` words it).
"""

from __future__ import annotations

from typing import Any, Sequence

from .outputs import CheckError

#: Two geotransforms agree when every coefficient differs by less than this share of a pixel.
GRID_TOLERANCE = 1e-3


def describe_grid(ds: Any, name: str) -> str:
    """A raster's grid in words: ``the map pred.tif: 40 x 40 px of 1 x 1, origin (500000,
    2800000), EPSG:32640``."""
    gt = ds.GetGeoTransform(can_return_null=True)
    where = (
        "no geotransform"
        if gt is None
        else f"{abs(gt[1]):g} x {abs(gt[5]):g} pixels, origin ({gt[0]:.10g}, {gt[3]:.10g})"
    )
    size = f"{ds.RasterXSize} x {ds.RasterYSize} px"
    return f"the {name} {ds.GetDescription()}: {size} of {where}, {_crs_name(ds)}"


def _crs_name(ds: Any) -> str:
    srs = ds.GetSpatialRef()
    if srs is None:
        return "no CRS"
    code = srs.GetAuthorityCode(None)
    return f"{srs.GetAuthorityName(None)}:{code}" if code else (srs.GetName() or "a CRS")


def _same_transform(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    pixel = max(abs(a[1]), abs(a[5]), abs(b[1]), abs(b[5]), 1e-12)
    return all(abs(x - y) <= GRID_TOLERANCE * pixel for x, y in zip(a, b))


def _same_crs(a: Any, b: Any) -> bool:
    sa, sb = a.GetSpatialRef(), b.GetSpatialRef()
    if sa is None or sb is None:
        return sa is None and sb is None
    return bool(sa.IsSame(sb))


def check_same_grid(pred: Any, labels: Any) -> None:
    """The map and the labels share size, geotransform and CRS; else a :class:`CheckError`
    naming both grids and how to bring the labels onto the map's."""
    if (
        (pred.RasterXSize, pred.RasterYSize) == (labels.RasterXSize, labels.RasterYSize)
        and _same_transform(
            pred.GetGeoTransform(can_return_null=True),
            labels.GetGeoTransform(can_return_null=True),
        )
        and _same_crs(pred, labels)
    ):
        return
    raise CheckError(
        f"the map and the labels are not on the same grid: {describe_grid(pred, 'map')}; "
        f"{describe_grid(labels, 'labels')}; warp the labels onto the map's grid (e.g. "
        "gdalwarp -r near with the map's CRS, extent and pixel size) and evaluate again"
    )


def check_label_bands(labels: Any) -> None:
    """Reference labels are one band of class codes: a raster with several data bands (an RGB
    image, say) is refused."""
    from osgeo import gdal

    data = [
        b
        for b in range(1, labels.RasterCount + 1)
        if labels.GetRasterBand(b).GetColorInterpretation() != gdal.GCI_AlphaBand
    ]
    if len(data) > 1:
        raise CheckError(
            f"the labels {labels.GetDescription()} have {len(data)} bands (an RGB image?): "
            "reference labels are one band of class codes (0 = no label)"
        )


def no_labels_message(labels: str, codes: Sequence[int]) -> str:
    """Why a label raster with no labelled pixel of the classes cannot be compared."""
    listed = ", ".join(map(str, codes)) or "none"
    return (
        f"the labels {labels} hold no labelled pixel of the classes ({listed}): every pixel "
        "is 0 (no label), nodata or another code; nothing to compare"
    )
