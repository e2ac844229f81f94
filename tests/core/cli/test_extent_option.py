"""``--extent`` on the command line: the engine maps (and adapts to) only that part of the raster,
on the raster's own grid, given in the raster's CRS or another."""

from pathlib import Path

import numpy as np
from osgeo import gdal

from lovecs_core.cli.main import main
from lovecs_core.model.card import read_card
from tests.core.helpers import tiny_model_file, write_geotiff

ORIGIN = (500000.0, 2800000.0)  # UTM 40N: 57 E, 25.31655 N


def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 96, 96)).astype(np.uint8)
    return write_geotiff(tmp_path / "scene.tif", data, origin=ORIGIN)


def test_adapt_extent_maps_that_part_only(tmp_path: Path):
    model = tiny_model_file(tmp_path / "m.lovecs")
    raster, out, map_tif = scene(tmp_path), tmp_path / "a.lovecs", tmp_path / "a.tif"
    x0, y1 = ORIGIN[0] + 8, ORIGIN[1] - 16
    extent = f"{x0},{y1 - 48},{x0 + 64},{y1}"
    args = ["adapt", "--model", str(model), "--target", str(raster), "--out", str(out)]
    args += ["--method", "adabn", "--bn-windows", "2", "--device", "cpu", "--map", str(map_tif)]
    assert main([*args, "--extent", extent]) == 0
    ds = gdal.Open(str(map_tif))
    assert (ds.RasterXSize, ds.RasterYSize) == (64, 48)
    assert ds.GetGeoTransform() == (x0, 1.0, 0.0, y1, 0.0, -1.0)
    assert read_card(out).adaptation["scene"] == str(tmp_path / "a_extent.vrt")


def test_predict_extent_in_another_crs(tmp_path: Path):
    model = tiny_model_file(tmp_path / "m.lovecs")
    raster, out = scene(tmp_path), tmp_path / "o.tif"
    lon_lat = "57.00005,25.31625,57.0002,25.3164,EPSG:4326"
    args = ["predict", "--model", str(model), "--raster", str(raster), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--extent", lon_lat]) == 0
    gt = gdal.Open(str(out)).GetGeoTransform()
    assert ORIGIN[0] + 4 <= gt[0] <= ORIGIN[0] + 5 and ORIGIN[1] - 17 <= gt[3] <= ORIGIN[1] - 15
