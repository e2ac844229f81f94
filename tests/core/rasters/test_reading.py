from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from lovecs_core.rasters.reading import (
    RasterError,
    RasterReader,
    Window,
    gdal_cache_limit,
    open_dataset,
    pixel_size_metres,
    subset,
    warp_to_gsd,
    window_from_extent,
)
from tests.core.helpers import write_geotiff


def test_open_missing_raster_is_a_raster_error(tmp_path: Path):
    with pytest.raises(RasterError, match="cannot open raster"):
        open_dataset(tmp_path / "nope.tif")


def test_reader_rejects_missing_band(tmp_path: Path):
    path = write_geotiff(tmp_path / "a.tif", np.ones((2, 10, 10), np.uint8))
    with pytest.raises(RasterError, match="band 3 does not exist"):
        RasterReader(path, [1, 3])


def test_reader_masks_nodata_alpha_and_dataset_masks(tmp_path: Path):
    data = np.full((3, 20, 30), 100, np.uint8)
    data[:, :5, :] = 0
    nodata = RasterReader(write_geotiff(tmp_path / "nd.tif", data, nodata=0))
    _, valid = nodata.read(Window(0, 0, 30, 20))
    assert not valid[:5].any() and valid[5:].all()
    assert (nodata.read_valid(Window(3, 2, 10, 10)) == valid[2:12, 3:13]).all()

    # alpha band: excluded from the data bands, used as the mask
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp_path / "rgba.tif"), 30, 20, 4, gdal.GDT_Byte, ["ALPHA=YES"]
    )
    alpha = np.full((20, 30), 255, np.uint8)
    alpha[:, 25:] = 0
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((20, 30), 7 * (b + 1), np.uint8))
    ds.GetRasterBand(4).WriteArray(alpha)
    ds = None
    rgba = RasterReader(tmp_path / "rgba.tif")
    assert rgba.bands == [1, 2, 3]
    x, valid = rgba.read(Window(0, 0, 30, 20))
    assert x.shape == (3, 20, 30) and x.dtype == np.float32 and x[2, 0, 0] == 21
    assert valid[:, :25].all() and not valid[:, 25:].any()

    masked = _with_dataset_mask(
        tmp_path / "mask.tif", 30, 20, lambda m: m.__setitem__((slice(10, None), slice(None)), 0)
    )
    _, valid = RasterReader(masked).read(Window(0, 0, 30, 20))
    assert valid[:10].all() and not valid[10:].any()


def _with_dataset_mask(path: Path, width: int, height: int, edit) -> Path:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((1000.0, 1.0, 0.0, 2000.0, 0.0, -1.0))
    for b in range(3):
        ds.GetRasterBand(b + 1).Fill(50)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((height, width), 255, np.uint8)
    edit(mask)
    band = ds.GetRasterBand(1).GetMaskBand()
    band.WriteArray(mask)
    band = None
    ds = None
    return path


def test_is_empty_uses_sparse_blocks_without_reading(tmp_path: Path):
    path = tmp_path / "sparse.tif"
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), 2048, 2048, 1, gdal.GDT_Byte, ["TILED=YES", "SPARSE_OK=TRUE"]
    )
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(0)
    band.WriteArray(np.full((10, 10), 9, np.uint8), 600, 600)
    band = None
    ds = None
    reader = RasterReader(path)
    assert reader.is_empty(Window(0, 0, 512, 512))
    assert not reader.is_empty(Window(512, 512, 256, 256))
    # a band without nodata: empty blocks read as valid zeros, never "empty"
    plain = write_geotiff(tmp_path / "plain.tif", np.zeros((1, 300, 300), np.uint8))
    assert not RasterReader(plain).is_empty(Window(0, 0, 256, 256))


