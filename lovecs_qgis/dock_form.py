"""The dock's form: its widgets, the settings they keep between sessions, and enabling them
while a job runs. What the buttons do is in :mod:`lovecs_qgis.dock`.

No text may widen the dock (and so QGIS's window): labels wrap and ignore their text's width,
combo boxes do not size to their longest item, the log wraps and the engine's raw output
scrolls sideways, and the whole form sits in a scroll area that only scrolls up and down."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import QgsMapLayerProxyModel, QgsSettings
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QStandardPaths, Qt, QTimer
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .corrections.panel import CorrectionsPanel
from .details import DetailsDialog
from .engine import card as model_card
from .engine import contract
from .i18n import tr
from .paths import default_model_path

SETTINGS = "lovecs/dock/"
AREAS = ("Whole layer", "Current map extent")


def wrapping_label(parent: QWidget, text: str = "") -> QLabel:
    """A label that wraps and never asks for its text's width."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    return label


def narrow(combo: QComboBox) -> QComboBox:
    """A combo box as wide as the dock lets it be, not as its longest item."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


class DockForm(QgsDockWidget):
    """The panel's widgets, laid out; settings restored from the last session."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(tr("LoveCS land cover"), parent)
        self.setObjectName("LoveCSDock")
        self.details: Optional[DetailsDialog] = None
        self.last_error = ""  # the last run's error, shown once by the Details window
        self._build()
        self._restore_settings()

    def _build(self) -> None:
        """The form in a scroll area that only scrolls up and down, section by section."""
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.NoFrame)
        body = QWidget(scroll)
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self._build_inputs(body, form)
        self._build_options(body, form)
        layout.addLayout(form)
        self._build_buttons(body, layout)
        self._build_progress(body, layout)
        self._build_log(body, layout)
        layout.addStretch(1)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)

    def _build_inputs(self, body: QWidget, form: QFormLayout) -> None:
        """The raster layer, the model, its classes and the bands fed to it."""
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        narrow(self.layer_combo)
        form.addRow(tr("Raster layer"), self.layer_combo)
        self.model_widget = QgsFileWidget(body)
        self.model_widget.setFilter(tr("LoveCS models (*.lovecs)"))
        self.model_widget.setDialogTitle(tr("Choose a LoveCS model"))
        form.addRow(tr("Model"), self.model_widget)
        self.model_label = wrapping_label(body)
        form.addRow("", self.model_label)
        self.legend = QListWidget(body)
        self.legend.setMaximumHeight(110)
        form.addRow(tr("Classes"), self.legend)
        self.bands_edit = QLineEdit(body)
        self.bands_edit.setPlaceholderText(tr("all bands but alpha"))
        self.bands_edit.setToolTip(
            tr("Layer bands fed to the model, in the model's order, e.g. 3,2,1")
        )
        form.addRow(tr("Bands"), self.bands_edit)

    def _build_options(self, body: QWidget, form: QFormLayout) -> None:
        """How the run goes: device, preset, area, output folder, confidence layer, Ray."""
        self.device_combo = narrow(QComboBox(body))
        self.device_combo.addItem(tr("Automatic (GPU if available)"), "auto")
        self.device_combo.addItem(tr("CPU"), "cpu")
        form.addRow(tr("Device"), self.device_combo)
        self.device_note = wrapping_label(body, tr("looking for GPUs…"))
        form.addRow("", self.device_note)
        self.preset_combo = narrow(QComboBox(body))
        for preset in contract.ADAPT_PRESETS:
            self.preset_combo.addItem(preset, preset)
        form.addRow(tr("Preset"), self.preset_combo)
        self.estimate_label = wrapping_label(body)
        form.addRow("", self.estimate_label)
        self.area_combo = narrow(QComboBox(body))
        self.area_combo.addItems([tr(area) for area in AREAS])
        form.addRow(tr("Area"), self.area_combo)
        self.output_widget = QgsFileWidget(body)
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        form.addRow(tr("Output folder"), self.output_widget)
        self.confidence_check = QCheckBox(tr("Also add the confidence layer"), body)
        form.addRow("", self.confidence_check)
        self.ray_edit = QLineEdit(body)
        self.ray_edit.setPlaceholderText(tr("empty: this computer, no Ray"))
        self.ray_edit.setToolTip(
            tr(
                "Classify only on a Ray cluster: 'local' starts one on this computer, 'auto' "
                "joins the one started here with 'ray start', or give its address (host:port). "
                "The map is the same; the engine's Python needs Ray"
            )
        )
        form.addRow(tr("Ray cluster"), self.ray_edit)

    def _build_buttons(self, body: QWidget, layout: QVBoxLayout) -> None:
        """Adapt, Classify only, Cancel."""
        buttons = QHBoxLayout()
        self.adapt_button = QPushButton(tr("Adapt to this image"), body)
        self.adapt_button.setToolTip(
            tr("Adapt the model to this scene (no labels needed), then map it")
        )
        self.classify_button = QPushButton(tr("Classify only"), body)
        self.classify_button.setToolTip(tr("Map the scene with the model as it is"))
        self.cancel_button = QPushButton(tr("Cancel"), body)
        for button in (self.adapt_button, self.classify_button, self.cancel_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)

    def _build_progress(self, body: QWidget, layout: QVBoxLayout) -> None:
        """The progress bar, the stage and time left, and the corrections group."""
        self.progress_bar = QProgressBar(body)
        self.progress_bar.setRange(0, 100)
        layout.addWidget(self.progress_bar)
        self.stage_label = wrapping_label(body)
        self.time_label = wrapping_label(body)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.time_label)
        self.corrections_group = QgsCollapsibleGroupBox(tr("Correct the map"), body)
        self.corrections_panel = CorrectionsPanel(self.corrections_group)
        QVBoxLayout(self.corrections_group).addWidget(self.corrections_panel)
        layout.addWidget(self.corrections_group)

    def _build_log(self, body: QWidget, layout: QVBoxLayout) -> None:
        """The collapsed log group: the log in plain words, or the engine's raw output."""
        self.log_group = QgsCollapsibleGroupBox(tr("Log"), body)
        log_layout = QVBoxLayout(self.log_group)
        self.log_view = self._log_view(QPlainTextEdit.WidgetWidth)
        self.raw_view = self._log_view(QPlainTextEdit.NoWrap)  # scrolls sideways
        self.raw_view.hide()
        self.raw_button = QCheckBox(tr("Show the engine's output"), self.log_group)
        self.raw_button.setToolTip(tr("The engine's own lines, as it wrote them"))
        self.raw_button.toggled.connect(self.show_raw_log)
        for widget in (self.log_view, self.raw_view, self.raw_button):
            log_layout.addWidget(widget)
        self.log_group.setCollapsed(True)
        # expanding the group shows every child: keep one of the two logs hidden
        self.log_group.collapsedStateChanged.connect(
            lambda _: self.show_raw_log(self.raw_button.isChecked())
        )
        layout.addWidget(self.log_group)

    # -- settings ---------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = QgsSettings()
        default_model = default_model_path()
        model = s.value(SETTINGS + "model", str(default_model) if default_model else "")
        if model and not Path(model).is_file() and default_model:
            model = str(default_model)
        self.model_widget.setFilePath(model or "")
        self._select_data(self.device_combo, s.value(SETTINGS + "device", "auto"))
        self._select_data(
            self.preset_combo, s.value(SETTINGS + "preset", contract.DEFAULT_ADAPT_PRESET)
        )
        self.area_combo.setCurrentIndex(int(s.value(SETTINGS + "area", 0)))
        documents = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
        self.output_widget.setFilePath(
            s.value(SETTINGS + "output", str(Path(documents) / "LoveCS"))
        )
        self.confidence_check.setChecked(s.value(SETTINGS + "confidence", False, type=bool))
        self.ray_edit.setText(s.value(SETTINGS + "ray", ""))

    def save_settings(self) -> None:
        s = QgsSettings()
        s.setValue(SETTINGS + "model", self.model_widget.filePath())
        s.setValue(SETTINGS + "device", self.device_combo.currentData())
        s.setValue(SETTINGS + "preset", self.preset_combo.currentData())
        s.setValue(SETTINGS + "area", self.area_combo.currentIndex())
        s.setValue(SETTINGS + "output", self.output_widget.filePath())
        s.setValue(SETTINGS + "confidence", self.confidence_check.isChecked())
        s.setValue(SETTINGS + "ray", self.ray_edit.text().strip())

    def show_model(
        self, card: Optional[model_card.ModelCard], text: str = "", problem: bool = False
    ) -> None:
        """The model label and the legend of ``card`` (a model card; None: ``text`` alone)."""
        self.legend.clear()
        if card is None:
            self.model_label.setText(f"<span style='color:#b00'>{text}</span>" if problem else text)
            return
        domain = tr("adapted model") if card.default_domain == "target" else tr("source model")
        gsd = f", {card.gsd:g} m" if card.gsd else ""
        self.model_label.setText(
            tr("{} — {} bands ({}){}, {}").format(
                card.name, card.band_count, ", ".join(card.band_names), gsd, domain
            )
        )
        for c in card.classes:
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(c.color))
            self.legend.addItem(QListWidgetItem(QIcon(pixmap), f"{c.code}  {c.name}"))

    @staticmethod
    def _select_data(combo: QComboBox, value: Any) -> None:
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _set_running(self, running: bool) -> None:
        for widget in (
            self.adapt_button,
            self.classify_button,
            self.layer_combo,
            self.model_widget,
            self.bands_edit,
            self.device_combo,
            self.preset_combo,
            self.area_combo,
            self.output_widget,
            self.ray_edit,
        ):
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _log_view(self, wrap: QPlainTextEdit.LineWrapMode) -> QPlainTextEdit:
        view = QPlainTextEdit(self.log_group)
        view.setReadOnly(True)
        view.setMaximumBlockCount(2000)
        view.setLineWrapMode(wrap)
        view.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
        view.setMinimumHeight(120)
        return view

    def show_raw_log(self, raw: bool) -> None:
        """The engine's raw output instead of the log in plain words (and back)."""
        self.raw_view.setVisible(raw)
        self.log_view.setVisible(not raw)

    def log(self, text: str) -> None:
        """A line for people (kept in the raw log too, where it belongs in time)."""
        self.log_view.appendPlainText(text)
        self.raw_view.appendPlainText(text)

    def log_raw(self, text: str) -> None:
        """An engine line for the raw log only."""
        self.raw_view.appendPlainText(text)

    def show_log(self) -> None:
        """The Details window: the last error once, the log, the engine's output on request."""
        self.log_group.setCollapsed(False)
        self.show()
        self.raise_()
        if self.details is not None:
            self.details.close()
        self.details = DetailsDialog(
            self, self.last_error, self.log_view.toPlainText(), self.raw_view.toPlainText()
        )
        self.details.show()
