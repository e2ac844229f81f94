"""The dock's "current view" area: the canvas extent in a layer's CRS, and that part of the
layer's raster as a VRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsRectangle


def canvas_extent_in_layer_crs(iface: Any, layer: QgsRasterLayer) -> Optional[QgsRectangle]:
    """The map canvas's extent in the layer's CRS, clipped to the layer (None: no overlap)."""
    canvas = iface.mapCanvas() if hasattr(iface, "mapCanvas") else None
    if canvas is None:
        return None
    extent = canvas.extent()
    canvas_crs = canvas.mapSettings().destinationCrs()
    if canvas_crs.isValid() and canvas_crs != layer.crs():
        transform = QgsCoordinateTransform(canvas_crs, layer.crs(), QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    extent = extent.intersect(layer.extent())
    return None if extent.isEmpty() else extent


def clip_to_extent(raster: str, extent: Any, vrt: Path) -> Path:
    """A VRT of the part of ``raster`` inside ``extent`` (a QgsRectangle in the raster's CRS)."""
    from osgeo import gdal

    gdal.Translate(
        str(vrt),
        raster,
        format="VRT",
        projWin=[extent.xMinimum(), extent.yMaximum(), extent.xMaximum(), extent.yMinimum()],
    )
    return vrt
