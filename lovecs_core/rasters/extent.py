"""Extents given on the command line (``--extent xmin,ymin,xmax,ymax[,crs]``): parsed, brought
into a raster's CRS, and the part of a raster inside one written as a VRT."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from osgeo import gdal, osr

from .reading import RasterError, open_dataset, window_from_extent

Bounds = tuple[float, float, float, float]


def parse_extent(text: Optional[str]) -> Optional[tuple[Bounds, str]]:
    """``"xmin,ymin,xmax,ymax[,crs]"`` -> ``((xmin, ymin, xmax, ymax), crs)``, ``crs`` empty when
    not given (the raster's CRS) or any definition GDAL reads (``EPSG:4326``, WKT, PROJ);
    empty/None -> None. Raises ValueError with the expected form."""
    if not text:
        return None
    parts = text.split(",", 4)
    try:
        values = [float(v) for v in parts[:4]]
    except ValueError as exc:
        raise ValueError(f"extent must be xmin,ymin,xmax,ymax[,crs] (numbers): {text!r}") from exc
    if len(values) != 4:
        raise ValueError(f"extent must have four numbers xmin,ymin,xmax,ymax[,crs]: {text!r}")
    crs = parts[4].strip() if len(parts) == 5 else ""
    return (values[0], values[1], values[2], values[3]), crs


def _srs(definition: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    try:
        failed = srs.SetFromUserInput(definition)
    except RuntimeError:
        failed = True
    if failed:
        raise ValueError(f"extent CRS not understood: {definition!r} (e.g. EPSG:4326)")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def bounds_in_raster_crs(bounds: Sequence[float], crs: str, ds: gdal.Dataset) -> Bounds:
    """``bounds`` given in ``crs`` (empty: already the raster's) as a box in the raster's CRS
    (the box around the transformed one)."""
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not crs:
        return xmin, ymin, xmax, ymax
    wkt = ds.GetProjection()
    if not wkt:
        raise RasterError("an extent in another CRS needs a raster with a CRS")
    transform = osr.CoordinateTransformation(_srs(crs), _srs(wkt))
    x0, y0, x1, y1 = transform.TransformBounds(xmin, ymin, xmax, ymax, 21)
    return x0, y0, x1, y1


def raster_extent(text: Optional[str], raster: str) -> Optional[Bounds]:
    """The ``--extent`` text as a box in ``raster``'s CRS (None: no extent given)."""
    parsed = parse_extent(text)
    if parsed is None:
        return None
    bounds, crs = parsed
    return bounds_in_raster_crs(bounds, crs, open_dataset(raster)) if crs else bounds


def extent_vrt_path(out: str | os.PathLike[str]) -> Path:
    """Where a command whose main output is ``out`` keeps the clipped scene it worked on."""
    out = Path(out)
    return out.with_name(f"{out.stem}_extent.vrt")


def clip_to_extent(raster: str, bounds: Sequence[float], vrt: Path) -> Path:
    """Write a VRT of the whole pixels of ``raster`` inside ``bounds`` (raster CRS) to ``vrt``
    (the grid ``predict --extent`` maps). An existing identical file is left untouched, so a
    resumed adaptation sees the same scene file."""
    ds = open_dataset(raster)
    window = window_from_extent(ds, bounds)
    part = vrt.with_name(f"{vrt.name}.{os.getpid()}.part")
    src_win = [window.xoff, window.yoff, window.xsize, window.ysize]
    written = gdal.Translate(str(part), ds, format="VRT", srcWin=src_win)
    if written is None:
        raise RasterError(f"cannot write {vrt}")
    written = None  # closed: the file is complete
    if vrt.is_file() and vrt.read_bytes() == part.read_bytes():
        part.unlink()
    else:
        os.replace(part, vrt)
    return vrt


def clipped_scene(raster: str, text: Optional[str], out: str | os.PathLike[str]) -> str:
    """``raster`` itself, or with an ``--extent`` ``text``, the VRT of its part inside it, kept
    beside ``out`` (:func:`extent_vrt_path`)."""
    bounds = raster_extent(text, raster)
    if bounds is None:
        return raster
    return str(clip_to_extent(raster, bounds, extent_vrt_path(out)))
