"""The "Correct the map" panel: where corrections go, the class palette, the edit and refine
buttons, and what the last refine measured. Widgets and signals only; what the buttons do is in
:mod:`.controller`."""

from __future__ import annotations

import html
from typing import Any, Mapping, Optional

from qgis.core import QgsFieldProxyModel, QgsMapLayerProxyModel
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..i18n import tr
from .palette import ClassPalette


def _label(parent: QWidget, text: str = "") -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    return label


def accuracy_text(accuracy: Mapping[str, Any]) -> str:
    """``"Source model: 71 % (54 of 76, 95 % CI 60–80 %); refined: 88 % (…)"`` from a refine
    reply's ``accuracy``; '' when it holds neither."""
    parts = []
    for key, name in (("source", tr("source model")), ("refined", tr("refined"))):
        entry = accuracy.get(key) or {}
        if "oa" not in entry:
            continue
        text = f"{name}: {100 * float(entry['oa']):.0f} %"
        details = []
        if "correct" in entry and "n" in entry:
            details.append(tr("{} of {}").format(entry["correct"], entry["n"]))
        ci = entry.get("ci")
        if ci and len(ci) == 2:
            details.append(tr("95 % CI {:.0f}–{:.0f} %").format(100 * ci[0], 100 * ci[1]))
        parts.append(text + (f" ({', '.join(details)})" if details else ""))
    if not parts:
        return ""
    text = "; ".join(parts)
    text = text[0].upper() + text[1:]
    folds = accuracy.get("folds")
    if folds:
        text += tr(
            " — {}-fold cross-validation on the places you corrected (not the map's accuracy: "
            "a random sample of points measures that)"
        ).format(folds)
    return text


class CorrectionsPanel(QWidget):
    """The section's widgets. Its buttons emit the signals below; ``palette`` is a
    :class:`ClassPalette`; labels wrap so the dock stays narrow."""

    correctToggled = pyqtSignal(bool)  # noqa: N815 (Qt naming)
    sourceChanged = pyqtSignal()  # noqa: N815
    undoRequested = pyqtSignal()  # noqa: N815
    redoRequested = pyqtSignal()  # noqa: N815
    refineRequested = pyqtSignal()  # noqa: N815
    undoRefineRequested = pyqtSignal()  # noqa: N815
    resetRequested = pyqtSignal()  # noqa: N815
    saveRequested = pyqtSignal(str)  # noqa: N815
    applyRequested = pyqtSignal()  # noqa: N815
    cancelRequested = pyqtSignal()  # noqa: N815

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.intro_label = _label(
            self,
            tr(
                "Click the map to add a point of the chosen class, drag to draw a stroke, "
                "right-click to remove one; then Refine."
            ),
        )
        layout.addWidget(self.intro_label)
        layout.addWidget(_label(self, tr("Corrections layer (empty: a new one beside the map)")))
        self.reference_combo = QgsMapLayerComboBox(self)
        self.reference_combo.setFilters(
            QgsMapLayerProxyModel.PointLayer
            | QgsMapLayerProxyModel.LineLayer
            | QgsMapLayerProxyModel.PolygonLayer
        )
        self.reference_combo.setAllowEmptyLayer(True)
        self.reference_combo.setLayer(None)
        layout.addWidget(self.reference_combo)
        self.field_combo = QgsFieldComboBox(self)
        self.field_combo.setFilters(QgsFieldProxyModel.Int | QgsFieldProxyModel.LongLong)
        self.field_combo.setToolTip(tr("The integer field holding the class codes"))
        layout.addWidget(self.field_combo)
        self.correct_button = QPushButton(tr("Correct"), self)
        self.correct_button.setCheckable(True)
        self.correct_button.setToolTip(tr("Draw corrections on the map"))
        layout.addWidget(self.correct_button)
        self.palette = ClassPalette(self)
        layout.addWidget(self.palette)

        grid = QGridLayout()
        self.undo_button = QPushButton(tr("Undo"), self)
        self.redo_button = QPushButton(tr("Redo"), self)
        self.refine_button = QPushButton(tr("Refine"), self)
        self.refine_button.setToolTip(tr("Fit the model to your corrections and redraw the map"))
        self.undo_refine_button = QPushButton(tr("Undo refine"), self)
        self.reset_button = QPushButton(tr("Reset to source model"), self)
        self.save_button = QPushButton(tr("Save refined model…"), self)
        self.apply_button = QPushButton(tr("Apply to the whole layer"), self)
        self.apply_button.setToolTip(
            tr(
                "Adapt the model to the whole layer (minutes), fit it and the source model to "
                "your corrections, and deliver the one that gets more of them right"
            )
        )
        self.apply_button.setEnabled(False)  # until there is a correction
        self.cancel_button = QPushButton(tr("Stop"), self)
        self.cancel_button.setToolTip(tr("Stop the engine's work (it restarts when needed)"))
        pairs = (
            (self.undo_button, self.redo_button),
            (self.refine_button, self.undo_refine_button),
        )
        for row, (left, right) in enumerate(pairs):
            grid.addWidget(left, row, 0)
            grid.addWidget(right, row, 1)
        wide = (self.reset_button, self.save_button, self.apply_button, self.cancel_button)
        for row, button in enumerate(wide, start=len(pairs)):  # one a row: the dock stays narrow
            grid.addWidget(button, row, 0, 1, 2)
        layout.addLayout(grid)
        self.status_label = _label(self)
        self.accuracy_label = _label(self)
        self.problems_label = _label(self)
        for label in (self.status_label, self.accuracy_label, self.problems_label):
            layout.addWidget(label)
        self._connect()

    def _connect(self) -> None:
        self.reference_combo.layerChanged.connect(self._on_reference)
        self.field_combo.fieldChanged.connect(lambda _: self.sourceChanged.emit())
        self.correct_button.toggled.connect(self.correctToggled)
        self.undo_button.clicked.connect(self.undoRequested)
        self.redo_button.clicked.connect(self.redoRequested)
        self.refine_button.clicked.connect(self.refineRequested)
        self.undo_refine_button.clicked.connect(self.undoRefineRequested)
        self.reset_button.clicked.connect(self.resetRequested)
        self.save_button.clicked.connect(self.ask_save_path)
        self.apply_button.clicked.connect(self.applyRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)

    def _on_reference(self, layer: Any) -> None:
        self.field_combo.setLayer(layer)
        self.field_combo.setEnabled(layer is not None)
        self.sourceChanged.emit()

    def ask_save_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, tr("Save the refined model"), "", tr("LoveCS models (*.lovecs)")
        )
        if path:
            self.saveRequested.emit(path if path.endswith(".lovecs") else path + ".lovecs")

    # -- what the controller shows ----------------------------------------------------------------
    def set_counts(self, counts: Mapping[int, int]) -> None:
        self.palette.set_counts(counts)
        self.apply_button.setEnabled(sum(counts.values()) > 0)

    def set_busy(self, busy: bool) -> None:
        for button in (
            self.refine_button,
            self.undo_refine_button,
            self.reset_button,
            self.save_button,
        ):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_refine(self, reply: Mapping[str, Any]) -> None:
        """The accuracy and problems of a refine reply."""
        self.accuracy_label.setText(accuracy_text(reply.get("accuracy") or {}))
        problems = [str(p) for p in reply.get("problems") or []]
        self.problems_label.setText(
            "<span style='color:#b06000'>{}</span>".format(
                "<br>".join(html.escape(tr("Note: {}").format(p)) for p in problems)
            )
            if problems
            else ""
        )
