"""Opening a raster for a check without GDAL printing errors of its own (GDAL, no torch)."""

from __future__ import annotations

import os
from typing import Any


class quiet_gdal:
    """Silence GDAL's error printing (and raise no exceptions) inside the block."""

    def __enter__(self) -> "quiet_gdal":
        from osgeo import gdal

        gdal.PushErrorHandler("CPLQuietErrorHandler")
        return self

    def __exit__(self, *exc: object) -> None:
        from osgeo import gdal

        gdal.PopErrorHandler()


def open_quietly(raster: Any) -> Any:
    """``raster`` (a path or an open GDAL dataset) as a dataset; None when GDAL cannot open it
    (the reader reports that later, in its own words). No GDAL error printing."""
    if not isinstance(raster, (str, os.PathLike)):
        return raster
    from osgeo import gdal

    try:
        with quiet_gdal():
            return gdal.Open(str(raster))
    except RuntimeError:
        return None
