"""``lovecs evaluate`` and its Processing algorithms never misread or overwrite their inputs:
labels on another grid (shifted, another CRS, another size), labels holding no label, and an RGB
image given as labels are refused with one line naming the problem (both grids for a grid); an
HTML report or JSON naming an input is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import QgsProcessingException

from tests.core.helpers import write_geotiff
from tests.qgis.conftest import lovecs_provider  # noqa: F401  (fixture)

from .conftest import snapshot
from .test_processing import no_engine  # noqa: F401  (fixture)

CODES = np.random.default_rng(0).integers(1, 4, (1, 60, 60)).astype(np.uint8)


def _pair(tmp_path: Path, case: str) -> tuple[Path, Path]:
    pred = write_geotiff(tmp_path / "map.tif", CODES)
    labels = tmp_path / "labels.tif"
    if case == "shifted":  # the same pixels, the grid moved 10 px east
        write_geotiff(labels, CODES, origin=(500010.0, 2800000.0))
    elif case == "other_crs":
        write_geotiff(labels, CODES, epsg=32641)
    elif case == "other_size":
        write_geotiff(labels, CODES[:, :50, :])
    elif case == "all_zero":
        write_geotiff(labels, np.zeros_like(CODES))
    elif case == "all_nodata":
        write_geotiff(labels, np.full_like(CODES, 7), nodata=7)
    elif case == "rgb":
        rgb = np.random.default_rng(1).integers(0, 255, (3, 60, 60)).astype(np.uint8)
        write_geotiff(labels, rgb)
    return pred, labels


CASES = [
    ("shifted", "origin (500010, 2800000)"),
    ("other_crs", "EPSG:32641"),
    ("other_size", "60 x 50 px"),
    ("all_zero", "hold no labelled pixel of the classes"),
    ("all_nodata", "hold no labelled pixel of the classes"),
    ("rgb", "have 3 bands (an RGB image?): reference labels are one band of class codes"),
]


@pytest.mark.parametrize("case,text", CASES, ids=[c for c, _ in CASES])
def test_evaluate_refuses_labels_it_would_misread(cli, tmp_path, case, text):
    pred, labels = _pair(tmp_path, case)
    before = snapshot(tmp_path)
    rc, log = cli("evaluate", "--pred", pred, "--labels", labels, "--json", tmp_path / "s.json")
    assert rc == 1, log
    assert text in log
    if case in ("shifted", "other_crs", "other_size"):  # both grids named
        assert "not on the same grid" in log and "the map " in log and "the labels " in log
        assert "origin (500000, 2800000)" in log and "EPSG:32640" in log
    assert "area-adjusted" not in log and "Traceback" not in log
    assert snapshot(tmp_path) == before  # no JSON, inputs intact


def test_labels_on_the_same_grid_are_scored(cli, tmp_path):
    pred, labels = _pair(tmp_path, "same")
    write_geotiff(labels, CODES)
    rc, log = cli("evaluate", "--pred", pred, "--labels", labels)
    assert rc == 0 and "mIoU 100.00 %" in log


@pytest.mark.parametrize(
    "output,target", [("OUTPUT_HTML", "LABELS"), ("OUTPUT_JSON", "PREDICTION")]
)
def test_processing_evaluate_never_writes_over_an_input(
    lovecs_provider, tmp_path, no_engine, output, target
):
    pred = write_geotiff(tmp_path / "map.tif", CODES)
    labels = write_geotiff(tmp_path / "labels.tif", CODES)
    params = {
        "PREDICTION": str(pred),
        "LABELS": str(labels),
        "OUTPUT_HTML": str(tmp_path / "report.html"),
    }
    params[output] = params[target]
    before = snapshot(tmp_path)
    with pytest.raises(QgsProcessingException, match="would overwrite the"):
        processing.run("lovecs:evaluate", params)
    assert snapshot(tmp_path) == before


def test_processing_evaluate_points_never_writes_over_the_map(lovecs_provider, tmp_path, no_engine):
    from osgeo import ogr, osr

    pred = write_geotiff(tmp_path / "map.tif", CODES)
    points = tmp_path / "points.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(points))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    layer = ds.CreateLayer("ref", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTInteger))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("class", 1)
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (500010.5 2799989.5)"))
    layer.CreateFeature(feature)
    ds = None
    before = snapshot(tmp_path)
    with pytest.raises(QgsProcessingException, match="would overwrite the map"):
        processing.run(
            "lovecs:evaluatepoints",
            {
                "PREDICTION": str(pred),
                "POINTS": str(points),
                "CLASS_FIELD": "class",
                "OUTPUT_JSON": str(tmp_path / "s.json"),
                "OUTPUT_HTML": str(pred),
            },
        )
    assert snapshot(tmp_path) == before
