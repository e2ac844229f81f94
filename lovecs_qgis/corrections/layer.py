"""The corrections of a map as vector layers.

One GeoPackage per map (:func:`contract.corrections_path`: ``map.corrections.gpkg``) holds one
OGR layer, :data:`contract.CORRECTIONS_LAYER`, of any geometry type, with the integer class field
:data:`contract.CORRECTIONS_CLASS_FIELD`: the engine (``lovecs adapt --points``, the refine
session) reads it as it is. QGIS shows it as two layers filtered by geometry type (clicked points,
drawn strokes), each styled with the model card's class colours and names. A reference layer
from elsewhere (SCP, dzetsaka, field work) can be used instead, with its own class field.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsLayerTreeGroup,
    QgsProject,
    QgsRendererCategory,
    QgsSymbol,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from ..engine import card as model_card
from ..engine import contract
from ..i18n import tr

ClassInfo = model_card.ClassInfo

#: OGR geometry-type filters of the two layers QGIS shows, and their names' suffixes.
POINTS, STROKES = "Point", "LineString"
_KINDS = {POINTS: "points", STROKES: "strokes"}
_INTEGER_TYPES = (QVariant.Int, QVariant.LongLong, QVariant.UInt, QVariant.ULongLong)
#: Sizes of the symbols: points in mm, strokes' width in mm.
POINT_SIZE, STROKE_WIDTH = 3.0, 1.2


class CorrectionsLayerError(RuntimeError):
    """The corrections file cannot be created or opened; the message says why."""


@dataclass
class CorrectionSet:
    """The layers corrections are read from and drawn into, and their class field.

    ``point_layer``/``line_layer``: where the map tool adds a click or a stroke (None: that kind
    of edit is not possible, e.g. a polygon reference layer); ``layers``: every layer whose
    features count as corrections (and can be removed)."""

    layers: list[QgsVectorLayer]
    class_field: str
    point_layer: Optional[QgsVectorLayer] = None
    line_layer: Optional[QgsVectorLayer] = None
    path: Optional[Path] = None  # the GeoPackage of a map's own corrections
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[int, int]:
        """Features per class code, edit buffers included."""
        return count_per_class(self.layers, self.class_field)

    def feature_count(self) -> int:
        return sum(self.counts().values())


def integer_fields(layer: QgsVectorLayer) -> list[str]:
    """The names of a vector layer's integer fields (candidates for the class field)."""
    return [f.name() for f in layer.fields() if f.type() in _INTEGER_TYPES]


def count_per_class(layers: Iterable[QgsVectorLayer], class_field: str) -> dict[int, int]:
    """Features per class code over ``layers`` (uncommitted edits included; no code: -1)."""
    counts: dict[int, int] = {}
    for layer in layers:
        index = layer.fields().indexOf(class_field)
        if index < 0:
            continue
        for feature in layer.getFeatures():
            value = feature.attribute(index)
            try:
                code = int(value)
            except (TypeError, ValueError):
                code = -1
            counts[code] = counts.get(code, 0) + 1
    return counts


def create_corrections_file(path: Path, crs: QgsCoordinateReferenceSystem) -> Path:
    """An empty GeoPackage at ``path`` with the corrections layer (any geometry, ``crs``)."""
    fields = QgsFields()
    fields.append(QgsField(contract.CORRECTIONS_CLASS_FIELD, QVariant.Int))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = contract.CORRECTIONS_LAYER
    writer = QgsVectorFileWriter.create(
        str(path), fields, QgsWkbTypes.Unknown, crs, QgsCoordinateTransformContext(), options
    )
    error = writer.errorMessage() if writer.hasError() else ""
    del writer  # closes the file
    if error:
        raise CorrectionsLayerError(tr("Cannot create {}: {}").format(path, error))
    return path


def layer_uri(path: Path, kind: str) -> str:
    """The OGR source of the ``kind`` (:data:`POINTS`, :data:`STROKES`) features of ``path``."""
    return f"{path}|layername={contract.CORRECTIONS_LAYER}|geometrytype={kind}"


def class_renderer(
    classes: Sequence[ClassInfo], geometry: QgsWkbTypes.GeometryType, class_field: str
) -> QgsCategorizedSymbolRenderer:
    """One category per class (the card's colour and name) on ``class_field``."""
    categories = []
    for c in classes:
        symbol = QgsSymbol.defaultSymbol(geometry)
        symbol.setColor(QColor(c.color))
        if geometry == QgsWkbTypes.PointGeometry:
            symbol.setSize(POINT_SIZE)
        elif geometry == QgsWkbTypes.LineGeometry:
            symbol.setWidth(STROKE_WIDTH)
        categories.append(QgsRendererCategory(int(c.code), symbol, f"{c.code} {c.name}"))
    return QgsCategorizedSymbolRenderer(class_field, categories)


def style_layer(layer: QgsVectorLayer, classes: Sequence[ClassInfo], class_field: str) -> None:
    """Categorised by the class field with the card's colours and names."""
    layer.setRenderer(class_renderer(classes, layer.geometryType(), class_field))
    layer.triggerRepaint()


