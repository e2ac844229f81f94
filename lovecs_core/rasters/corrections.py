"""Corrections (or reference points): a vector layer of points, lines or polygons whose integer
class field holds the model card's class codes, burnt onto a raster's pixel grid.

Torch-free (GDAL/OGR and numpy): the plugin checks a layer with the same function. Features in
another CRS are reprojected; a feature outside the raster, with an unknown code or without a
geometry is named in :attr:`Corrections.problems` and left out, never dropped silently.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from ..contract import CORRECTIONS_CLASS_FIELD, CORRECTIONS_LAYER

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

_INTEGER_TYPES = (ogr.OFTInteger, ogr.OFTInteger64)
#: At most this many feature ids are named in one message.
NAMED_IDS = 8


class CorrectionsError(ValueError):
    """The corrections cannot be used at all (no file, no class field, nothing left)."""


@dataclass
class Corrections:
    """Labelled pixels on a raster grid: ``rows``, ``cols`` (0-based, on the grid) and ``codes``
    (class codes), one entry a pixel; ``feature`` is the id of the feature each pixel came from."""

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    feature: np.ndarray
    features_used: int
    problems: list[str] = field(default_factory=list)
    source: str = ""
    sha256: str = ""

    @property
    def pixel_count(self) -> int:
        return int(self.rows.size)

    def counts(self) -> dict[int, int]:
        """Features per class code (a feature counts once, whatever its size)."""
        pairs = np.unique(np.stack([self.feature, self.codes]), axis=1)
        codes, n = np.unique(pairs[1], return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, n)}

    def summary(self) -> dict[str, object]:
        """For a model card: how many corrections of each class, and the file they came from."""
        return {
            "features": self.features_used,
            "pixels": self.pixel_count,
            "per_class": {str(k): v for k, v in sorted(self.counts().items())},
            "file": self.source,
            "sha256": self.sha256,
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def named_ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:NAMED_IDS])
    more = f" and {len(ids) - NAMED_IDS} more" if len(ids) > NAMED_IDS else ""
    return f"{shown}{more}"


def open_layer(path: str | os.PathLike[str], layer: Optional[str] = None) -> tuple[object, object]:
    """``(data source, layer)``: the named layer, the corrections layer, or the only one."""
    text = str(path)
    if not text.startswith("/vsi") and not Path(text).exists():
        raise CorrectionsError(f"corrections file not found: {text}")
    try:
        source = ogr.Open(text)
    except RuntimeError as exc:
        raise CorrectionsError(f"{text} is not a vector file GDAL can read ({exc})") from exc
    if source is None or source.GetLayerCount() == 0:
        raise CorrectionsError(f"{text} holds no vector layer")
    names = [source.GetLayerByIndex(i).GetName() for i in range(source.GetLayerCount())]
    if layer is None:
        layer = CORRECTIONS_LAYER if CORRECTIONS_LAYER in names else names[0]
        if len(names) > 1 and CORRECTIONS_LAYER not in names:
            raise CorrectionsError(
                f"{text} holds {len(names)} layers ({', '.join(names)}): name one (--layer)"
            )
    if layer not in names:
        raise CorrectionsError(f"{text} has no layer {layer!r} (it has {', '.join(names)})")
    return source, source.GetLayerByName(layer)


def class_field_name(lyr: object, wanted: Optional[str], where: str) -> str:
    """The integer class field: ``wanted``, else ``class``, else the only integer field."""
    defn = lyr.GetLayerDefn()  # type: ignore[attr-defined]
    fields = {
        defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i) for i in range(defn.GetFieldCount())
    }
    integers = [n for n, f in fields.items() if f.GetType() in _INTEGER_TYPES]
    if wanted is None:
        if CORRECTIONS_CLASS_FIELD in integers:
            return CORRECTIONS_CLASS_FIELD
        if len(integers) == 1:
            return integers[0]
        raise CorrectionsError(
            f"{where}: say which field holds the class codes (--class-field); its integer "
            f"fields: {', '.join(integers) or 'none'}"
        )
    if wanted not in fields:
        raise CorrectionsError(
            f"{where} has no field {wanted!r} (its fields: {', '.join(fields) or 'none'})"
        )
    if fields[wanted].GetType() not in _INTEGER_TYPES:
        raise CorrectionsError(
            f"{where}: field {wanted!r} is not an integer field: it must hold class codes"
        )
    return wanted


def _transform(
    lyr: object, grid: gdal.Dataset, where: str
) -> Optional[osr.CoordinateTransformation]:
    layer_srs = lyr.GetSpatialRef()  # type: ignore[attr-defined]
    wkt = grid.GetProjection()
    if layer_srs is None or not wkt:
        return None  # nothing to reproject with: taken as the raster's coordinates
    grid_srs = osr.SpatialReference(wkt=wkt)
    for srs in (layer_srs, grid_srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if layer_srs.IsSame(grid_srs):
        return None
    return osr.CoordinateTransformation(layer_srs, grid_srs)


def _envelope_window(
    geometries: list[tuple[int, ogr.Geometry]], grid: gdal.Dataset
) -> tuple[int, int, int, int]:
    """``(col0, row0, cols, rows)``: the grid's pixels under the geometries' envelope (burning
    only there keeps a huge raster cheap); ``cols`` or ``rows`` is 0 when none is on the grid."""
    gt = grid.GetGeoTransform()
    inverse = gdal.InvGeoTransform(gt)
    xs, ys = [], []
    for _, geom in geometries:
        x0, x1, y0, y1 = geom.GetEnvelope()
        for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
            col, row = gdal.ApplyGeoTransform(inverse, x, y)
            xs.append(col)
            ys.append(row)
    c0 = max(0, int(np.floor(min(xs))) - 1)
    r0 = max(0, int(np.floor(min(ys))) - 1)
    c1 = min(grid.RasterXSize, int(np.ceil(max(xs))) + 1)
    r1 = min(grid.RasterYSize, int(np.ceil(max(ys))) + 1)
    return c0, r0, max(0, c1 - c0), max(0, r1 - r0)


def _burn(
    geometries: list[tuple[int, ogr.Geometry]], grid: gdal.Dataset
) -> tuple[np.ndarray, int, int]:
    """``(index, row0, col0)``: an int32 array of feature index + 1 (0: no feature; later
    features win) over the window of the grid under the features, and where it starts."""
    c0, r0, width, height = _envelope_window(geometries, grid)
    if width == 0 or height == 0:
        return np.zeros((0, 0), np.int32), 0, 0
    gt = list(grid.GetGeoTransform())
    gt[0], gt[3] = gt[0] + c0 * gt[1] + r0 * gt[2], gt[3] + c0 * gt[4] + r0 * gt[5]
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(gt)
    mem.SetProjection(grid.GetProjection())
    vec = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference(wkt=grid.GetProjection()) if grid.GetProjection() else None
    lyr = vec.CreateLayer("burn", srs=srs, geom_type=ogr.wkbUnknown)
    lyr.CreateField(ogr.FieldDefn("idx", ogr.OFTInteger))
    for index, geom in geometries:
        feature = ogr.Feature(lyr.GetLayerDefn())
        feature.SetField("idx", index + 1)
        feature.SetGeometry(geom)
        lyr.CreateFeature(feature)
    gdal.RasterizeLayer(mem, [1], lyr, options=["ATTRIBUTE=idx", "ALL_TOUCHED=TRUE"])
    return mem.GetRasterBand(1).ReadAsArray(), r0, c0


def _point_pixels(
    points: list[tuple[int, ogr.Geometry]], grid: gdal.Dataset
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixel under each point (several points may share one); those off the grid left out."""
    inverse = gdal.InvGeoTransform(grid.GetGeoTransform())
    found = []
    for index, geom in points:
        col, row = gdal.ApplyGeoTransform(inverse, geom.GetX(), geom.GetY())
        if 0 <= row < grid.RasterYSize and 0 <= col < grid.RasterXSize:
            found.append((int(row), int(col), index))
    table = np.asarray(found, np.int64).reshape(-1, 3)
    return table[:, 0], table[:, 1], table[:, 2]


