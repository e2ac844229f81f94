"""A finished job's layers: the map (and its confidence) added on top of the project, styled,
with a name that says what it is (a plain map, an adapted one, the safe result) and that no
earlier result has (repeated runs are numbered)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProject, QgsRasterLayer

from .engine import card as model_card
from .jobs import Job
from .styling import (
    ADAPTED,
    CONFIDENCE,
    LAND_COVER,
    SAFE,
    apply_class_style,
    free_layer_name,
)


def map_kind(job: Job, result: dict[str, Any]) -> str:
    """What the map shows: a plain map, an adapted map, or the safe result of an adaptation
    the health check turned down."""
    if job.command != "adapt":
        return LAND_COVER
    return SAFE if result.get("rejected") else ADAPTED


def add_result_layers(job: Job, result: dict[str, Any], with_confidence: bool) -> QgsRasterLayer:
    """Add the map (styled from the model's card) and, if asked, its confidence on top."""
    classes = model_card.read_card(
        job.model_out if job.model_out and job.model_out.is_file() else job.classes_model
    ).classes
    project = QgsProject.instance()
    root = project.layerTreeRoot()
    taken = {layer.name() for layer in project.mapLayers().values()}
    kind, scene = map_kind(job, result), job.scene
    if with_confidence and job.confidence_path is not None and job.confidence_path.is_file():
        confidence_kind = kind.replace(LAND_COVER, CONFIDENCE)
        name = free_layer_name(scene, confidence_kind, taken)
        confidence = QgsRasterLayer(str(job.confidence_path), name)
        project.addMapLayer(confidence, False)
        root.insertLayer(0, confidence)
    layer = QgsRasterLayer(str(job.map_path), free_layer_name(scene, kind, taken))
    apply_class_style(layer, classes)
    project.addMapLayer(layer, False)
    root.insertLayer(0, layer)
    return layer