def _find_in_project(project: QgsProject, uri: str) -> Optional[QgsVectorLayer]:
    for layer in project.mapLayers().values():
        if isinstance(layer, QgsVectorLayer) and layer.source() == uri:
            return layer
    return None


def _group(project: QgsProject, name: str) -> QgsLayerTreeGroup:
    root = project.layerTreeRoot()
    group = root.findGroup(name)
    return group if group is not None else root.insertGroup(0, name)


def open_corrections(
    map_path: str | os.PathLike[str],
    crs: QgsCoordinateReferenceSystem,
    classes: Sequence[ClassInfo],
    project: Optional[QgsProject] = None,
    title: str = "",
) -> CorrectionSet:
    """The corrections of the map ``map_path``: the GeoPackage beside it, created (in ``crs``)
    when missing, shown as a points and a strokes layer in the project (reused when already
    there), styled with ``classes`` and in edit mode."""
    project = project or QgsProject.instance()
    path = contract.corrections_path(map_path)
    if not path.is_file():
        create_corrections_file(path, crs)
    layers: dict[str, QgsVectorLayer] = {}
    title = title or Path(map_path).stem
    for kind, label in _KINDS.items():
        uri = layer_uri(path, kind)
        layer = _find_in_project(project, uri)
        if layer is None:
            layer = QgsVectorLayer(uri, f"{title} — {tr('corrections')} ({tr(label)})", "ogr")
            if not layer.isValid():
                raise CorrectionsLayerError(tr("Cannot open the corrections in {}").format(path))
            style_layer(layer, classes, contract.CORRECTIONS_CLASS_FIELD)
            project.addMapLayer(layer, False)
            _group(project, tr("LoveCS corrections")).insertLayer(0, layer)
        if not layer.isEditable():
            layer.startEditing()
        layers[kind] = layer
    return CorrectionSet(
        [layers[POINTS], layers[STROKES]],
        contract.CORRECTIONS_CLASS_FIELD,
        point_layer=layers[POINTS],
        line_layer=layers[STROKES],
        path=path,
    )


def reference_set(
    layer: QgsVectorLayer, class_field: str, classes: Sequence[ClassInfo] = ()
) -> CorrectionSet:
    """An existing layer of labelled points, lines or polygons (SCP, dzetsaka, field work) as the
    corrections: clicks add points to a point layer, strokes lines to a line layer. With
    ``classes``, it is styled with them."""
    if class_field not in integer_fields(layer):
        raise CorrectionsLayerError(
            tr("'{}' has no integer field '{}' (its integer fields: {})").format(
                layer.name(), class_field, ", ".join(integer_fields(layer)) or tr("none")
            )
        )
    kind = layer.geometryType()
    if classes:
        style_layer(layer, classes, class_field)
    if layer.dataProvider().capabilities() & layer.dataProvider().AddFeatures:
        if not layer.isEditable():
            layer.startEditing()
    editable = layer.isEditable()
    return CorrectionSet(
        [layer],
        class_field,
        point_layer=layer if editable and kind == QgsWkbTypes.PointGeometry else None,
        line_layer=layer if editable and kind == QgsWkbTypes.LineGeometry else None,
    )


def save_edits(corrections: CorrectionSet) -> list[str]:
    """Commit every layer's edits to disk and stay in edit mode; the errors, if any."""
    errors: list[str] = []
    for layer in corrections.layers:
        if layer.isEditable() and layer.isModified():
            if not layer.commitChanges(False):
                errors += layer.commitErrors()
    return errors


def write_snapshot(
    corrections: CorrectionSet, folder: Path, stem: str = "corrections"
) -> tuple[Path, int]:
    """Every feature of the corrections, uncommitted edits included, in one new GeoPackage in
    ``folder`` (layer :data:`contract.CORRECTIONS_LAYER`, field ``class_field``, the first layer's
    CRS): what the engine reads. Returns ``(path, features written)``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{stem}.snapshot-{uuid.uuid4().hex[:8]}.gpkg"
    crs = corrections.layers[0].crs()
    fields = QgsFields()
    fields.append(QgsField(corrections.class_field, QVariant.Int))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = contract.CORRECTIONS_LAYER
    context = QgsProject.instance().transformContext()
    writer = QgsVectorFileWriter.create(
        str(path), fields, QgsWkbTypes.Unknown, crs, context, options
    )
    if writer.hasError():
        message = writer.errorMessage()
        del writer
        raise CorrectionsLayerError(tr("Cannot write {}: {}").format(path, message))
    written = 0
    for layer in corrections.layers:
        transform = None
        if layer.crs() != crs:
            transform = QgsCoordinateTransform(layer.crs(), crs, context)
        index = layer.fields().indexOf(corrections.class_field)
        for source in layer.getFeatures():
            geometry = source.geometry()
            if transform is not None and not geometry.isNull():
                geometry.transform(transform)
            feature = QgsFeature(fields)
            feature.setGeometry(geometry)
            feature.setAttribute(0, source.attribute(index))
            writer.addFeature(feature)
            written += 1
    del writer
    return path, written
