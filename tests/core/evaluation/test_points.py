"""Accuracy from reference points: the statistics (Wilson intervals, Olofsson et al. 2014) and
``lovecs evaluate --points`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from lovecs_core.cli.main import main
from lovecs_core.evaluation.area import olofsson
from lovecs_core.evaluation.metrics import evaluate_rasters
from lovecs_core.evaluation.points import PointAccuracy, error_matrix, wilson_interval
from lovecs_core.rasters.corrections import pixel_centres, write_points
from tests.core.helpers import write_geotiff

CODES = [1, 2, 3]
# Olofsson et al. (2014), Table 8: rows map class, columns reference (deforestation, forest
# gain, stable forest, stable non-forest); the map's pixels (30 m) per class.
OLOFSSON_SAMPLE = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_MAP = np.array([200_000, 150_000, 3_200_000, 6_450_000])


def olofsson_example() -> PointAccuracy:
    names = ["deforestation", "gain", "forest", "non-forest"]
    return PointAccuracy(
        [1, 2, 3, 4], names, OLOFSSON_SAMPLE.T.copy(), map_counts=OLOFSSON_MAP, pixel_area=900.0
    )


def test_wilson_interval_by_hand():
    low, high = wilson_interval(8, 10)
    assert (float(low), float(high)) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson_interval([0, 5], [5, 5])
    assert low.tolist()[0] == 0 and high.tolist()[1] == 1  # stays inside [0, 1]
    assert np.isnan(wilson_interval(0, 0)[0])  # no sample: no interval
    assert float(wilson_interval(8, 10, 0.99)[0]) < 0.4902  # wider at 99 %


def test_error_matrix_by_hand():
    ref = [1, 1, 2, 3, 3, 3]
    mapped = [1, 2, 2, 3, 1, 3]
    assert error_matrix(mapped, ref, CODES).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert error_matrix([3, 1], [1, 3], [3, 1]).tolist() == [[0, 1], [1, 0]]  # codes' order
    with pytest.raises(ValueError, match=r"map codes \[7\]"):
        error_matrix([7], [1], CODES)


def test_sample_estimates_by_hand():
    acc = PointAccuracy(CODES, ["a", "b", "c"], np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]]))
    s = acc.to_dict()
    assert s["sample"] == {"unit": "point", "size": 6}
    assert s["overall_accuracy"] == pytest.approx(4 / 6)
    est = s["sample_estimates"]
    assert "plain sample" in est["kind"]
    assert est["producers_accuracy"]["value"] == pytest.approx([1 / 2, 1, 2 / 3])
    assert est["users_accuracy"]["value"] == pytest.approx([1 / 2, 1 / 2, 1])
    assert est["users_accuracy"]["n"] == [2, 2, 2]
    assert "area_adjusted" not in s  # no map areas given
    assert "overall accuracy 66.7 %" in acc.table()


def test_olofsson_2014_example_reproduces_the_published_estimates():
    """Olofsson et al. (2014), section 5: estimates and 95 % half-widths as printed."""
    a = olofsson_example().area_adjusted()
    assert a is not None and "Olofsson" in a["kind"]
    half = lambda key: (np.array(a[f"{key}_se"]) * 1.96).round(2).tolist()  # noqa: E731
    assert round(a["overall_accuracy"], 2) == 0.95 and half("overall_accuracy") == 0.02
    assert np.round(a["users_accuracy"], 2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert half("users_accuracy") == [0.07, 0.10, 0.04, 0.02]
    assert np.round(a["producers_accuracy"], 2).tolist() == [0.75, 0.85, 0.93, 0.96]
    pa = half("producers_accuracy")
    assert [pa[0], pa[2], pa[3]] == [0.21, 0.03, 0.02]
    assert np.round(a["area_ha"]).tolist() == [21_158, 11_686, 285_770, 581_386]
    published = [6_158, 3_756, 15_510, 16_282]  # ha, rounded after a rounded standard error
    np.testing.assert_allclose(np.array(a["area_ci95"]) / 1e4, published, atol=1)
    assert a["area_ha_ci"][0] == pytest.approx([21_158 - 6_158, 21_158 + 6_158], abs=1)


def test_olofsson_estimates_are_consistent():
    est = olofsson(OLOFSSON_SAMPLE.T, OLOFSSON_MAP)
    p = est.proportions  # rows reference, columns map
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p.sum(axis=0), OLOFSSON_MAP / OLOFSSON_MAP.sum())  # map shares
    np.testing.assert_allclose(p.sum(axis=1), est.area_proportion)
    a = olofsson_example().area_adjusted()
    assert a is not None
    assert sum(a["area"]) == pytest.approx(OLOFSSON_MAP.sum() * 900.0)  # the map's total
    assert sum(a["map_area"]) == pytest.approx(OLOFSSON_MAP.sum() * 900.0)
    # forest gain's producer's accuracy (eq. 7 by hand): only stable non-forest adds variance
    w, pj = OLOFSSON_MAP / OLOFSSON_MAP.sum(), est.producers[1]
    own = w[1] ** 2 * (1 - pj) ** 2 * (55 / 75) * (20 / 75) / 74
    other = pj**2 * w[3] ** 2 * (1 / 325) * (324 / 325) / 324
    assert est.producers_se[1] == pytest.approx(np.sqrt(own + other) / est.area_proportion[1])
    assert "Area-adjusted" in olofsson_example().table()


def synthetic_truth(size: int = 200) -> np.ndarray:
    truth = np.ones((size, size), np.uint8)
    truth[:, int(size * 0.55) :] = 2
    truth[int(size * 0.7) :, : int(size * 0.6)] = 3
    return truth


def test_intervals_cover_the_true_values_in_95_percent_of_samples():
    """200 samples of 100 pixels from a map of known truth: the 95 % intervals of the overall
    accuracy (plain and area-adjusted) and of the class areas hold the truth in ~95 %; a
    sample stratified by map class too (area-adjusted only: the plain estimates are biased)."""
    rng = np.random.default_rng(42)
    truth = synthetic_truth()
    noise = rng.integers(1, 4, truth.shape)
    pred = np.where(rng.random(truth.shape) < 0.85, truth, noise).astype(np.uint8).ravel()
    truth = truth.ravel()
    counts = np.array([(pred == c).sum() for c in CODES])
    true_oa = float((pred == truth).mean())
    true_area = np.array([(truth == c).sum() for c in CODES], float)
    strata = [np.flatnonzero(pred == c) for c in CODES]

    def covered(idx: np.ndarray) -> np.ndarray:
        acc = PointAccuracy(CODES, ["a", "b", "c"], error_matrix(pred[idx], truth[idx], CODES))
        acc.map_counts = counts
        d = acc.to_dict()
        plain, area = d["sample_estimates"]["overall_accuracy"]["ci"], d["area_adjusted"]
        inside = [plain[0] <= true_oa <= plain[1]]
        inside.append(area["overall_accuracy_ci"][0] <= true_oa <= area["overall_accuracy_ci"][1])
        inside += [lo <= t <= hi for (lo, hi), t in zip(area["area_ci"], true_area)]
        return np.array(inside)

    simple = np.mean([covered(rng.choice(pred.size, 100, replace=False)) for _ in range(200)], 0)
    stratified = np.mean(
        [
            covered(np.concatenate([rng.choice(s, 34, replace=False) for s in strata]))
            for _ in range(200)
        ],
        axis=0,
    )
    assert np.all((simple > 0.88) & (simple < 0.99)), simple
    assert np.all((stratified[1:] > 0.88) & (stratified[1:] < 0.99)), stratified


# -- lovecs evaluate --points ---------------------------------------------------------------------


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A 30 x 40 map (1 m pixels, UTM) with reference labels (0 = unlabelled)."""
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, (30, 40)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.75, truth, rng.integers(1, 4, truth.shape))
    pred = np.where(pred == 0, 1, pred).astype(np.uint8)
    return {
        "pred": write_geotiff(tmp_path / "pred.tif", pred),
        "labels": write_geotiff(tmp_path / "labels.tif", truth),
    }


