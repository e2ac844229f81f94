"""``checks.reference``: reference labels on the map's grid, one band of class codes."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.checks.outputs import CheckError
from lovecs_core.checks.reference import check_label_bands, check_same_grid
from tests.core.helpers import write_geotiff

CODES = np.ones((1, 20, 30), np.uint8)


def _open(path):
    return gdal.Open(str(path))


def test_the_same_grid_passes_and_a_sub_pixel_rounding_too(tmp_path):
    a = write_geotiff(tmp_path / "a.tif", CODES)
    b = write_geotiff(tmp_path / "b.tif", CODES, origin=(500000.0000001, 2800000.0))
    check_same_grid(_open(a), _open(b))


@pytest.mark.parametrize(
    "kwargs,shape,text",
    [
        ({"origin": (500010.0, 2800000.0)}, None, "origin (500010, 2800000)"),
        ({"gsd": 2.0}, None, "2 x 2 pixels"),
        ({"epsg": 4326}, None, "EPSG:4326"),
        ({}, (1, 20, 31), "31 x 20 px"),
    ],
)
def test_another_grid_is_refused_naming_both(tmp_path, kwargs, shape, text):
    a = write_geotiff(tmp_path / "a.tif", CODES)
    b = write_geotiff(tmp_path / "b.tif", np.ones(shape or CODES.shape, np.uint8), **kwargs)
    with pytest.raises(CheckError) as err:
        check_same_grid(_open(a), _open(b))
    message = str(err.value)
    assert text in message and "30 x 20 px of 1 x 1 pixels, origin (500000, 2800000)" in message
    assert "EPSG:32640" in message and "gdalwarp" in message


def test_an_rgb_image_is_no_labels(tmp_path):
    check_label_bands(_open(write_geotiff(tmp_path / "one.tif", CODES)))
    rgb = write_geotiff(tmp_path / "rgb.tif", np.ones((3, 20, 30), np.uint8))
    with pytest.raises(CheckError, match="have 3 bands"):
        check_label_bands(_open(rgb))
