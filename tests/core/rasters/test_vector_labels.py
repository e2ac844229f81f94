"""Training labels from a vector layer: burnt onto each image's grid, nothing dropped silently."""

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from lovecs_core.rasters.corrections import CorrectionsError, write_points
from lovecs_core.rasters.vector_labels import vector_label_pairs
from tests.core.helpers import lonlat_centres, write_geotiff

CODES = [1, 2, 3]


def _image(path: Path, origin: tuple[float, float]) -> Path:
    return write_geotiff(path, np.zeros((3, 30, 40), np.uint8), gsd=2.0, origin=origin)


def _polygon_layer(path: Path, wkt: str, rings: list[list[tuple[float, float]]], codes) -> Path:
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = source.CreateLayer("rois", srs=osr.SpatialReference(wkt=wkt), geom_type=ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("macroclass", ogr.OFTInteger))
    for ring_xy, code in zip(rings, codes):
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ring_xy + ring_xy[:1]:
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        feature = ogr.Feature(lyr.GetLayerDefn())
        feature.SetField("macroclass", code)
        feature.SetGeometry(poly)
        lyr.CreateFeature(feature)
    del source
    return path


def test_polygons_are_burnt_onto_the_images_they_cover(tmp_path):
    first = _image(tmp_path / "a.tif", (500000.0, 2800000.0))
    second = _image(tmp_path / "b.tif", (500080.0, 2800000.0))  # to the east of the first
    elsewhere = _image(tmp_path / "c.tif", (600000.0, 2800000.0))
    wkt = gdal.Open(str(first)).GetProjection()
    square = [
        (500010.0, 2799990.0),
        (500020.0, 2799990.0),
        (500020.0, 2799980.0),
        (500010.0, 2799980.0),
    ]
    shifted = [(x + 80.0, y) for x, y in square]
    far = [(x + 50_000.0, y) for x, y in square]
    vector = _polygon_layer(tmp_path / "rois.gpkg", wkt, [square, shifted, far], [2, 3, 1])
    out = tmp_path / "labels"
    out.mkdir()
    pairs, problems = vector_label_pairs(
        vector, [first, second, elsewhere], CODES, out, class_field="macroclass"
    )
    assert [image.name for image, _ in pairs] == ["a.tif", "b.tif"]  # c.tif has no feature
    for (_, label), code in zip(pairs, (2, 3)):
        burnt = gdal.Open(str(label)).ReadAsArray()
        rows, cols = np.nonzero(burnt)
        assert set(np.unique(burnt[rows, cols])) == {code}
        # the 10 m square covers pixels 5..9 (2 m pixels; every touched pixel)
        assert rows.min() == 5 and cols.min() == 5 and rows.max() in (9, 10)
    assert problems == ["1 feature(s) lie outside every image (id 3): left out"]


def test_points_in_another_crs_and_unknown_codes_are_named(tmp_path):
    image = _image(tmp_path / "a.tif", (500000.0, 2800000.0))
    grid = gdal.Open(str(image))
    lonlat, wkt = lonlat_centres(grid, np.array([3, 12]), np.array([4, 30]))
    vector = write_points(tmp_path / "p.gpkg", lonlat, [1, 7], wkt)
    pairs, problems = vector_label_pairs(vector, [image], CODES, tmp_path)
    burnt = gdal.Open(str(pairs[0][1])).ReadAsArray()
    assert list(zip(*np.nonzero(burnt))) == [(3, 4)] and burnt[3, 4] == 1
    assert len(problems) == 1 and "class code 7" in problems[0]


def test_no_feature_on_any_image_is_an_error(tmp_path):
    image = _image(tmp_path / "a.tif", (500000.0, 2800000.0))
    wkt = gdal.Open(str(image)).GetProjection()
    vector = write_points(tmp_path / "p.gpkg", np.array([[0.0, 0.0]]), [1], wkt)
    with pytest.raises(CorrectionsError, match="no labelled feature lies on the images"):
        vector_label_pairs(vector, [image], CODES, tmp_path)