def labelled_points(labels: Path, out: Path, wkt: str = "") -> Path:
    """Every labelled pixel of ``labels`` as a point (its centre), in ``wkt`` (default: the
    raster's CRS)."""
    ds = gdal.Open(str(labels))
    truth = ds.GetRasterBand(1).ReadAsArray()
    rows, cols = np.nonzero(truth)
    xy = pixel_centres(ds, rows, cols)
    if wkt:
        src, dst = osr.SpatialReference(wkt=ds.GetProjection()), osr.SpatialReference(wkt=wkt)
        for srs in (src, dst):
            srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        xy = np.array(osr.CoordinateTransformation(src, dst).TransformPoints(xy))[:, :2]
    return write_points(out, xy, truth[rows, cols], wkt or ds.GetProjection())


def evaluate(*args: str) -> int:
    return main(["evaluate", *map(str, args)])


def test_points_at_every_labelled_pixel_agree_with_the_raster_evaluation(scene, tmp_path, capsys):
    points = labelled_points(scene["labels"], tmp_path / "ref.gpkg")
    out = tmp_path / "points.json"
    assert evaluate("--pred", scene["pred"], "--points", points, "--json", out) == 0
    printed = capsys.readouterr().out
    assert "reference \\ map" in printed and "Area-adjusted" in printed and "Wilson" in printed
    scores = json.loads(out.read_text())
    raster = evaluate_rasters(scene["pred"], scene["labels"])
    assert scores["error_matrix"] == raster.matrix.tolist()
    assert scores["overall_accuracy"] == pytest.approx(raster.overall_accuracy)
    assert scores["sample"] == {"unit": "point", "size": raster.total}
    assert scores["problems"] == []
    area = raster.area_adjusted()
    assert area is not None
    assert scores["area_adjusted"]["overall_accuracy"] == pytest.approx(area["overall_accuracy"])
    assert scores["area_adjusted"]["area_ha"] == pytest.approx(np.array(area["area"]) / 1e4)


