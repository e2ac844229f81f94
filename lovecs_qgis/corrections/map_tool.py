"""The "Correct" map tool: a click adds a point of the chosen class, a drag draws a stroke (a
line), a right click (or Delete at the cursor) removes the nearest correction within a few
pixels; Ctrl+Z / Ctrl+Shift+Z undo and redo. Positions are taken in the canvas's CRS and stored
in each layer's own CRS; edits stay in the layers' edit buffers (saved by the controller)."""

from __future__ import annotations

from typing import Optional

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QKeyEvent

from ..i18n import tr
from .history import EditHistory
from .layer import CorrectionSet

#: A press moved further than this (pixels) is a stroke, not a click.
DRAG_PIXELS = 4
#: Right click / Delete remove the nearest correction within this many pixels.
PICK_PIXELS = 8


class CorrectionTool(QgsMapTool):
    """Edits a :class:`CorrectionSet` with the mouse; ``code`` is the class drawn.

    Signals: ``edited(layer)`` after a feature was added or removed (the history records it),
    ``message(str)`` when an edit is not possible (no class chosen, no layer for strokes)."""

    edited = pyqtSignal(object)
    message = pyqtSignal(str)

    def __init__(
        self,
        canvas: QgsMapCanvas,
        corrections: CorrectionSet,
        history: Optional[EditHistory] = None,
    ) -> None:
        super().__init__(canvas)
        self.corrections = corrections
        self.history = history
        self.code: Optional[int] = None
        self._press: Optional[tuple[int, int]] = None
        self._stroke: list[QgsPointXY] = []
        self._dragging = False
        self._cursor_map: Optional[QgsPointXY] = None
        self._band = QgsRubberBand(canvas, QgsWkbTypes.LineGeometry)
        self._band.setWidth(2)
        self._band.setColor(QColor(255, 0, 255, 200))
        self.setCursor(Qt.CrossCursor)

    # -- mouse ------------------------------------------------------------------------------------
    def canvasPressEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802 (Qt naming)
        if e.button() == Qt.LeftButton:
            self._press = (e.pixelPoint().x(), e.pixelPoint().y())
            self._stroke = [e.mapPoint()]
            self._dragging = False

    def canvasMoveEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802
        self._cursor_map = e.mapPoint()
        if self._press is None or not e.buttons() & Qt.LeftButton:
            return
        x, y = self._press
        if not self._dragging and (
            abs(e.pixelPoint().x() - x) > DRAG_PIXELS or abs(e.pixelPoint().y() - y) > DRAG_PIXELS
        ):
            self._dragging = True
            self._band.reset(QgsWkbTypes.LineGeometry)
            self._band.addPoint(self._stroke[0])
        if self._dragging:
            self._stroke.append(e.mapPoint())
            self._band.addPoint(e.mapPoint())

    def canvasReleaseEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802
        self._cursor_map = e.mapPoint()
        if e.button() == Qt.RightButton:
            self.remove_nearest(e.mapPoint())
            return
        if e.button() != Qt.LeftButton or self._press is None:
            return
        stroke, dragging = self._stroke + [e.mapPoint()], self._dragging
        self._press, self._stroke, self._dragging = None, [], False
        self._band.reset(QgsWkbTypes.LineGeometry)
        if dragging:
            self.add_stroke(stroke)
        else:
            self.add_point(e.mapPoint())

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        if e.key() in (Qt.Key_Delete, Qt.Key_Backspace) and self._cursor_map is not None:
            self.remove_nearest(self._cursor_map)
        elif e.matches(e.Undo) and self.history is not None:
            self.history.undo()
        elif e.matches(e.Redo) and self.history is not None:
            self.history.redo()
        else:
            e.ignore()
            return
        e.accept()

    def deactivate(self) -> None:
        self._band.reset(QgsWkbTypes.LineGeometry)
        super().deactivate()

    # -- edits ------------------------------------------------------------------------------------
    def _new_feature(self, layer: QgsVectorLayer, geometry: QgsGeometry) -> Optional[QgsFeature]:
        if self.code is None:
            self.message.emit(tr("Choose a class in the palette first."))
            return None
        feature = QgsFeature(layer.fields())
        feature.setAttribute(self.corrections.class_field, int(self.code))
        feature.setGeometry(geometry)
        return feature

    def _add(self, layer: QgsVectorLayer, geometry: QgsGeometry, what: str) -> Optional[int]:
        feature = self._new_feature(layer, geometry)
        if feature is None:
            return None
        if not layer.isEditable():
            layer.startEditing()
        layer.beginEditCommand(what)
        ok = layer.addFeature(feature)
        layer.endEditCommand()
        if not ok:
            self.message.emit(tr("Cannot add to '{}'.").format(layer.name()))
            return None
        layer.triggerRepaint()
        if self.history is not None:
            self.history.record(layer)
        self.edited.emit(layer)
        return feature.id()

    def add_point(self, map_point: QgsPointXY) -> Optional[int]:
        """A point of the chosen class at ``map_point`` (canvas CRS); its feature id."""
        layer = self.corrections.point_layer
        if layer is None:
            self.message.emit(tr("This layer takes no points: draw on a point layer."))
            return None
        point = self.toLayerCoordinates(layer, map_point)
        return self._add(layer, QgsGeometry.fromPointXY(point), tr("Add a correction point"))

    def add_stroke(self, map_points: list[QgsPointXY]) -> Optional[int]:
        """A line of the chosen class through ``map_points`` (canvas CRS); its feature id."""
        layer = self.corrections.line_layer
        if layer is None:
            self.message.emit(tr("This layer takes no strokes: click points instead."))
            return None
        points = [self.toLayerCoordinates(layer, p) for p in map_points]
        points = [p for i, p in enumerate(points) if i == 0 or p != points[i - 1]]
        if len(points) < 2:
            return self.add_point(map_points[0])
        return self._add(layer, QgsGeometry.fromPolylineXY(points), tr("Add a correction stroke"))

    def nearest(
        self, map_point: QgsPointXY, pixels: float = PICK_PIXELS
    ) -> Optional[tuple[QgsVectorLayer, int]]:
        """The correction nearest to ``map_point`` within ``pixels`` on screen, as
        ``(layer, feature id)``; None when there is none that close."""
        canvas = self.canvas()
        tolerance = pixels * canvas.mapUnitsPerPixel()
        box = QgsRectangle(
            map_point.x() - tolerance,
            map_point.y() - tolerance,
            map_point.x() + tolerance,
            map_point.y() + tolerance,
        )
        target = QgsGeometry.fromPointXY(map_point)
        canvas_crs = canvas.mapSettings().destinationCrs()
        best: Optional[tuple[float, QgsVectorLayer, int]] = None
        for layer in self.corrections.layers:
            to_canvas = QgsCoordinateTransform(layer.crs(), canvas_crs, QgsProject.instance())
            request = QgsFeatureRequest().setFilterRect(self.toLayerCoordinates(layer, box))
            request.setNoAttributes()
            for feature in layer.getFeatures(request):
                geometry = QgsGeometry(feature.geometry())
                if geometry.isNull():
                    continue
                if canvas_crs.isValid() and layer.crs() != canvas_crs:
                    geometry.transform(to_canvas)
                distance = geometry.distance(target)
                if distance <= tolerance and (best is None or distance < best[0]):
                    best = (distance, layer, feature.id())
        return None if best is None else (best[1], best[2])

    def remove_nearest(self, map_point: QgsPointXY) -> bool:
        """Remove the correction nearest to ``map_point`` (see :meth:`nearest`)."""
        found = self.nearest(map_point)
        if found is None:
            return False
        layer, fid = found
        if not layer.isEditable():
            layer.startEditing()
        layer.beginEditCommand(tr("Remove a correction"))
        ok = layer.deleteFeature(fid)
        layer.endEditCommand()
        if not ok:
            return False
        layer.triggerRepaint()
        if self.history is not None:
            self.history.record(layer)
        self.edited.emit(layer)
        return True
