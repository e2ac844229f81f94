"""``lovecs:evaluatepoints`` end to end: a tiny map and reference points, from a GeoPackage or a
memory layer in another CRS, with Processing and with ``qgis_process``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)

from lovecs_core.rasters.corrections import pixel_centres, write_points
from tests.core.helpers import write_geotiff
from tests.test_qgis_process import qgis_process  # noqa: F401 - the fixture

CODES = (1, 2, 3)


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """A 12 x 16 map and 40 reference points at pixel centres (class codes 1..3)."""
    rng = np.random.default_rng(5)
    pred = rng.integers(1, 4, (12, 16)).astype(np.uint8)
    map_path = write_geotiff(tmp_path / "map.tif", pred)
    ds = gdal.Open(str(map_path))
    flat = rng.choice(pred.size, 40, replace=False)
    rows, cols = np.unravel_index(flat, pred.shape)
    truth = np.where(rng.random(40) < 0.7, pred[rows, cols], rng.integers(1, 4, 40))
    xy = pixel_centres(ds, rows, cols)
    points = write_points(tmp_path / "reference.gpkg", xy, truth, ds.GetProjection())
    return {
        "map": map_path,
        "points": points,
        "xy": xy,
        "truth": truth,
        "oa": float((pred[rows, cols] == truth).mean()),
        "crs": ds.GetProjection(),
    }


def run_points(tiny: dict, layer, tmp_path: Path, name: str = "scores") -> dict:
    return processing.run(
        "lovecs:evaluatepoints",
        {
            "PREDICTION": str(tiny["map"]),
            "POINTS": layer,
            "CLASS_FIELD": "class",
            "OUTPUT_JSON": str(tmp_path / f"{name}.json"),
            "OUTPUT_HTML": str(tmp_path / f"{name}.html"),
        },
    )


def test_evaluate_points_writes_json_and_report(lovecs_provider, tiny, tmp_path):
    results = run_points(tiny, str(tiny["points"]), tmp_path)
    scores = json.loads(Path(results["OUTPUT_JSON"]).read_text())
    assert scores["sample"] == {"unit": "point", "size": 40}
    assert scores["overall_accuracy"] == pytest.approx(tiny["oa"])
    assert results["OA"] == pytest.approx(tiny["oa"]) and results["SAMPLE_SIZE"] == 40
    assert 0 < results["OA_AREA_ADJUSTED"] <= 1
    assert scores["area_adjusted"]["area_unit"] == "m2" and "area_ha" in scores["area_adjusted"]
    text = Path(results["OUTPUT_HTML"]).read_text()
    assert "Error matrix" in text and "Olofsson" in text and "Wilson" in text


def test_a_memory_layer_in_another_crs_gives_the_same_scores(
    lovecs_provider, tiny, tmp_path, qgis_new_project
):
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=class:integer", "clicks", "memory")
    to_wgs84 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem.fromWkt(tiny["crs"]), wgs84, QgsProject.instance()
    )
    features = []
    for (x, y), code in zip(tiny["xy"], tiny["truth"]):
        feature = QgsFeature(layer.fields())
        point = to_wgs84.transform(QgsPointXY(float(x), float(y)))
        feature.setGeometry(QgsGeometry.fromPointXY(point))
        feature.setAttribute(0, int(code))
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    QgsProject.instance().addMapLayer(layer)
    from_file = json.loads(
        Path(run_points(tiny, str(tiny["points"]), tmp_path)["OUTPUT_JSON"]).read_text()
    )
    from_memory = json.loads(
        Path(run_points(tiny, layer, tmp_path, "memory")["OUTPUT_JSON"]).read_text()
    )
    assert from_memory["error_matrix"] == from_file["error_matrix"]
    assert from_memory["points"] != str(tiny["points"])  # a temporary GeoPackage


def test_clear_error_for_an_empty_layer(lovecs_provider, tiny, tmp_path):
    empty = write_points(tmp_path / "empty.gpkg", np.zeros((0, 2)), [], tiny["crs"])
    with pytest.raises(QgsProcessingException, match="holds no feature"):
        run_points(tiny, str(empty), tmp_path)


def test_evaluate_points_with_qgis_process(qgis_process, tiny, tmp_path):  # noqa: F811
    out = tmp_path / "qp.json"
    proc = qgis_process(
        "run",
        "lovecs:evaluatepoints",
        "--",
        f"PREDICTION={tiny['map']}",
        f"POINTS={tiny['points']}",
        "CLASS_FIELD=class",
        f"OUTPUT_JSON={out}",
        f"OUTPUT_HTML={tmp_path / 'qp.html'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OA_AREA_ADJUSTED" in proc.stdout
    assert json.loads(out.read_text())["overall_accuracy"] == pytest.approx(tiny["oa"])