def test_result_event_with_json_progress(scene, tmp_path, capsys):
    points = labelled_points(scene["labels"], tmp_path / "ref.gpkg")
    assert main(["--progress", "json", "evaluate", "--pred", str(scene["pred"]), "--points",
                 str(points)]) == 0  # fmt: skip
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = [e for e in events if e["type"] == "result"][0]
    assert result["unit"] == "point" and result["sample_size"] > 0
    assert 0 < result["overall_accuracy"] <= 1 and 0 < result["area_adjusted_overall_accuracy"]
    assert result["scores"]["error_matrix"]


def test_points_in_another_crs_are_reprojected(scene, tmp_path):
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    same = labelled_points(scene["labels"], tmp_path / "utm.gpkg")
    other = labelled_points(scene["labels"], tmp_path / "wgs84.gpkg", wgs84.ExportToWkt())
    results = []
    for i, points in enumerate((same, other)):
        out = tmp_path / f"{i}.json"
        assert evaluate("--pred", scene["pred"], "--points", points, "--json", out) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["error_matrix"] == results[1]["error_matrix"]


def add_features(path: Path, features: list[tuple[str, int | None]]) -> None:
    """Append features ``(WKT in the layer's CRS, class code)`` to the layer of ``path``."""
    source = ogr.Open(str(path), 1)
    lyr = source.GetLayer(0)
    for wkt, code in features:
        feature = ogr.Feature(lyr.GetLayerDefn())
        if code is not None:
            feature.SetField("class", code)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        lyr.CreateFeature(feature)
    source = None  # noqa: F841 - closes the file