def _pixels(
    geometries: list[tuple[int, ogr.Geometry]], grid: gdal.Dataset
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, feature index)`` of every labelled pixel: points placed directly, lines
    and polygons burnt (every pixel they touch)."""
    single = (ogr.wkbPoint, ogr.wkbPoint25D)
    points = [item for item in geometries if item[1].GetGeometryType() in single]
    shapes = [item for item in geometries if item[1].GetGeometryType() not in single]
    rows, cols, index = _point_pixels(points, grid)
    if shapes:
        burnt, row0, col0 = _burn(shapes, grid)
        r, c = np.nonzero(burnt)
        rows = np.concatenate([rows, r + row0])
        cols = np.concatenate([cols, c + col0])
        index = np.concatenate([index, burnt[r, c].astype(np.int64) - 1])
    return rows, cols, index


@dataclass
class Burnt:
    """A vector file's usable features on one grid: every labelled pixel (``rows``, ``cols``,
    ``codes``, ``feature`` ids), the ids of usable features that miss the grid (``outside``), and
    the features left out for their code or geometry (``problems``)."""

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    feature: np.ndarray
    outside: list[int]
    problems: list[str]
    features: int


def _usable_geometries(
    path: str | os.PathLike[str],
    grid: gdal.Dataset,
    codes: Sequence[int],
    class_field: Optional[str],
    layer: Optional[str],
) -> tuple[list[tuple[int, ogr.Geometry]], list[int], list[int], list[str]]:
    """``(geometries in the grid's CRS, their feature ids, their codes, problems)``; raises
    :class:`CorrectionsError` when the layer holds no feature at all."""
    where = str(path)
    source, lyr = open_layer(path, layer)
    name = class_field_name(lyr, class_field, where)
    transform = _transform(lyr, grid, where)
    known = {int(c) for c in codes}
    geometries: list[tuple[int, ogr.Geometry]] = []
    feature_ids: list[int] = []
    feature_codes: list[int] = []
    unknown: dict[int, list[int]] = {}
    empty: list[int] = []
    for feature in lyr:  # type: ignore[attr-defined]
        fid = int(feature.GetFID())
        geom = feature.GetGeometryRef()
        value = feature.GetField(name)
        if geom is None or geom.IsEmpty():
            empty.append(fid)
            continue
        if value is None or int(value) not in known:
            unknown.setdefault(-1 if value is None else int(value), []).append(fid)
            continue
        geom = geom.Clone()
        if transform is not None:
            geom.Transform(transform)
        geometries.append((len(geometries), geom))
        feature_ids.append(fid)
        feature_codes.append(int(value))
    del source
    if not geometries and not empty and not unknown:
        raise CorrectionsError(f"{where} holds no feature: add corrections first")
    return geometries, feature_ids, feature_codes, _problems(unknown, empty, sorted(known))


def burn_features(
    path: str | os.PathLike[str],
    grid: gdal.Dataset,
    codes: Sequence[int],
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
) -> Burnt:
    """The usable features of the vector file ``path`` burnt onto the pixel grid of ``grid``:
    points on their pixel, lines and polygons on every pixel they touch."""
    geometries, feature_ids, feature_codes, problems = _usable_geometries(
        path, grid, codes, class_field, layer
    )
    rows, cols, index = _pixels(geometries, grid) if geometries else (np.zeros(0, np.int64),) * 3
    hit = np.zeros(len(geometries), bool)
    hit[np.unique(index)] = True
    return Burnt(
        rows.astype(np.int64),
        cols.astype(np.int64),
        np.asarray(feature_codes, np.int64)[index].astype(np.uint8),
        np.asarray(feature_ids, np.int64)[index],
        [feature_ids[i] for i in np.flatnonzero(~hit)],
        problems,
        int(hit.sum()),
    )


def outside_problem(outside: Sequence[int], what: str = "the raster") -> str:
    """The message naming features that lie outside ``what``."""
    return f"{len(outside)} feature(s) lie outside {what} (id {named_ids(outside)}): left out"


def read_corrections(
    path: str | os.PathLike[str],
    grid: gdal.Dataset,
    codes: Sequence[int],
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
) -> Corrections:
    """The labelled pixels of the corrections file ``path`` on the pixel grid of ``grid``.

    ``codes``: the class codes (the model's); a feature with another code is left out and named in
    ``problems``, as is one outside the raster or without a geometry. Raises
    :class:`CorrectionsError` when no usable feature is left (or none was there)."""
    burnt = burn_features(path, grid, codes, class_field, layer)
    problems = burnt.problems + ([outside_problem(burnt.outside)] if burnt.outside else [])
    if burnt.rows.size == 0:
        raise CorrectionsError(
            f"{path}: no usable correction ({'; '.join(problems) or 'nothing on the raster'})"
        )
    return Corrections(
        burnt.rows,
        burnt.cols,
        burnt.codes,
        burnt.feature,
        burnt.features,
        problems,
        str(path),
        file_sha256(path) if Path(str(path)).is_file() else "",
    )


def _problems(unknown: dict[int, list[int]], empty: list[int], known: list[int]) -> list[str]:
    problems = []
    for code, fids in sorted(unknown.items()):
        what = "no class code" if code == -1 else f"class code {code}"
        problems.append(
            f"{len(fids)} feature(s) with {what} (id {named_ids(fids)}): left out; the classes' "
            f"codes are {', '.join(str(c) for c in known)}"
        )
    if empty:
        problems.append(
            f"{len(empty)} feature(s) without a geometry (id {named_ids(empty)}): left out"
        )
    return problems


def write_points(
    path: str | os.PathLike[str],
    xy: np.ndarray,
    codes: Sequence[int],
    wkt: str,
    class_field: str = CORRECTIONS_CLASS_FIELD,
) -> Path:
    """A GeoPackage (or any OGR format by suffix) of points ``xy`` (N x 2, in the CRS ``wkt``)
    with their class ``codes``: simulated clicks for benchmarks and tests."""
    path = Path(path)
    driver = ogr.GetDriverByName("GPKG" if path.suffix.lower() == ".gpkg" else "GeoJSON")
    if path.exists():
        driver.DeleteDataSource(str(path))
    source = driver.CreateDataSource(str(path))
    srs = osr.SpatialReference(wkt=wkt) if wkt else None
    lyr = source.CreateLayer(CORRECTIONS_LAYER, srs=srs, geom_type=ogr.wkbPoint)
    lyr.CreateField(ogr.FieldDefn(class_field, ogr.OFTInteger))
    for (x, y), code in zip(np.asarray(xy, float), codes):
        feature = ogr.Feature(lyr.GetLayerDefn())
        feature.SetField(class_field, int(code))
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(float(x), float(y))
        feature.SetGeometry(point)
        lyr.CreateFeature(feature)
    source = None  # noqa: F841 - closes the file
    return path


def pixel_centres(grid: gdal.Dataset, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Map coordinates (N x 2) of pixel centres on ``grid``."""
    gt = grid.GetGeoTransform()
    c, r = np.asarray(cols, float) + 0.5, np.asarray(rows, float) + 0.5
    return np.stack([gt[0] + c * gt[1] + r * gt[2], gt[3] + c * gt[4] + r * gt[5]], axis=1)
