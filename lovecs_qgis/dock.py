"""The "Adapt to this image" dock: from the selected raster layer to a styled land-cover layer.

The work runs in an :class:`~lovecs_qgis.runner.EngineTask` (the engine in a child process); the
dock only touches widgets on the main thread, and adds layers when the task's ``done`` arrives.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QListWidgetItem, QMessageBox, QWidget

from . import messages
from .algorithms.base import data_band_count
from .corrections.controller import CorrectionsController, map_context
from .dock_form import SETTINGS, DockForm
from .engine import card as model_card
from .engine import contract, estimate
from .events import EngineEvent, EngineOutcome, Status
from .i18n import tr
from .jobs import (
    Job,
    JobError,
    JobRequest,
    auto_bands,
    band_problem,
    build_job,
    format_seconds,
    free_path,
    health_text,
    safe_name,
    stage_text,
)
from .session import SessionClient
from .styling import apply_class_style
from .task import EngineTask
from .view_extent import canvas_extent_in_layer_crs, clip_to_extent

ModelCard = model_card.ModelCard


class LoveCSDock(DockForm):
    """The panel; ``iface`` is QGIS's interface (or pytest-qgis's)."""

    def __init__(
        self,
        iface: Any,
        parent: Optional[QWidget] = None,
        session: Optional[SessionClient] = None,
    ) -> None:
        """``session``: the refine session's client (tests give one running a fake engine)."""
        super().__init__(parent)
        self.iface = iface
        self.task: Optional[EngineTask] = None
        self.job: Optional[Job] = None
        self.started = 0.0
        self.card: Optional[ModelCard] = None
        self.devices_task: Optional[EngineTask] = None
        self.corrections = CorrectionsController(iface, self.corrections_panel, session, self)
        self.corrections.applyRequested.connect(self.apply_corrections)
        self._connect()
        self.on_model_changed(self.model_widget.filePath())
        self.on_layer_changed(self.layer_combo.currentLayer())
        self._set_running(False)

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
            self.model_label.setText(tr("Choose a model file (.lovecs)"))
            return
        try:
            self.card = model_card.read_card(path)
        except model_card.ModelFileError as exc:
            self.model_label.setText(
                "<span style='color:#b00'>{}</span>".format(
                    tr("Cannot use this model: {}").format(exc)
                )
            )
            return
        card = self.card
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
        self.on_layer_changed(self.layer_combo.currentLayer())

    def update_estimate(self) -> None:
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self.estimate_label.setText("")
            return
        pixels = layer.width() * layer.height()
        if self.area_combo.currentIndex() == 1 and self.iface is not None:
            extent = canvas_extent_in_layer_crs(self.iface, layer)
            if extent is not None:
                px = layer.rasterUnitsPerPixelX() * layer.rasterUnitsPerPixelY()
                pixels = min(pixels, int(extent.width() * extent.height() / max(px, 1e-12)))
        device = self.device_combo.currentData() or "auto"
        gpu = device.startswith("cuda") or (device == "auto" and self.device_combo.count() > 2)
        self.estimate_label.setText(
            estimate.describe_estimate(self.preset_combo.currentData(), pixels, gpu)
        )

    def set_devices(self, outcome: EngineOutcome) -> None:
        """Fill the device list from ``lovecs devices`` (run in the background at start)."""
        self.devices_task = None
        if not outcome.ok:
            self.device_note.setText(
                tr("the engine could not list devices: {}").format(outcome.error)
            )
            return
        for gpu in outcome.result.get("gpus", []):
            gib = 1024**3
            label = (
                f"{gpu['name']} — {gpu['label']} ({gpu['free_memory'] / gib:.1f} of "
                f"{gpu['total_memory'] / gib:.1f} GiB free)"
            )
            if self.device_combo.findData(gpu["name"]) < 0:
                self.device_combo.addItem(label, gpu["name"])
        reason = outcome.result.get("cuda_unavailable") or ""
        self.device_note.setText(
            tr("No GPU: {}; the CPU is used.").format(reason) if reason else tr("GPU ready.")
        )
        self._select_data(self.device_combo, QgsSettings().value(SETTINGS + "device", "auto"))
        self.update_estimate()

    def look_for_devices(self) -> None:
        if self.devices_task is not None:
            return
        self.devices_task = EngineTask(tr("LoveCS: looking for GPUs"), "devices", [])
        self.devices_task.done.connect(self.set_devices)
        QgsApplication.taskManager().addTask(self.devices_task)

    # -- a run ------------------------------------------------------------------------------------
    def prepare(self, command: str) -> Optional[Job]:
        """Check the inputs and build the job; on a problem, say it and return None."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return self._refuse(tr("Choose a raster layer first."))
        if layer.providerType() != "gdal" or not Path(layer.source().split("|")[0]).exists():
            return self._refuse(
                tr(
                    "'{}' is not a raster file; save it as a GeoTIFF first (Export → Save As…)."
                ).format(layer.name())
            )
        if self.card is None:
            return self._refuse(tr("Choose a valid LoveCS model file."))
        problem = band_problem(
            self.card,
            layer.name(),
            layer.bandCount(),
            data_band_count(layer),
            self.bands_edit.text(),
        )
        if problem:  # before any file is written (the view's VRT)
            return self._refuse(problem[0].upper() + problem[1:])
        folder = Path(self.output_widget.filePath() or ".").expanduser()
        raster = layer.source()
        if self.area_combo.currentIndex() == 1:
            extent = canvas_extent_in_layer_crs(self.iface, layer)
            if extent is None:
                return self._refuse(tr("The map view does not overlap the layer."))
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    return self._refuse(
                        tr("Cannot create the output folder {}: {}").format(folder, exc)
                    )
            vrt = free_path(folder, f"{safe_name(layer.name())}_view", ".vrt")
            raster = str(clip_to_extent(raster, extent, vrt))
        request = JobRequest(
            command,
            layer.name(),
            raster,
            layer.bandCount(),
            data_band_count(layer),
            self.model_widget.filePath(),
            self.bands_edit.text(),
            self.device_combo.currentData(),
            self.preset_combo.currentData(),
            folder,
            ray=self.ray_edit.text(),
        )
        try:
            return build_job(request, self.card)
        except JobError as exc:
            return self._refuse(str(exc))

    def _refuse(self, message: str) -> None:
        self.iface.messageBar().pushMessage(tr("LoveCS"), message, level=Qgis.Warning, duration=8)
        self.log(message)
        return None

    def start(self, command: str, extra: Sequence[str] = ()) -> Optional[EngineTask]:
        """Run ``command`` on the chosen layer; ``extra``: more engine arguments."""
        if self.task is not None:
            return None
        job = self.prepare(command)
        if job is None:
            return None
        self.save_settings()
        job.args += list(extra)
        self.job = job
        what = tr("Adapting to") if command == "adapt" else tr("Classifying")
        layer = self.layer_combo.currentLayer()
        self.log_view.clear()
        for note in job.notes:
            self.log(note)
        self.task = EngineTask(
            f"LoveCS: {what.lower()} {layer.name()}",
            command,
            job.args,
            outputs=[str(p) for p in job.outputs],
        )
        self.task.engineEvent.connect(self.on_event)
        self.task.progressChanged.connect(self.on_progress)
        self.task.done.connect(self.on_done)
        self.started = time.monotonic()
        self.progress_bar.setValue(0)
        self.stage_label.setText(tr("{} {}: starting the engine…").format(what, layer.name()))
        self._set_running(True)
        self.timer.start()
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.stage_label.setText(tr("Cancelling…"))
            self.task.cancel()

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
        text = tr("elapsed {}").format(format_seconds(elapsed))
        if 2 <= percent < 100:
            text += tr(", about {} left").format(
                format_seconds(elapsed * (100 - percent) / percent)
            )
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
            self.stage_label.setText(tr("Cancelled: nothing was written."))
            bar.pushMessage(
                tr("LoveCS"), tr("Cancelled; no output was written."), level=Qgis.Info, duration=5
            )
            return
        if outcome.status is Status.FAILED:
            self.stage_label.setText(tr("Failed — see the log."))
            self.log(outcome.error)
            messages.push_error(self.iface.messageBar(), outcome.error, self.show_log)
            return
        self.progress_bar.setValue(100)
        self.stage_label.setText(tr("Done in {}.").format(format_seconds(outcome.seconds)))
        self.correct_map(job, self.add_result_layers(job))
        verdict = health_text(outcome.result)
        if verdict:
            self.log(verdict)
            self.stage_label.setText(
                tr("Done in {}. {}.").format(
                    format_seconds(outcome.seconds), verdict.split(" (")[0]
                )
            )
        rejected = outcome.result.get("rejected")
        if rejected and Path(rejected).is_file():
            kept = Path(rejected)
            messages.offer_rejected(
                self.iface.messageBar(),
                kept,
                (outcome.result.get("health") or {}).get("verdict"),
                keep=lambda: self.use_rejected_model(kept),
                details=self.show_log,
            )
            self.log(
                tr(
                    "The adapted model is kept in {}. 'Keep adapted model anyway' maps the scene "
                    "with it."
                ).format(kept)
            )
        elif job.model_out is not None and job.model_out.is_file():
            model = job.model_out
            messages.offer_model(
                self.iface.messageBar(), model, lambda: self.model_widget.setFilePath(str(model))
            )

    def add_result_layers(self, job: Job) -> QgsRasterLayer:
        classes = model_card.read_card(
            job.model_out if job.model_out and job.model_out.is_file() else job.classes_model
        ).classes
        project = QgsProject.instance()
        root = project.layerTreeRoot()
        if (
            self.confidence_check.isChecked()
            and job.confidence_path is not None
            and job.confidence_path.is_file()
        ):
            confidence = QgsRasterLayer(
                str(job.confidence_path), job.layer_name.replace("land cover", "confidence")
            )
            project.addMapLayer(confidence, False)
            root.insertLayer(0, confidence)
        layer = QgsRasterLayer(str(job.map_path), job.layer_name)
        apply_class_style(layer, classes)
        project.addMapLayer(layer, False)
        root.insertLayer(0, layer)
        return layer

    def correct_map(self, job: Job, layer: QgsRasterLayer) -> None:
        """Let the "Correct the map" section work on the map just added."""
        bands = contract.parse_bands(self.bands_edit.text())
        try:
            self.corrections.set_map(
                map_context(job, layer, bands, self.device_combo.currentData())
            )
        except Exception as exc:  # a corrections file that cannot be made: say it, keep the map
            self.log(tr("The map cannot be corrected: {}").format(exc))

    def apply_corrections(self, points: str, class_field: str) -> Optional[EngineTask]:
        """Adapt the model to the whole layer, with the corrections written to ``points``."""
        return self.start("adapt", ["--points", points, "--class-field", class_field])

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt naming)
        """Save the corrections and end the refine session with the dock."""
        self.corrections.close()
        super().closeEvent(event)

    def use_rejected_model(self, model: Path) -> Optional[EngineTask]:
        """Select the adapted model the health check rejected and map the scene with it."""
        self.model_widget.setFilePath(str(model))
        return self.start("predict")

    def show_log(self) -> None:
        self.log_group.setCollapsed(False)
        self.show()
        self.raise_()
        QMessageBox.information(self, tr("LoveCS log"), self.log_view.toPlainText()[-6000:])
