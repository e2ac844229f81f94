"""``lovecs train --points``: a model learns from vector labels (points in another CRS), as SCP and
dzetsaka users train from their ROI layers."""

import numpy as np
from osgeo import gdal

from lovecs_core.cli.main import main
from lovecs_core.model.card import read_card
from lovecs_core.rasters.corrections import write_points
from tests.core.helpers import lonlat_centres
from tests.core.synthetic import tiny_train_args, write_classes, write_source


def test_train_from_points_maps_the_scene_well_above_its_majority_class(tmp_path):
    images, labels = write_source(tmp_path / "src", n=1, size=96)
    grid = gdal.Open(str(images / "s0.tif"))
    truth = gdal.Open(str(labels / "s0.tif")).ReadAsArray()
    rng = np.random.default_rng(0)
    picked = rng.choice(truth.size, 400, replace=False)
    rows, cols = np.divmod(picked, truth.shape[1])
    lonlat, wkt = lonlat_centres(grid, rows, cols)
    points = write_points(tmp_path / "rois.gpkg", lonlat, truth[rows, cols].tolist(), wkt)
    classes = write_classes(tmp_path / "classes.json")
    model = tmp_path / "m.lovecs"
    args = tiny_train_args(images, labels, classes, model)
    at = args.index("--labels")
    args[at : at + 2] = ["--points", str(points), "--class-field", "class"]
    assert main(args) == 0
    recorded = read_card(model).provenance["vector_labels"]
    assert recorded["file"] == str(points.resolve()) and recorded["class_field"] == "class"
    out = tmp_path / "map.tif"
    assert main(["predict", "--model", str(model), "--raster", str(images / "s0.tif"),
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    predicted = gdal.Open(str(out)).ReadAsArray()
    unseen = np.ones(truth.shape, bool)
    unseen[rows, cols] = False
    oa = float((predicted == truth)[unseen].mean())
    majority = float(np.bincount(truth.ravel()).max() / truth.size)
    assert oa > majority + 0.15, (oa, majority)
