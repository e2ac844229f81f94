"""``lovecs:refine`` end to end: a tiny model, a raster and corrections from a memory layer in
another CRS; the refined model records them and the map is written and styled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

from lovecs_core.model.card import read_card
from lovecs_core.rasters.corrections import pixel_centres
from tests.core.helpers import tiny_model_file, write_geotiff
from tests.core.synthetic import label_map, source_image


def corrections_in_wgs84(raster: Path, labels: np.ndarray, per_class: int = 6) -> QgsVectorLayer:
    """A memory layer of points in EPSG:4326 at random pixels of each class."""
    ds = gdal.Open(str(raster))
    rng = np.random.default_rng(2)
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=klasse:integer", "clicks", "memory")
    to_wgs84 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32640"),
        QgsCoordinateReferenceSystem("EPSG:4326"),
        QgsProject.instance(),
    )
    features = []
    for code in (1, 2, 3):
        rows, cols = np.nonzero(labels == code)
        pick = rng.choice(rows.size, per_class, replace=False)
        for x, y in pixel_centres(ds, rows[pick], cols[pick]):
            feature = QgsFeature(layer.fields())
            feature.setAttributes([code])
            feature.setGeometry(QgsGeometry.fromPointXY(to_wgs84.transform(QgsPointXY(x, y))))
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def scene_and_model(folder: Path) -> tuple[np.ndarray, Path, Path]:
    """A 48 px scene's labels, the scene and a tiny model."""
    labels = label_map(48, seed=3)
    raster = write_geotiff(folder / "scene.tif", source_image(labels, seed=4))
    return labels, raster, tiny_model_file(folder / "tiny.lovecs", seed=1)


def test_refine_algorithm_writes_the_model_and_the_map(lovecs_provider, tmp_path: Path):
    labels, raster, model = scene_and_model(tmp_path)
    result = processing.run(
        "lovecs:refine",
        {
            "INPUT": str(raster),
            "MODEL": str(model),
            "POINTS": corrections_in_wgs84(raster, labels),
            "CLASS_FIELD": "klasse",
            "OUTPUT_MODEL": str(tmp_path / "refined.lovecs"),
            "OUTPUT": str(tmp_path / "refined.tif"),
        },
    )
    card = read_card(result["OUTPUT_MODEL"])
    assert card.provenance["refinement"]["corrections"]["per_class"] == {"1": 6, "2": 6, "3": 6}
    mapped = gdal.Open(result["OUTPUT"]).ReadAsArray()
    assert mapped.shape == labels.shape and set(np.unique(mapped)) <= {1, 2, 3}
    assert Path(result["OUTPUT"]).with_suffix(".qml").is_file()


def test_adapt_algorithm_takes_corrections(lovecs_provider, tmp_path: Path):
    """``lovecs:adapt`` with POINTS: the corrections judge the adaptation."""
    labels, raster, model = scene_and_model(tmp_path)
    said: list[str] = []

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info: str) -> None:  # noqa: N802 (Qt naming)
            said.append(info)

        def pushWarning(self, warning: str) -> None:  # noqa: N802 (Qt naming)
            said.append(warning)

    result = processing.run(
        "lovecs:adapt",
        {
            "INPUT": str(raster),
            "MODEL": str(model),
            "METHOD": "adabn",
            "DEVICE": "cpu",
            "POINTS": corrections_in_wgs84(raster, labels),
            "CLASS_FIELD": "klasse",
            "OUTPUT_MODEL": str(tmp_path / "adapted.lovecs"),
            "OUTPUT": str(tmp_path / "adapted.tif"),
        },
        feedback=Feedback(),
    )
    health = next(line for line in said if line.startswith("Health check"))
    assert "judged on the corrections" in health and "random sample" in health, health
    adaptation = read_card(result["OUTPUT_MODEL"]).adaptation
    record = adaptation["corrections"]
    assert record["source"]["n"] == record["adapted"]["n"] == 18
    assert result["VERDICT"] == (record["verdict"] or adaptation["health"]["verdict"])
    assert gdal.Open(result["OUTPUT"]).ReadAsArray().shape == labels.shape
