"""How much a run maps, for the dock's estimates: the pixels of the layer or of the map view,
and the layer's GSD over the model's (the engine maps at the model's GSD)."""

from __future__ import annotations

from typing import Any, Optional

from qgis.core import QgsRasterLayer, QgsUnitTypes

from .view_extent import canvas_extent_in_layer_crs


def scene_pixels(iface: Any, layer: QgsRasterLayer, view: bool) -> int:
    """The layer's pixels, or (``view``) those inside the map canvas."""
    pixels = layer.width() * layer.height()
    if view and iface is not None:
        extent = canvas_extent_in_layer_crs(iface, layer)
        if extent is not None:
            px = layer.rasterUnitsPerPixelX() * layer.rasterUnitsPerPixelY()
            pixels = min(pixels, int(extent.width() * extent.height() / max(px, 1e-12)))
    return pixels


def gsd_ratio(layer: QgsRasterLayer, model_gsd: Optional[float]) -> float:
    """The layer's GSD over the model's; 1 when either is unknown (not in metres)."""
    if not model_gsd or layer.crs().mapUnits() != QgsUnitTypes.DistanceMeters:
        return 1.0
    return float(layer.rasterUnitsPerPixelX()) / model_gsd
