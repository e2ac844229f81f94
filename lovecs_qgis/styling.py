"""Land-cover map styling: a paletted renderer with the model card's class names and colours, a
``.qml`` sidecar beside the GeoTIFF, and the Processing post-processor applying both to loaded
output layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection, Optional, Sequence

from qgis.core import (
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QColor

from .engine import card as model_card
from .engine import qml

ClassInfo = model_card.ClassInfo


def class_renderer(
    layer: QgsRasterLayer, classes: Sequence[ClassInfo], band: int = 1
) -> QgsPalettedRasterRenderer:
    """A paletted renderer on ``band``: one entry per class, labelled with its name."""
    entries = [
        QgsPalettedRasterRenderer.Class(int(c.code), QColor(c.color), c.name) for c in classes
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), band, entries)


def renderer_classes(layer: QgsRasterLayer) -> list[ClassInfo]:
    """The classes shown by a paletted layer's legend (empty for other renderers)."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return []
    return [ClassInfo(int(c.value), c.label, c.color.name().upper()) for c in renderer.classes()]


def ensure_qml(raster: str | os.PathLike[str], classes: Sequence[ClassInfo]) -> Path:
    """Write ``map.qml`` beside ``map.tif`` unless it is there already (the engine writes it;
    this covers files from elsewhere). QGIS applies it whenever it opens the GeoTIFF."""
    path = qml.qml_path(raster)
    if not path.is_file():
        qml.write_qml(path, classes)
    return path


def apply_class_style(
    layer: QgsRasterLayer, classes: Sequence[ClassInfo], save_qml: bool = True
) -> None:
    """Give ``layer`` the paletted renderer of ``classes``; with ``save_qml``, also save it as the
    layer's default style (``.qml`` sidecar) when the file has none yet."""
    layer.setRenderer(class_renderer(layer, classes))
    layer.triggerRepaint()
    if save_qml and layer.providerType() == "gdal" and Path(layer.source()).is_file():
        if not qml.qml_path(layer.source()).is_file():
            layer.saveDefaultStyle()


def classes_for_model(model: str | os.PathLike[str]) -> list[ClassInfo]:
    """The classes of a model file (reads only the card: no torch)."""
    return model_card.read_card(model).classes


def classes_for_map(raster: str | os.PathLike[str]) -> list[ClassInfo]:
    """The classes in a map's ``.qml`` sidecar (empty when there is none)."""
    path = qml.qml_path(raster)
    return qml.read_qml_classes(path) if path.is_file() else []


#: What a dock's result layer shows: a plain map, an adapted one, the safe result of an
#: adaptation the health check turned down (the aligned source model's map), a confidence layer.
LAND_COVER, ADAPTED, SAFE, CONFIDENCE = (
    "land cover",
    "adapted land cover",
    "land cover, safe result",
    "confidence",
)


def map_layer_name(input_name: Optional[str], kind: str = LAND_COVER, number: int = 1) -> str:
    """``"scene — land cover (LoveCS)"``, ``"scene — adapted land cover 2 (LoveCS)"``."""
    what = kind if number < 2 else f"{kind} {number}"
    return f"{input_name} — {what} (LoveCS)" if input_name else f"{what.capitalize()} (LoveCS)"


def free_layer_name(input_name: Optional[str], kind: str, taken: Collection[str]) -> str:
    """The first :func:`map_layer_name` not in ``taken`` (repeated runs get 2, 3, ...)."""
    number = 1
    while map_layer_name(input_name, kind, number) in taken:
        number += 1
    return map_layer_name(input_name, kind, number)


class ClassMapStyler(QgsProcessingLayerPostProcessorInterface):
    """Applies the class style (and a name) to a Processing output layer once it is loaded.

    Processing takes ownership of the instance; :meth:`create` also keeps a Python reference
    until the layer was styled, so the wrapper cannot be collected early.
    """

    _alive: set["ClassMapStyler"] = set()

    def __init__(self, classes: Sequence[ClassInfo], name: Optional[str] = None) -> None:
        super().__init__()
        self.classes = list(classes)
        self.name = name

    @classmethod
    def create(cls, classes: Sequence[ClassInfo], name: Optional[str] = None) -> "ClassMapStyler":
        styler = cls(classes, name)
        cls._alive.add(styler)
        return styler

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        try:
            if isinstance(layer, QgsRasterLayer):
                apply_class_style(layer, self.classes)
                if self.name:
                    layer.setName(self.name)
        finally:
            ClassMapStyler._alive.discard(self)


def style_output_on_load(
    context: QgsProcessingContext,
    output: str,
    classes: Sequence[ClassInfo],
    name: Optional[str] = None,
) -> bool:
    """If Processing will load ``output`` (a layer id or path) when the algorithm completes, style
    it then. Returns whether a post-processor was set."""
    if not context.willLoadLayerOnCompletion(output):
        return False
    details = context.layerToLoadOnCompletionDetails(output)
    details.setPostProcessor(ClassMapStyler.create(classes, name))
    return True