def test_pixel_size_metres_across_crs(tmp_path: Path):
    utm = open_dataset(write_geotiff(tmp_path / "utm.tif", np.ones((1, 5, 5), np.uint8), gsd=0.5))
    assert pixel_size_metres(utm) == pytest.approx(0.5)
    geo = open_dataset(
        write_geotiff(
            tmp_path / "geo.tif",
            np.ones((1, 10, 10), np.uint8),
            gsd=1e-4,
            epsg=4326,
            origin=(55.0, 60.0),
        )
    )
    # 1e-4 degree at 60 deg N: 11.1 m of latitude, half of that in longitude; mean 8.35 m
    assert pixel_size_metres(geo) == pytest.approx(1e-4 * 111_320 * 0.5, rel=0.01)
    merc = open_dataset(
        write_geotiff(
            tmp_path / "merc.tif",
            np.ones((1, 10, 10), np.uint8),
            gsd=2.0,
            epsg=3857,
            origin=(0.0, 8_399_737.89),
        )
    )  # ~60 N
    assert pixel_size_metres(merc) == pytest.approx(1.0, rel=0.01)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "raw.tif"), 5, 5, 1)
    del ds  # closes the file
    assert pixel_size_metres(open_dataset(tmp_path / "raw.tif")) is None


def test_pixel_size_metres_on_real_geotiffs(shared_data: Path):
    g = shared_data / "geotiffs"
    assert pixel_size_metres(open_dataset(g / "RGB.byte.tif")) == pytest.approx(300.04, rel=1e-3)
    # NAD27 Illinois East in US survey feet: 32.8 ft = 10.0 m
    assert pixel_size_metres(open_dataset(g / "SP27GTIF.TIF")) == pytest.approx(9.997, rel=1e-3)
    assert pixel_size_metres(open_dataset(g / "drone_ortho_2cm.tif")) == pytest.approx(
        0.02, rel=1e-2
    )
    # Web Mercator 0.597 m units at 37.7 deg N are 0.47 m on the ground
    assert pixel_size_metres(open_dataset(g / "cogeo.tif")) == pytest.approx(0.4727, rel=1e-3)


def test_window_from_extent_and_subset_keep_masks(tmp_path: Path):
    path = _with_dataset_mask(
        tmp_path / "m.tif", 100, 80, lambda m: m.__setitem__((slice(None), slice(None, 30)), 0)
    )
    ds = open_dataset(path)
    # raster spans x 1000..1100, y 1920..2000
    win = window_from_extent(ds, (1020.5, 1950.0, 1070.0, 1990.2))
    assert win == Window(20, 9, 50, 41)
    assert window_from_extent(ds, (900, 1900, 1200, 2100)) == Window(0, 0, 100, 80)
    with pytest.raises(RasterError, match="does not overlap"):
        window_from_extent(ds, (0, 0, 10, 10))
    with pytest.raises(RasterError, match="xmin < xmax"):
        window_from_extent(ds, (1050, 1950, 1010, 1990))
    sub = subset(ds, win)
    assert (sub.RasterXSize, sub.RasterYSize) == (50, 41)
    assert sub.GetGeoTransform()[0] == 1020.0 and sub.GetGeoTransform()[3] == 1991.0
    _, valid = RasterReader(sub).read(Window(0, 0, 50, 41))
    assert not valid[:, :10].any() and valid[:, 10:].all()


def test_warp_to_gsd_changes_resolution_and_marks_nodata(tmp_path: Path):
    data = np.full((3, 60, 90), 80, np.uint8)
    data[:, :, :30] = 0
    ds = open_dataset(write_geotiff(tmp_path / "w.tif", data, gsd=1.0, nodata=0))
    warped = warp_to_gsd(ds, 3.0)
    assert (warped.RasterXSize, warped.RasterYSize) == (30, 20)
    assert pixel_size_metres(warped) == pytest.approx(3.0)
    reader = RasterReader(warped)
    assert reader.bands == [1, 2, 3]  # the added alpha band is not data
    x, valid = reader.read(Window(0, 0, 30, 20))
    assert not valid[:, :10].any() and valid[:, 10:].all()
    assert np.allclose(x[:, valid], 80)
    srs = osr.SpatialReference(wkt=warped.GetProjection())
    assert srs.IsSame(osr.SpatialReference(wkt=ds.GetProjection()))


def test_gdal_cache_limit_is_restored():
    before = gdal.GetCacheMax()
    with gdal_cache_limit(16 * 1024**2):
        assert gdal.GetCacheMax() == min(before, 16 * 1024**2)
    assert gdal.GetCacheMax() == before
