"""Extents from the command line: parsed, brought into the raster's CRS, clipped as a VRT."""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.rasters.extent import (
    clip_to_extent,
    clipped_scene,
    extent_vrt_path,
    parse_extent,
    raster_extent,
)
from lovecs_core.rasters.reading import RasterError
from tests.core.helpers import write_geotiff

ORIGIN = (500000.0, 2800000.0)  # UTM 40N, 1 m pixels


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    data = np.arange(3 * 60 * 80, dtype=np.uint16).reshape(3, 60, 80)
    return write_geotiff(tmp_path / "scene.tif", data, origin=ORIGIN)


def test_parse_four_numbers_and_an_optional_crs():
    assert parse_extent(None) is None and parse_extent("") is None
    assert parse_extent("1, 2,3,4") == ((1.0, 2.0, 3.0, 4.0), "")
    assert parse_extent("1,2,3,4,EPSG:4326") == ((1.0, 2.0, 3.0, 4.0), "EPSG:4326")
    with pytest.raises(ValueError, match="four numbers"):
        parse_extent("1,2,3")
    with pytest.raises(ValueError, match="numbers"):
        parse_extent("a,2,3,4")


def test_clip_has_the_requested_georeference(raster: Path, tmp_path: Path):
    x0, y1 = ORIGIN[0] + 10, ORIGIN[1] - 5
    bounds = (x0, y1 - 30, x0 + 40, y1)
    vrt = clip_to_extent(str(raster), bounds, tmp_path / "clip.vrt")
    ds = gdal.Open(str(vrt))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (40, 30, 3)
    assert ds.GetGeoTransform() == (x0, 1.0, 0.0, y1, 0.0, -1.0)
    full = gdal.Open(str(raster)).ReadAsArray()
    assert np.array_equal(ds.ReadAsArray(), full[:, 5:35, 10:50])


def test_an_identical_clip_keeps_the_file(raster: Path, tmp_path: Path):
    out = tmp_path / "adapted.lovecs"
    text = f"{ORIGIN[0]},{ORIGIN[1] - 20},{ORIGIN[0] + 20},{ORIGIN[1]}"
    first = clipped_scene(str(raster), text, out)
    assert Path(first) == extent_vrt_path(out) == tmp_path / "adapted_extent.vrt"
    stamp = Path(first).stat().st_mtime_ns
    assert clipped_scene(str(raster), text, out) == first
    assert Path(first).stat().st_mtime_ns == stamp  # a resumed run sees the same scene file
    assert clipped_scene(str(raster), None, out) == str(raster)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted_extent.vrt", "scene.tif"]


def test_an_extent_in_another_crs_is_transformed(raster: Path):
    lon_lat = "57.00005,25.31625,57.0002,25.3164,EPSG:4326"  # the origin is 57 E, 25.31655 N
    xmin, ymin, xmax, ymax = raster_extent(lon_lat, str(raster))
    assert ORIGIN[0] + 4 < xmin < ORIGIN[0] + 6 and ORIGIN[0] + 19 < xmax < ORIGIN[0] + 21
    assert ORIGIN[1] - 34 < ymin < ymax < ORIGIN[1] - 15


def test_an_extent_outside_the_raster_is_refused(raster: Path, tmp_path: Path):
    with pytest.raises(RasterError, match="does not overlap"):
        clip_to_extent(str(raster), (0, 0, 1, 1), tmp_path / "x.vrt")
    with pytest.raises(ValueError, match="CRS not understood"):
        raster_extent("0,0,1,1,EPSG:nonsense", str(raster))