def test_features_left_out_are_named(tmp_path, caplog):
    pred = np.ones((20, 20), np.uint8)
    pred[:, 10:] = 2
    pred[0, 0] = 0  # no class
    map_path = write_geotiff(tmp_path / "pred.tif", pred, nodata=0)
    ds = gdal.Open(str(map_path))
    xy = pixel_centres(ds, np.array([0, 5, 5, 15]), np.array([0, 5, 15, 15]))
    points = write_points(tmp_path / "ref.gpkg", xy, [1, 1, 2, 1], ds.GetProjection())
    add_features(points, [("POINT (400000 100)", 1), (f"POINT ({xy[1, 0]} {xy[1, 1]})", 9)])
    out = tmp_path / "scores.json"
    assert evaluate("--pred", map_path, "--points", points, "--json", out, "--classes",
                    write_classes(tmp_path)) == 0  # fmt: skip
    warned = " | ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    scores = json.loads(out.read_text())
    problems = " | ".join(scores["problems"])
    assert "1 feature(s) with class code 9 (id 6)" in problems
    assert "1 feature(s) lie outside the raster (id 5)" in problems
    assert "1 feature(s) fall on map pixels without a class (nodata or 0) (id 1)" in problems
    assert "outside the raster" in warned and "class code 9" in warned  # printed as warnings
    assert scores["sample"]["size"] == 3 and scores["error_matrix"] == [[1, 1], [0, 1]]
    assert [c["name"] for c in scores["classes"]] == ["building", "road"]


def write_classes(folder: Path) -> Path:
    path = folder / "classes.json"
    classes = [{"code": 1, "name": "building", "color": "#FF0000"}]
    classes.append({"code": 2, "name": "road", "color": "#00FF00"})
    path.write_text(json.dumps({"classes": classes}))
    return path


def test_polygons_count_pixels_and_say_so(scene, tmp_path):
    ds = gdal.Open(str(scene["pred"]))
    x0, y0 = ds.GetGeoTransform()[0], ds.GetGeoTransform()[3]
    points = write_points(tmp_path / "ref.gpkg", np.zeros((0, 2)), [], ds.GetProjection())
    square = f"POLYGON (({x0 + 2.5} {y0 - 2.5}, {x0 + 5.5} {y0 - 2.5}, {x0 + 5.5} {y0 - 5.5}, "
    add_features(points, [(square + f"{x0 + 2.5} {y0 - 5.5}, {x0 + 2.5} {y0 - 2.5}))", 2)])
    out = tmp_path / "scores.json"
    assert evaluate("--pred", scene["pred"], "--points", points, "--json", out) == 0
    sample = json.loads(out.read_text())["sample"]
    assert sample["unit"] == "pixel" and sample["size"] > 1 and "not independent" in sample["note"]


def test_clear_errors(scene, tmp_path, capsys):
    ds = gdal.Open(str(scene["pred"]))
    empty = write_points(tmp_path / "empty.gpkg", np.zeros((0, 2)), [], ds.GetProjection())
    assert evaluate("--pred", scene["pred"], "--points", empty) == 1
    assert "the reference layer holds no feature" in capsys.readouterr().err
    far = write_points(tmp_path / "far.gpkg", [[0.0, 0.0]], [1], ds.GetProjection())
    assert evaluate("--pred", scene["pred"], "--points", far) == 1
    assert "lie outside the raster" in capsys.readouterr().err
    points = labelled_points(scene["labels"], tmp_path / "ref.gpkg")
    for target in (scene["pred"], points):
        before = Path(target).read_bytes()
        assert evaluate("--pred", scene["pred"], "--points", points, "--json", target) == 1
        assert "would overwrite" in capsys.readouterr().err
        assert Path(target).read_bytes() == before
    assert evaluate("--pred", scene["pred"], "--labels", scene["labels"], "--layer", "x") == 1
    assert "go with --points" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not both
        evaluate("--pred", scene["pred"], "--points", points, "--labels", scene["labels"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert evaluate("--pred", scene["pred"], "--points", points, "--class-field", "nope") == 1
    assert "has no field 'nope'" in capsys.readouterr().err
