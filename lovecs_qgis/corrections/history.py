"""One undo history over several layers: each layer keeps its own edit buffer and undo stack
(``layer.undoStack()``); this remembers in which layer each edit was made, so Undo and Redo
go back and forth through the user's edits in order, whatever layer they touched."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import QObject, pyqtSignal


class EditHistory(QObject):
    """Undo/redo across layers. ``changed`` is emitted after every record, undo or redo."""

    changed = pyqtSignal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._done: list[QgsVectorLayer] = []
        self._undone: list[QgsVectorLayer] = []

    def record(self, layer: QgsVectorLayer) -> None:
        """An edit was just pushed on ``layer``'s undo stack."""
        self._done.append(layer)
        self._undone.clear()
        self.changed.emit()

    def can_undo(self) -> bool:
        return any(layer.undoStack().canUndo() for layer in self._done[-1:])

    def can_redo(self) -> bool:
        return any(layer.undoStack().canRedo() for layer in self._undone[-1:])

    def undo(self) -> bool:
        if not self.can_undo():
            return False
        layer = self._done.pop()
        layer.undoStack().undo()
        self._undone.append(layer)
        layer.triggerRepaint()
        self.changed.emit()
        return True

    def redo(self) -> bool:
        if not self.can_redo():
            return False
        layer = self._undone.pop()
        layer.undoStack().redo()
        self._done.append(layer)
        layer.triggerRepaint()
        self.changed.emit()
        return True

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
        self.changed.emit()
