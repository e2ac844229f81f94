"""Paletted renderer and .qml sidecar from a model card's classes."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
)

from lovecs_core.rasters.qml import qml_path
from lovecs_qgis.styling import (
    ClassMapStyler,
    apply_class_style,
    classes_for_map,
    classes_for_model,
    ensure_qml,
    map_layer_name,
    renderer_classes,
    style_output_on_load,
)
from tests.core.helpers import CLASSES, write_geotiff


def plain_map(tmp_path, name="map.tif"):
    """Class codes without colour table or style: QGIS shows it in grey."""
    codes = np.random.default_rng(1).integers(0, 4, (40, 50)).astype(np.uint8)
    return write_geotiff(tmp_path / name, codes, nodata=0)


def test_apply_class_style_sets_names_colours_and_writes_the_qml(tmp_path, qgis_new_project):
    path = plain_map(tmp_path)
    layer = QgsRasterLayer(str(path), "map")
    assert not isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    apply_class_style(layer, CLASSES)
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert renderer_classes(layer) == CLASSES
    assert qml_path(path).is_file()
    reopened = QgsRasterLayer(str(path), "again")  # QGIS applies map.qml on its own
    assert renderer_classes(reopened) == CLASSES


def test_ensure_qml_keeps_an_existing_style(tmp_path):
    path = plain_map(tmp_path)
    ensure_qml(path, CLASSES)
    assert classes_for_map(path) == CLASSES
    ensure_qml(path, CLASSES[:1])
    assert classes_for_map(path) == CLASSES
    assert classes_for_map(tmp_path / "other.tif") == []


def test_classes_for_model_reads_the_card(qgis_data):
    assert classes_for_model(qgis_data / "tiny.lovecs") == CLASSES


def test_post_processor_styles_and_names_the_loaded_layer(tmp_path, qgis_new_project):
    path = plain_map(tmp_path)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    assert not style_output_on_load(context, str(path), CLASSES, "x")  # not to be loaded
    context.addLayerToLoadOnCompletion(
        str(path), QgsProcessingContext.LayerDetails("out", QgsProject.instance(), "OUTPUT")
    )
    assert style_output_on_load(context, str(path), CLASSES, map_layer_name("scene"))
    processor = context.layerToLoadOnCompletionDetails(str(path)).postProcessor()
    assert isinstance(processor, ClassMapStyler)
    layer = QgsRasterLayer(str(path), "out")
    processor.postProcessLayer(layer, context, QgsProcessingFeedback())
    assert renderer_classes(layer) == CLASSES
    assert layer.name() == "scene — land cover (LoveCS)"
