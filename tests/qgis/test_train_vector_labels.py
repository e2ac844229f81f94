"""Processing 'Train a land-cover model' from a vector layer of labels (ROI polygons in another
CRS, in a memory layer), as SCP and dzetsaka users train."""

from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

from lovecs_core.model.card import read_card, read_source_sample
from tests.core.synthetic import write_classes, write_source


def _roi_layer(image: Path, labels: np.ndarray, squares: int = 30) -> QgsVectorLayer:
    """Squares of 4 x 4 pixels where the labels hold one class, in EPSG:4326, field 'macroclass'."""
    ds = gdal.Open(str(image))
    x0, gsd, _, y0, _, _ = ds.GetGeoTransform()
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "rois", "memory")
    layer.dataProvider().addAttributes([QgsField("macroclass", QVariant.Int)])
    layer.updateFields()
    to_wgs84 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem(ds.GetProjection()),
        QgsCoordinateReferenceSystem("EPSG:4326"),
        QgsProject.instance(),
    )
    rng = np.random.default_rng(0)
    features = []
    while len(features) < squares:
        r, c = rng.integers(0, labels.shape[0] - 4, 2)
        block = labels[r : r + 4, c : c + 4]
        if (block != block[0, 0]).any():
            continue
        rect = QgsRectangle(x0 + c * gsd, y0 - (r + 4) * gsd, x0 + (c + 4) * gsd, y0 - r * gsd)
        geom = QgsGeometry.fromRect(rect)
        geom.transform(to_wgs84)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geom)
        feature.setAttribute("macroclass", int(block[0, 0]))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_trainsource_learns_from_a_vector_layer_of_rois(lovecs_provider, tmp_path):
    images, labels = write_source(tmp_path / "src", n=1, size=64)
    truth = gdal.Open(str(labels / "s0.tif")).ReadAsArray()
    rois = _roi_layer(images / "s0.tif", truth)
    model = tmp_path / "rois.lovecs"
    trained = processing.run(
        "lovecs:trainsource",
        {
            "IMAGE_FOLDER": str(images),
            "VECTOR_LABELS": rois,
            "CLASS_FIELD": "macroclass",
            "CLASSES": str(write_classes(tmp_path / "classes.json")),
            "ARCH": "tiny",
            "ITERATIONS": 4,
            "BATCH_SIZE": 2,
            "CROP": 32,
            "DEVICE": "cpu",
            "OUTPUT": str(model),
        },
    )
    assert trained["OUTPUT"] == str(model) and trained["FINAL_LOSS"] > 0
    card = read_card(model)
    recorded = card.provenance["vector_labels"]
    assert recorded["class_field"] == "macroclass" and recorded["sha256"]
    assert card.provenance["source_labels"] == []  # the burnt rasters were temporary
    sample = read_source_sample(model)
    assert sample is not None
    labelled = sample[1][sample[1] > 0]
    assert labelled.size and set(np.unique(labelled)) <= {1, 2, 3}


def test_trainsource_wants_either_label_rasters_or_a_vector_layer(lovecs_provider, tmp_path):
    images, labels = write_source(tmp_path / "src", n=1, size=64)
    with pytest.raises(Exception, match="either their label rasters or a vector layer"):
        processing.run(
            "lovecs:trainsource",
            {
                "IMAGE_FOLDER": str(images),
                "CLASSES": str(write_classes(tmp_path / "classes.json")),
                "OUTPUT": str(tmp_path / "m.lovecs"),
            },
        )
