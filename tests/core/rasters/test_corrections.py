"""Corrections from a vector file onto a raster grid: any CRS, named problems, no silent drop."""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from lovecs_core.rasters.corrections import (
    CorrectionsError,
    pixel_centres,
    read_corrections,
    write_points,
)
from tests.core.helpers import lonlat_centres, write_geotiff

CODES = [1, 2, 3]


@pytest.fixture
def grid(tmp_path: Path) -> gdal.Dataset:
    path = write_geotiff(tmp_path / "r.tif", np.zeros((3, 40, 50), np.uint8), gsd=2.0)
    return gdal.Open(str(path))


def test_points_land_on_their_pixels_with_their_codes(tmp_path, grid):
    rows, cols = np.array([0, 5, 39, 39]), np.array([0, 7, 49, 49])  # two points share a pixel
    path = write_points(
        tmp_path / "p.gpkg", pixel_centres(grid, rows, cols), [1, 2, 3, 3], grid.GetProjection()
    )
    corr = read_corrections(path, grid, CODES)
    got = sorted(zip(corr.rows.tolist(), corr.cols.tolist(), corr.codes.tolist()))
    assert got == [(0, 0, 1), (5, 7, 2), (39, 49, 3), (39, 49, 3)]
    assert corr.features_used == 4 and corr.problems == []
    assert corr.counts() == {1: 1, 2: 1, 3: 2}
    assert corr.summary()["sha256"] and corr.summary()["per_class"] == {"1": 1, "2": 1, "3": 2}


def test_points_in_another_crs_are_reprojected(tmp_path, grid):
    rows, cols = np.array([3, 20]), np.array([4, 30])
    lonlat, wkt = lonlat_centres(grid, rows, cols)
    path = write_points(tmp_path / "p.geojson", lonlat, [2, 3], wkt)
    corr = read_corrections(path, grid, CODES)
    assert sorted(zip(corr.rows.tolist(), corr.cols.tolist())) == [(3, 4), (20, 30)]


def test_outside_and_unknown_codes_are_named_not_dropped_silently(tmp_path, grid):
    xy = pixel_centres(grid, np.array([1, 2, 2]), np.array([1, 2, 3]))
    xy[1] += 10_000  # far outside the raster
    path = write_points(tmp_path / "p.gpkg", xy, [1, 2, 9], grid.GetProjection())
    corr = read_corrections(path, grid, CODES)
    assert corr.features_used == 1 and corr.codes.tolist() == [1]
    text = " ".join(corr.problems)
    assert "class code 9" in text and "outside the raster" in text and "id 2" in text


def test_lines_and_polygons_burn_every_pixel_they_touch(tmp_path, grid):
    gt = grid.GetGeoTransform()
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "s.gpkg"))
    lyr = source.CreateLayer(
        "corrections", osr.SpatialReference(wkt=grid.GetProjection()), ogr.wkbUnknown
    )
    lyr.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    x0, y0 = gt[0], gt[3]
    for code, wkt in (
        (1, f"LINESTRING ({x0 + 1} {y0 - 11}, {x0 + 41} {y0 - 11})"),  # row 5, 20 pixels
        (
            3,
            f"POLYGON (({x0 + 60} {y0 - 60}, {x0 + 70} {y0 - 60}, {x0 + 70} {y0 - 70}, {x0 + 60} {y0 - 70}, {x0 + 60} {y0 - 60}))",
        ),
    ):
        feature = ogr.Feature(lyr.GetLayerDefn())
        feature.SetField("class", code)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        lyr.CreateFeature(feature)
    source = None
    corr = read_corrections(tmp_path / "s.gpkg", grid, CODES)
    assert set(corr.rows[corr.codes == 1].tolist()) == {5}
    assert corr.cols[corr.codes == 1].size == 21
    assert (corr.codes == 3).sum() == 25  # 10 m x 10 m at 2 m: 5 x 5 pixels
    assert corr.counts() == {1: 1, 3: 1}


def test_an_empty_layer_or_a_missing_field_is_refused_clearly(tmp_path, grid):
    empty = write_points(tmp_path / "e.gpkg", np.zeros((0, 2)), [], grid.GetProjection())
    with pytest.raises(CorrectionsError, match="holds no feature"):
        read_corrections(empty, grid, CODES)
    path = write_points(
        tmp_path / "p.gpkg",
        pixel_centres(grid, np.array([1]), np.array([1])),
        [1],
        grid.GetProjection(),
        class_field="klasse",
    )
    with pytest.raises(CorrectionsError, match="no field 'class'"):
        read_corrections(path, grid, CODES, class_field="class")
    assert read_corrections(path, grid, CODES).codes.tolist() == [1]  # the only integer field
    with pytest.raises(CorrectionsError, match="not found"):
        read_corrections(tmp_path / "missing.gpkg", grid, CODES)
