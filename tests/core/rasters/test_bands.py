import numpy as np
from osgeo import gdal

from lovecs_core.rasters.bands import match_bands
from tests.core.helpers import write_geotiff


def test_match_by_description_and_colour_interpretation(tmp_path):
    path = write_geotiff(tmp_path / "bgrn.tif", np.zeros((4, 8, 8), np.uint16))
    ds = gdal.Open(str(path), gdal.GA_Update)
    for i, name in enumerate(["Blue", "Green", "Red", "Near Infrared"], start=1):
        ds.GetRasterBand(i).SetDescription(name)
    ds = None
    assert match_bands(["red", "green", "blue"], path) == [3, 2, 1]
    assert match_bands(["nir", "red"], path) == [4, 3]
    assert match_bands(["swir"], path) is None


def test_rgb_colour_interpretation_of_a_real_jpeg_tiff(shared_data):
    scene = sorted((shared_data / "source" / "images").glob("*.tif"))[0]
    assert match_bands(["red", "green", "blue"], scene) == [1, 2, 3]
    assert match_bands(["blue", "green", "red"], scene) == [3, 2, 1]


def test_ambiguous_names_give_none(tmp_path):
    path = write_geotiff(tmp_path / "gray.tif", np.zeros((2, 8, 8), np.uint8))
    assert match_bands(["red"], path) is None
