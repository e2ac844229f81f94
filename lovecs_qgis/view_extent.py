"""The dock's area to map: the canvas extent in a layer's CRS, and what the engine reads for it
(the layer's file with ``--extent``, or the layer rendered over it, :mod:`.layer_render`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsRectangle

from .i18n import tr
from .layer_render import MapInput, RenderError, RenderPlan, map_input, render_plan


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


def dock_area(iface: Any, layer: QgsRasterLayer, view: bool) -> Optional[QgsRectangle]:
    """The area to map in the layer's CRS: None for all of it, or with ``view`` the part the
    map canvas shows. Raises :class:`~lovecs_qgis.layer_render.RenderError` with the reason."""
    if not view:
        return None
    extent = canvas_extent_in_layer_crs(iface, layer)
    if extent is None:
        raise RenderError(tr("The map view does not overlap the layer."))
    return extent


def dock_input(
    iface: Any, layer: QgsRasterLayer, view: bool, gsd: Optional[float], folder: Path
) -> MapInput:
    """What the engine maps for ``layer`` over :func:`dock_area`; a layer that is not a file is
    rendered at ``gsd`` metres into ``folder`` (in this thread: :func:`dock_render` renders in
    the background). Raises :class:`~lovecs_qgis.layer_render.RenderError` with the reason."""
    return map_input(layer, dock_area(iface, layer, view), gsd, folder)


def dock_render(
    iface: Any, layer: QgsRasterLayer, view: bool, gsd: Optional[float], folder: Path
) -> RenderPlan:
    """The background render of a non-file ``layer`` over :func:`dock_area`."""
    return render_plan(layer, dock_area(iface, layer, view), gsd, folder)
