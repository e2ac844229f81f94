"""The "Adapt to this image" dock: from the selected raster layer to a styled land-cover layer.

The work runs in an :class:`~lovecs_qgis.runner.EngineTask` (the engine in a child process); the
dock only touches widgets on the main thread, and adds layers when the task's ``done`` arrives.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsMapLayerProxyModel,
                       QgsProject, QgsRasterLayer, QgsSettings)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QStandardPaths, QTimer
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel,
                                 QLineEdit, QListWidget, QListWidgetItem, QMessageBox,
                                 QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from .algorithms.base import data_band_count
from .engine import card as model_card
from .engine import contract, estimate
from .jobs import (Job, JobError, JobRequest, auto_bands, band_problem, build_job,
                   format_seconds, free_path, health_text, safe_name, stage_text)
from .paths import default_model_path
from .runner import EngineEvent, EngineOutcome, Status
from .styling import apply_class_style
from .task import EngineTask

SETTINGS = "lovecs/dock/"
AREAS = ("Whole layer", "Current map extent")
ModelCard = model_card.ModelCard


def clip_to_extent(raster: str, extent: Any, vrt: Path) -> Path:
    """A VRT of the part of ``raster`` inside ``extent`` (a QgsRectangle in the raster's CRS)."""
    from osgeo import gdal

    gdal.Translate(str(vrt), raster, format="VRT",
                   projWin=[extent.xMinimum(), extent.yMaximum(), extent.xMaximum(),
                            extent.yMinimum()])
    return vrt


class LoveCSDock(QgsDockWidget):
    """The panel; ``iface`` is QGIS's interface (or pytest-qgis's)."""

    def __init__(self, iface: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__("LoveCS land cover", parent)
        self.setObjectName("LoveCSDock")
        self.iface = iface
        self.task: Optional[EngineTask] = None
        self.job: Optional[Job] = None
        self.started = 0.0
        self.card: Optional[ModelCard] = None
        self.devices_task: Optional[EngineTask] = None
        self._build()
        self._restore_settings()
        self._connect()
        self.on_model_changed(self.model_widget.filePath())
        self.on_layer_changed(self.layer_combo.currentLayer())
        self._set_running(False)

    # -- widgets ----------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget(self)
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Raster layer", self.layer_combo)
        self.model_widget = QgsFileWidget(body)
        self.model_widget.setFilter("LoveCS models (*.lovecs)")
        self.model_widget.setDialogTitle("Choose a LoveCS model")
        form.addRow("Model", self.model_widget)
        self.model_label = QLabel(body)
        self.model_label.setWordWrap(True)
        form.addRow("", self.model_label)
        self.legend = QListWidget(body)
        self.legend.setMaximumHeight(110)
        form.addRow("Classes", self.legend)
        self.bands_edit = QLineEdit(body)
        self.bands_edit.setPlaceholderText("all bands but alpha")
        self.bands_edit.setToolTip("Layer bands fed to the model, in the model's order, e.g. 3,2,1")
        form.addRow("Bands", self.bands_edit)
        self.device_combo = QComboBox(body)
        self.device_combo.addItem("Automatic (GPU if available)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        form.addRow("Device", self.device_combo)
        self.device_note = QLabel("looking for GPUs…", body)
        self.device_note.setWordWrap(True)
        form.addRow("", self.device_note)
        self.preset_combo = QComboBox(body)
        for preset in contract.ADAPT_PRESETS:
            self.preset_combo.addItem(preset, preset)
        form.addRow("Preset", self.preset_combo)
        self.estimate_label = QLabel(body)
        self.estimate_label.setWordWrap(True)
        form.addRow("", self.estimate_label)
        self.area_combo = QComboBox(body)
        self.area_combo.addItems(AREAS)
        form.addRow("Area", self.area_combo)
        self.output_widget = QgsFileWidget(body)
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        form.addRow("Output folder", self.output_widget)
        self.confidence_check = QCheckBox("Also add the confidence layer", body)
        form.addRow("", self.confidence_check)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.adapt_button = QPushButton("Adapt to this image", body)
        self.adapt_button.setToolTip("Adapt the model to this scene (no labels needed), then map it")
        self.classify_button = QPushButton("Classify only", body)
        self.classify_button.setToolTip("Map the scene with the model as it is")
        self.cancel_button = QPushButton("Cancel", body)
        for button in (self.adapt_button, self.classify_button, self.cancel_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar(body)
        self.progress_bar.setRange(0, 100)
        layout.addWidget(self.progress_bar)
        self.stage_label = QLabel("", body)
        self.time_label = QLabel("", body)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.time_label)
        self.log_group = QgsCollapsibleGroupBox("Log", body)
        log_layout = QVBoxLayout(self.log_group)
        self.log_view = QPlainTextEdit(self.log_group)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        log_layout.addWidget(self.log_view)
        self.log_group.setCollapsed(True)
        layout.addWidget(self.log_group)
        layout.addStretch(1)
        self.setWidget(body)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)

    def _connect(self) -> None:
        self.layer_combo.layerChanged.connect(self.on_layer_changed)
        self.model_widget.fileChanged.connect(self.on_model_changed)
        self.preset_combo.currentIndexChanged.connect(lambda _: self.update_estimate())
        self.device_combo.currentIndexChanged.connect(lambda _: self.update_estimate())
        self.area_combo.currentIndexChanged.connect(lambda _: self.update_estimate())
        self.adapt_button.clicked.connect(lambda: self.start("adapt"))
        self.classify_button.clicked.connect(lambda: self.start("predict"))
        self.cancel_button.clicked.connect(self.cancel)
        self.timer.timeout.connect(self.update_times)
        if hasattr(self.iface, "layerTreeView") and hasattr(self.iface, "currentLayerChanged"):
            self.iface.currentLayerChanged.connect(self.follow_active_layer)

    # -- settings ---------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = QgsSettings()
        default_model = default_model_path()
        model = s.value(SETTINGS + "model", str(default_model) if default_model else "")
        if model and not Path(model).is_file() and default_model:
            model = str(default_model)
        self.model_widget.setFilePath(model or "")
        self._select_data(self.device_combo, s.value(SETTINGS + "device", "auto"))
        self._select_data(self.preset_combo, s.value(SETTINGS + "preset", "fast"))
        self.area_combo.setCurrentIndex(int(s.value(SETTINGS + "area", 0)))
        documents = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
        self.output_widget.setFilePath(s.value(SETTINGS + "output", str(Path(documents) / "LoveCS")))
        self.confidence_check.setChecked(s.value(SETTINGS + "confidence", False, type=bool))

    def save_settings(self) -> None:
        s = QgsSettings()
        s.setValue(SETTINGS + "model", self.model_widget.filePath())
        s.setValue(SETTINGS + "device", self.device_combo.currentData())
        s.setValue(SETTINGS + "preset", self.preset_combo.currentData())
        s.setValue(SETTINGS + "area", self.area_combo.currentIndex())
        s.setValue(SETTINGS + "output", self.output_widget.filePath())
        s.setValue(SETTINGS + "confidence", self.confidence_check.isChecked())

    @staticmethod
    def _select_data(combo: QComboBox, value: Any) -> None:
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    # -- reacting to the user ---------------------------------------------------------------------
    def follow_active_layer(self, layer: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and self.task is None:
            self.layer_combo.setLayer(layer)

    def on_layer_changed(self, layer: Any) -> None:
        if isinstance(layer, QgsRasterLayer) and self.card is not None:
            self.bands_edit.setText(auto_bands(self.card, layer.source(), data_band_count(layer)))
        self.update_estimate()

    def on_model_changed(self, path: str) -> None:
        self.legend.clear()
        self.card = None
        if not path:
            self.model_label.setText("Choose a model file (.lovecs)")
            return
        try:
            self.card = model_card.read_card(path)
        except model_card.ModelFileError as exc:
            self.model_label.setText(f"<span style='color:#b00'>{exc}</span>")
            return
        card = self.card
        domain = "adapted" if card.default_domain == "target" else "source"
        gsd = f", {card.gsd:g} m" if card.gsd else ""
        self.model_label.setText(f"{card.name} — {card.band_count} bands "
                                 f"({', '.join(card.band_names)}){gsd}, {domain} model")
        for c in card.classes:
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(c.color))
            self.legend.addItem(QListWidgetItem(QIcon(pixmap), f"{c.code}  {c.name}"))
        self.on_layer_changed(self.layer_combo.currentLayer())

    def update_estimate(self) -> None:
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self.estimate_label.setText("")
            return
        pixels = layer.width() * layer.height()
        if self.area_combo.currentIndex() == 1 and self.iface is not None:
            extent = self._extent_in_layer_crs(layer)
            if extent is not None:
                px = layer.rasterUnitsPerPixelX() * layer.rasterUnitsPerPixelY()
                pixels = min(pixels, int(extent.width() * extent.height() / max(px, 1e-12)))
        device = self.device_combo.currentData() or "auto"
        gpu = device.startswith("cuda") or (device == "auto" and self.device_combo.count() > 2)
        self.estimate_label.setText(estimate.describe_estimate(self.preset_combo.currentData(), pixels, gpu))

    def set_devices(self, outcome: EngineOutcome) -> None:
        """Fill the device list from ``lovecs devices`` (run in the background at start)."""
        self.devices_task = None
        if not outcome.ok:
            self.device_note.setText(f"the engine could not list devices: {outcome.error}")
            return
        for gpu in outcome.result.get("gpus", []):
            gib = 1024 ** 3
            label = (f"{gpu['name']} — {gpu['label']} ({gpu['free_memory'] / gib:.1f} of "
                     f"{gpu['total_memory'] / gib:.1f} GiB free)")
            if self.device_combo.findData(gpu["name"]) < 0:
                self.device_combo.addItem(label, gpu["name"])
        reason = outcome.result.get("cuda_unavailable") or ""
        self.device_note.setText(f"No GPU: {reason}; the CPU is used." if reason
                                 else "GPU ready.")
        self._select_data(self.device_combo, QgsSettings().value(SETTINGS + "device", "auto"))
        self.update_estimate()

    def look_for_devices(self) -> None:
        if self.devices_task is not None:
            return
        self.devices_task = EngineTask("LoveCS: looking for GPUs", "devices", [])
        self.devices_task.done.connect(self.set_devices)
        QgsApplication.taskManager().addTask(self.devices_task)

    # -- a run ------------------------------------------------------------------------------------
    def _extent_in_layer_crs(self, layer: QgsRasterLayer):
        canvas = self.iface.mapCanvas() if hasattr(self.iface, "mapCanvas") else None
        if canvas is None:
            return None
        extent = canvas.extent()
        canvas_crs = canvas.mapSettings().destinationCrs()
        if canvas_crs.isValid() and canvas_crs != layer.crs():
            transform = QgsCoordinateTransform(canvas_crs, layer.crs(), QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        extent = extent.intersect(layer.extent())
        return None if extent.isEmpty() else extent

    def prepare(self, command: str) -> Optional[Job]:
        """Check the inputs and build the job; on a problem, say it and return None."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return self._refuse("Choose a raster layer first.")
        if layer.providerType() != "gdal" or not Path(layer.source().split("|")[0]).exists():
            return self._refuse(f"'{layer.name()}' is not a raster file; save it as a GeoTIFF "
                                "first (Export → Save As…).")
        if self.card is None:
            return self._refuse("Choose a valid LoveCS model file.")
        problem = band_problem(self.card, layer.name(), layer.bandCount(), data_band_count(layer),
                               self.bands_edit.text())
        if problem:  # before any file is written (the view's VRT)
            return self._refuse(problem[0].upper() + problem[1:])
        folder = Path(self.output_widget.filePath() or ".").expanduser()
        raster = layer.source()
        if self.area_combo.currentIndex() == 1:
            extent = self._extent_in_layer_crs(layer)
            if extent is None:
                return self._refuse("The map view does not overlap the layer.")
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    return self._refuse(f"Cannot create the output folder {folder}: {exc}")
            vrt = free_path(folder, f"{safe_name(layer.name())}_view", ".vrt")
            raster = str(clip_to_extent(raster, extent, vrt))
        request = JobRequest(command, layer.name(), raster, layer.bandCount(),
                             data_band_count(layer), self.model_widget.filePath(),
                             self.bands_edit.text(), self.device_combo.currentData(),
                             self.preset_combo.currentData(), folder)
        try:
            return build_job(request, self.card)
        except JobError as exc:
            return self._refuse(str(exc))

    def _refuse(self, message: str) -> None:
        self.iface.messageBar().pushMessage("LoveCS", message, level=Qgis.Warning, duration=8)
        self.log(message)
        return None

    def start(self, command: str) -> Optional[EngineTask]:
        if self.task is not None:
            return None
        job = self.prepare(command)
        if job is None:
            return None
        self.save_settings()
        self.job = job
        what = "Adapting to" if command == "adapt" else "Classifying"
        layer = self.layer_combo.currentLayer()
        self.log_view.clear()
        for note in job.notes:
            self.log(note)
        self.task = EngineTask(f"LoveCS: {what.lower()} {layer.name()}", command, job.args,
                               outputs=[str(p) for p in job.outputs])
        self.task.engineEvent.connect(self.on_event)
        self.task.progressChanged.connect(self.on_progress)
        self.task.done.connect(self.on_done)
        self.started = time.monotonic()
        self.progress_bar.setValue(0)
        self.stage_label.setText(f"{what} {layer.name()}: starting the engine…")
        self._set_running(True)
        self.timer.start()
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.stage_label.setText("Cancelling…")
            self.task.cancel()

    def _set_running(self, running: bool) -> None:
        for widget in (self.adapt_button, self.classify_button, self.layer_combo,
                       self.model_widget, self.bands_edit, self.device_combo, self.preset_combo,
                       self.area_combo, self.output_widget):
            widget.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def log(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def on_event(self, event: EngineEvent) -> None:
        if event.type == "progress":
            self.stage_label.setText(stage_text(event))
        elif event.message.strip():
            self.log(event.message)

    def on_progress(self, percent: float) -> None:
        self.progress_bar.setValue(int(percent))

    def update_times(self) -> None:
        elapsed = time.monotonic() - self.started
        percent = self.progress_bar.value()
        text = f"elapsed {format_seconds(elapsed)}"
        if 2 <= percent < 100:
            text += f", about {format_seconds(elapsed * (100 - percent) / percent)} left"
        self.time_label.setText(text)

    def on_done(self, outcome: EngineOutcome) -> None:
        """Main thread: add the styled layers, or report the failure."""
        job, self.task = self.job, None
        self.timer.stop()
        self._set_running(False)
        self.update_times()
        if outcome.log_tail:
            self.log(outcome.log_tail)
        bar = self.iface.messageBar()
        if job is None:
            return
        if outcome.status is Status.CANCELLED:
            self.stage_label.setText("Cancelled: nothing was written.")
            bar.pushMessage("LoveCS", "Cancelled; no output was written.", level=Qgis.Info,
                            duration=5)
            return
        if outcome.status is Status.FAILED:
            self.stage_label.setText("Failed — see the log.")
            self.log(outcome.error)
            self._push_error(outcome.error)
            return
        self.progress_bar.setValue(100)
        self.stage_label.setText(f"Done in {format_seconds(outcome.seconds)}.")
        self.add_result_layers(job)
        verdict = health_text(outcome.result)
        if verdict:
            self.log(verdict)
            self.stage_label.setText(f"Done in {format_seconds(outcome.seconds)}. "
                                     f"{verdict.split(' (')[0]}.")
        rejected = outcome.result.get("rejected")
        if rejected and Path(rejected).is_file():
            self._offer_rejected(Path(rejected), verdict)
        elif job.model_out is not None and job.model_out.is_file():
            self._offer_model(job.model_out)

    def add_result_layers(self, job: Job) -> QgsRasterLayer:
        classes = model_card.read_card(job.model_out if job.model_out and job.model_out.is_file()
                                       else job.classes_model).classes
        project = QgsProject.instance()
        root = project.layerTreeRoot()
        if (self.confidence_check.isChecked() and job.confidence_path is not None
                and job.confidence_path.is_file()):
            confidence = QgsRasterLayer(str(job.confidence_path),
                                        job.layer_name.replace("land cover", "confidence"))
            project.addMapLayer(confidence, False)
            root.insertLayer(0, confidence)
        layer = QgsRasterLayer(str(job.map_path), job.layer_name)
        apply_class_style(layer, classes)
        project.addMapLayer(layer, False)
        root.insertLayer(0, layer)
        return layer

    def _offer_model(self, model: Path) -> None:
        bar = self.iface.messageBar()
        widget = bar.createMessage("LoveCS", f"Adapted model saved: {model.name}. Reuse it for "
                                             "other scenes of this sensor.")
        button = QPushButton("Use this model", widget)
        button.clicked.connect(lambda: self.model_widget.setFilePath(str(model)))
        widget.layout().addWidget(button)
        bar.pushWidget(widget, Qgis.Success, 15)

    def _offer_rejected(self, model: Path, verdict: str) -> None:
        """The adaptation was judged likely harmful: say so, and offer the adapted map anyway."""
        bar = self.iface.messageBar()
        widget = bar.createMessage(
            "LoveCS", "Adapting would likely have made this map worse, so you got the source "
                      "model's map, aligned to this scene (the safe result).")
        keep = QPushButton("Keep adapted model anyway", widget)
        keep.setToolTip(f"Map the scene with the adapted model ({model.name})")
        keep.clicked.connect(lambda: self.use_rejected_model(model))
        details = QPushButton("Details", widget)
        details.clicked.connect(self.show_log)
        widget.layout().addWidget(keep)
        widget.layout().addWidget(details)
        bar.pushWidget(widget, Qgis.Warning, 0)
        self.log(f"The adapted model is kept in {model}. 'Keep adapted model anyway' maps the "
                 f"scene with it.")

    def use_rejected_model(self, model: Path) -> Optional[EngineTask]:
        """Select the adapted model the health check rejected and map the scene with it."""
        self.model_widget.setFilePath(str(model))
        return self.start("predict")

    def _push_error(self, error: str) -> None:
        bar = self.iface.messageBar()
        widget = bar.createMessage("LoveCS failed", error.splitlines()[0][:200])
        button = QPushButton("Details", widget)
        button.clicked.connect(self.show_log)
        widget.layout().addWidget(button)
        bar.pushWidget(widget, Qgis.Critical, 0)

    def show_log(self) -> None:
        self.log_group.setCollapsed(False)
        self.show()
        self.raise_()
        QMessageBox.information(self, "LoveCS log", self.log_view.toPlainText()[-6000:])
