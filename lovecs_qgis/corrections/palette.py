"""The class palette: the model card's classes as colour swatches with their names and how many
corrections each has; one class is selected (the one the map tool draws)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem, QWidget

from ..engine import card as model_card
from ..i18n import tr

ClassInfo = model_card.ClassInfo
SWATCH = 14


def swatch(color: str, size: int = SWATCH) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class ClassPalette(QListWidget):
    """One row per class: swatch, ``code name``, and its count of corrections.

    ``classChanged(int)`` carries the selected class code."""

    classChanged = pyqtSignal(int)  # noqa: N815 (Qt naming)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setMaximumHeight(130)
        self.classes: list[ClassInfo] = []
        self.counts: dict[int, int] = {}
        self.currentItemChanged.connect(self._emit_class)

    def set_classes(self, classes: Sequence[ClassInfo]) -> None:
        """Show ``classes``; the first is selected."""
        self.classes = list(classes)
        self.blockSignals(True)
        self.clear()
        for c in self.classes:
            item = QListWidgetItem(swatch(c.color), "")
            item.setData(Qt.UserRole, int(c.code))
            self.addItem(item)
        self.blockSignals(False)
        self.set_counts(self.counts)
        if self.count():
            self.setCurrentRow(0)

    def set_counts(self, counts: Mapping[int, int]) -> None:
        """Show how many corrections each class has."""
        self.counts = dict(counts)
        for row, c in enumerate(self.classes):
            count = self.counts.get(int(c.code), 0)
            self.item(row).setText(
                tr("{code}  {name}  ({count})").format(code=c.code, name=c.name, count=count)
            )

    def selected_code(self) -> Optional[int]:
        item = self.currentItem()
        return None if item is None else int(item.data(Qt.UserRole))

    def select_code(self, code: int) -> bool:
        for row in range(self.count()):
            if self.item(row).data(Qt.UserRole) == code:
                self.setCurrentRow(row)
                return True
        return False

    def _emit_class(self, current: Optional[QListWidgetItem], _previous: object) -> None:
        if current is not None:
            self.classChanged.emit(int(current.data(Qt.UserRole)))
