"""What the engine reads for a layer: a GDAL file layer's own file (with ``--extent`` for a part of
it), or, for any other raster layer (XYZ, WMS/WMTS, a QGIS virtual raster), a GeoTIFF QGIS renders
over an extent at a ground sample distance, in the layer's CRS."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsProject,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterFileWriterTask,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsUnitTypes,
)

from .i18n import tr
from .jobs import free_path, safe_name

#: The most pixels rendered from a non-file layer in one run (a 6300 x 6300 image).
MAX_RENDER_PIXELS = 40_000_000


class RenderError(Exception):
    """The layer cannot be rendered as asked; the message says why and what to do."""


@dataclass
class MapInput:
    """The raster the engine maps: ``layer`` (the user's, or a layer of the rendered file), its
    file ``raster``, and ``extent_args`` for the engine (``--extent`` of a part of a file)."""

    layer: QgsRasterLayer
    raster: str
    extent_args: list[str] = field(default_factory=list)
    rendered: bool = False


def is_file_layer(layer: QgsRasterLayer) -> bool:
    """A layer GDAL reads from a file on this computer."""
    return layer.providerType() == "gdal" and Path(layer.source().split("|")[0]).exists()


def _context() -> QgsCoordinateTransformContext:
    return QgsProject.instance().transformContext()


def units_per_metre(
    crs: QgsCoordinateReferenceSystem,
    extent: QgsRectangle,
    context: Optional[QgsCoordinateTransformContext] = None,
) -> float:
    """Layer units per metre on the ground at the centre of ``extent``, as the engine measures
    pixels: geographic and (normal) Mercator units scaled by the cosine of the latitude."""
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    centre = QgsCoordinateTransform(crs, wgs84, context or _context()).transform(extent.center())
    cos_lat = max(math.cos(math.radians(centre.y())), 1e-6)
    if crs.isGeographic():
        return 1.0 / (111_320.0 * cos_lat)
    factor = QgsUnitTypes.fromUnitToUnitFactor(QgsUnitTypes.DistanceMeters, crs.mapUnits())
    return factor / cos_lat if "+proj=merc " in crs.toProj() + " " else factor


def pixel_size(
    layer: QgsRasterLayer,
    extent: QgsRectangle,
    gsd: Optional[float],
    context: Optional[QgsCoordinateTransformContext] = None,
) -> float:
    """The rendered pixel side in layer units: ``gsd`` metres, else the layer's own pixels."""
    if gsd:
        return gsd * units_per_metre(layer.crs(), extent, context)
    if layer.dataProvider().capabilities() & QgsRasterDataProvider.Size:
        return layer.rasterUnitsPerPixelX()
    raise RenderError(
        tr("'{}' has no pixel size of its own: give a ground sample distance (GSD)").format(
            layer.name()
        )
    )


def render_grid(
    layer: QgsRasterLayer,
    extent: QgsRectangle,
    gsd: Optional[float],
    context: Optional[QgsCoordinateTransformContext] = None,
) -> tuple[QgsRectangle, int, int]:
    """``extent`` widened to whole pixels of :func:`pixel_size`, and its columns and rows;
    refused over :data:`MAX_RENDER_PIXELS`."""
    if extent.isEmpty():
        raise RenderError(tr("The area to map does not overlap '{}'.").format(layer.name()))
    size = pixel_size(layer, extent, gsd, context)
    cols = max(1, math.ceil(extent.width() / size - 1e-6))
    rows = max(1, math.ceil(extent.height() / size - 1e-6))
    if cols * rows > MAX_RENDER_PIXELS:
        raise RenderError(
            tr(
                "Rendering '{}' over this area would make {:,} x {:,} pixels, more than the "
                "{:,} a run may render: map a smaller area (the map view, or an extent in "
                "Processing) or give a coarser ground sample distance."
            ).format(layer.name(), cols, rows, MAX_RENDER_PIXELS)
        )
    x0, y1 = extent.xMinimum(), extent.yMaximum()
    return QgsRectangle(x0, y1 - rows * size, x0 + cols * size, y1), cols, rows


def _pipe(layer: QgsRasterLayer) -> QgsRasterPipe:
    """A pipe of a copy of the layer's provider (safe to read in another thread)."""
    pipe = QgsRasterPipe()
    if not pipe.set(layer.dataProvider().clone()):
        raise RenderError(tr("Cannot read '{}'.").format(layer.name()))
    return pipe


def _render_error(name: str, path: Path, error: int) -> RenderError:
    return RenderError(tr("Cannot render '{}' to {} (error {}).").format(name, path, error))


def _writer(path: Path) -> QgsRasterFileWriter:
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    return writer


def render_layer(
    layer: QgsRasterLayer,
    grid: tuple[QgsRectangle, int, int],
    path: Path,
    context: QgsCoordinateTransformContext,
) -> Path:
    """Write ``layer`` on ``grid`` (:func:`render_grid`'s) to the GeoTIFF ``path``, in the
    layer's CRS: a data layer's bands as they are, a rendered one (XYZ, WMS) as RGBA."""
    extent, cols, rows = grid
    error = _writer(path).writeRaster(_pipe(layer), cols, rows, extent, layer.crs(), context)
    if error != QgsRasterFileWriter.NoError or not path.is_file():
        raise _render_error(layer.name(), path, error)
    return path


@dataclass
class RenderPlan:
    """A non-file layer's render, to run in the background: ``task`` writes ``path``."""

    task: QgsRasterFileWriterTask
    path: Path
    name: str

    def result(self) -> MapInput:
        """The rendered file as the engine's input (after the task wrote it)."""
        return rendered_input(self.path, self.name)

    def failure(self, error: int) -> RenderError:
        """What to tell the user when the task reports ``error``; a partial file is removed."""
        self.path.unlink(missing_ok=True)
        if error == QgsRasterFileWriter.WriteCanceled or self.task.isCanceled():
            return RenderError(tr("Rendering '{}' was cancelled.").format(self.name))
        return _render_error(self.name, self.path, error)


def _render_target(
    layer: QgsRasterLayer,
    extent: Optional[QgsRectangle],
    gsd: Optional[float],
    folder: Path,
    context: QgsCoordinateTransformContext,
) -> tuple[tuple[QgsRectangle, int, int], Path]:
    """``(grid, file)`` of a render of ``layer`` over ``extent`` (None: all of it): the grid
    refused when too large before any folder or file is made."""
    area = layer.extent() if extent is None else extent.intersect(layer.extent())
    grid = render_grid(layer, area, gsd, context)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RenderError(
            tr("Cannot create the output folder {}: {}").format(folder, exc)
        ) from None
    return grid, free_path(folder, f"{safe_name(layer.name())}_render", ".tif")


def rendered_input(path: Path, name: str) -> MapInput:
    """A rendered GeoTIFF as the engine's input, with a layer of it named ``name``."""
    rendered = QgsRasterLayer(str(path), name)
    if not rendered.isValid():
        raise RenderError(tr("QGIS cannot open the rendered {}.").format(path))
    return MapInput(rendered, str(path), rendered=True)


def map_input(
    layer: QgsRasterLayer,
    extent: Optional[QgsRectangle],
    gsd: Optional[float],
    folder: Path,
    context: Optional[QgsCoordinateTransformContext] = None,
) -> MapInput:
    """The raster to map for ``layer`` over ``extent`` (layer CRS; None: the whole layer). A
    file layer is read as it is; another is rendered at ``gsd`` metres (None: its own pixels)
    into ``folder`` as ``NAME_render.tif``, in this thread. ``context``: the transform context
    (default: the project's)."""
    if is_file_layer(layer):
        args = [] if extent is None else ["--extent", extent_text(extent)]
        return MapInput(layer, layer.source(), args)
    context = context or _context()
    grid, path = _render_target(layer, extent, gsd, folder, context)
    render_layer(layer, grid, path, context)
    return rendered_input(path, layer.name())


def render_plan(
    layer: QgsRasterLayer,
    extent: Optional[QgsRectangle],
    gsd: Optional[float],
    folder: Path,
    context: Optional[QgsCoordinateTransformContext] = None,
) -> RenderPlan:
    """:func:`map_input`'s render of a non-file ``layer`` as a background task (QGIS's own
    raster writer task), so that QGIS stays responsive while a web layer's tiles arrive."""
    context = context or _context()
    (area, cols, rows), path = _render_target(layer, extent, gsd, folder, context)
    pipe = _pipe(layer)
    task = QgsRasterFileWriterTask(_writer(path), pipe, cols, rows, area, layer.crs(), context)
    return RenderPlan(task, path, layer.name())


def extent_text(extent: QgsRectangle) -> str:
    """``xmin,ymin,xmax,ymax`` for the engine's ``--extent`` (full precision)."""
    values = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    return ",".join(repr(float(v)) for v in values)
