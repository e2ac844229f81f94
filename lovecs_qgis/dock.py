"""The "Adapt to this image" dock: from the selected raster layer to a styled land-cover layer.

The work runs in an :class:`~lovecs_qgis.runner.EngineTask` (the engine in a child process); the
dock only touches widgets on the main thread, and adds layers when the task's ``done`` arrives.
What the run looks like meanwhile (stage, bar, time left, log) is :class:`RunStatus`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.PyQt.QtWidgets import QWidget

from . import messages
from .algorithms.base import data_band_count
from .corrections.controller import CorrectionsController, map_context
from .devices import fill_devices
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
    raster_problem,
)
from .layer_render import MapInput, RenderError, RenderPlan, is_file_layer
from .render_first import BackgroundRender
from .results import add_result_layers
from .run_status import RunStatus
from .scene_size import gsd_ratio, scene_pixels
from .session import SessionClient
from .task import EngineTask
from .view_extent import dock_input, dock_render
from .wording import format_seconds, health_text, health_why

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
        self.background = BackgroundRender(self)  # a non-file layer's render before a run
        self.background.progressed.connect(self.on_progress)
        self.background.failed.connect(self.render_failed)
        self.job: Optional[Job] = None
        self.status = RunStatus(self)
        self.offers: list[Any] = []  # message-bar offers of the last run, dismissed by the next
        self.pixels, self.ratio = 0, 1.0
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
        self.raw_button.toggled.connect(lambda _: self.log_group.setCollapsed(False))
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
        self.card = None
        if not path:
            self.show_model(None, tr("Choose a model file (.lovecs)"))
            return
        try:
            self.card = model_card.read_card(path)
        except model_card.ModelFileError as exc:
            self.show_model(None, tr("Cannot use this model: {}").format(exc), problem=True)
            return
        self.show_model(self.card)
        self.on_layer_changed(self.layer_combo.currentLayer())

    def update_estimate(self) -> None:
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self.estimate_label.setText("")
            return
        self.pixels = scene_pixels(self.iface, layer, self.area_combo.currentIndex() == 1)
        self.ratio = gsd_ratio(layer, self.card.gsd if self.card else None)
        self.estimate_label.setText(
            estimate.describe_estimate(
                self.preset_combo.currentData(), self.pixels, self.gpu, gsd_ratio=self.ratio
            )
        )

    @property
    def gpu(self) -> bool:
        device = self.device_combo.currentData() or "auto"
        return device.startswith("cuda") or (device == "auto" and self.device_combo.count() > 2)

    def set_devices(self, outcome: EngineOutcome) -> None:
        """Fill the device list from ``lovecs devices`` (run in the background at start)."""
        self.devices_task = None
        self.device_note.setText(fill_devices(self.device_combo, outcome))
        if not outcome.ok:
            return
        self._select_data(self.device_combo, QgsSettings().value(SETTINGS + "device", "auto"))
        self.update_estimate()

    def look_for_devices(self) -> None:
        if self.devices_task is not None:
            return
        self.devices_task = EngineTask(tr("LoveCS: looking for GPUs"), "devices", [])
        self.devices_task.done.connect(self.set_devices)
        QgsApplication.taskManager().addTask(self.devices_task)

    # -- a run ------------------------------------------------------------------------------------
    def prepare(self, command: str, rendered: Optional[MapInput] = None) -> Optional[Job]:
        """Check the inputs and build the job; on a problem, say it and return None. A layer
        that is not a file is rendered here, unless ``rendered`` is its render."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return self._refuse(tr("Choose a raster layer first."))
        if self.card is None:
            return self._refuse(tr("Choose a valid LoveCS model file."))
        problem = ""
        if is_file_layer(layer):  # a layer rendered to a file is checked as rendered
            problem = band_problem(
                self.card,
                layer.name(),
                layer.bandCount(),
                data_band_count(layer),
                self.bands_edit.text(),
            )
            if not problem:  # the file as GDAL reads it: band numbers, values, size
                problem = raster_problem(layer.source(), self.bands_edit.text())
        if problem:  # before any file is written (a rendered layer)
            return self._refuse(problem[0].upper() + problem[1:])
        folder, gsd = self.output_folder(), self.card.domain_gsd(self.card.default_domain)
        try:  # the view as the engine's --extent; a layer that is not a file rendered first
            source = rendered or dock_input(self.iface, layer, self.mapping_view(), gsd, folder)
        except RenderError as exc:
            return self._refuse(str(exc))
        request = JobRequest(
            command,
            layer.name(),
            source.raster,
            source.layer.bandCount(),
            data_band_count(source.layer),
            self.model_widget.filePath(),
            self.bands_edit.text(),
            self.device_combo.currentData(),
            self.preset_combo.currentData(),
            folder,
            ray=self.ray_edit.text(),
        )
        try:
            job = build_job(request, self.card)
        except JobError as exc:
            return self._refuse(str(exc))
        job.args += source.extent_args
        return job

    def _refuse(self, message: str) -> None:
        self.iface.messageBar().pushMessage(tr("LoveCS"), message, level=Qgis.Warning, duration=8)
        self.log(message)
        return None

    def output_folder(self) -> Path:
        """Where outputs (and a rendered layer) go."""
        return Path(self.output_widget.filePath() or ".").expanduser()

    def mapping_view(self) -> bool:
        """Whether the area to map is the map view (else the whole layer)."""
        return self.area_combo.currentIndex() == 1

    def start(self, command: str, extra: Sequence[str] = ()) -> Optional[EngineTask]:
        """Run ``command`` on the chosen layer; ``extra``: more engine arguments. A layer that
        is not a file (XYZ, WMS) is first rendered in the background (:meth:`render_first`):
        then this returns None and the run starts when the render is done."""
        if self.task is not None or self.render is not None:
            return None
        layer = self.layer_combo.currentLayer()
        if isinstance(layer, QgsRasterLayer) and layer.isValid() and not is_file_layer(layer):
            if self.card is not None:
                self.render_first(layer, command, extra)
                return None
        return self.launch(command, extra, self.prepare(command))

    def render_first(self, layer: QgsRasterLayer, command: str, extra: Sequence[str]) -> None:
        """Render ``layer`` over the area to map in a background task, then run ``command``."""
        assert self.card is not None
        gsd = self.card.domain_gsd(self.card.default_domain)
        try:
            plan = dock_render(self.iface, layer, self.mapping_view(), gsd, self.output_folder())
        except RenderError as exc:
            self._refuse(str(exc))
            return
        self._set_running(True)
        self.progress_bar.setValue(0)
        text = tr("Rendering '{}' for the model…").format(layer.name())
        self.stage_label.setText(text)
        self.log(text)

        def run(source: MapInput) -> None:
            self._set_running(False)
            if self.launch(command, extra, self.prepare(command, rendered=source)) is not None:
                self.log(tr("The model reads '{}' as rendered to {}.").format(plan.name, plan.path))

        self.background.start(plan, run)

    def render_failed(self, message: str) -> None:
        """The render stopped (cancelled or failed): say why; its partial file is gone."""
        self._set_running(False)
        self.stage_label.setText(message)
        self._refuse(message)

    @property
    def render(self) -> Optional[RenderPlan]:
        """The render running before a run, if any."""
        return self.background.plan

    def launch(
        self, command: str, extra: Sequence[str], job: Optional[Job]
    ) -> Optional[EngineTask]:
        """Start the engine on the prepared ``job`` (None: it was refused)."""
        if job is None:
            return None
        self.save_settings()
        job.args += list(extra)
        self.job, self.last_error = job, ""
        what = tr("Adapting to") if command == "adapt" else tr("Classifying")
        title = f"{what} {job.scene}"
        for offer in self.offers:  # the last run's offers: this run replaces them
            messages.dismiss(self.iface.messageBar(), offer)
        self.offers.clear()
        self.log_view.clear()
        self.raw_view.clear()
        self.task = EngineTask(
            f"LoveCS: {title}",
            command,
            job.args,
            outputs=[str(p) for p in job.outputs],
        )
        self.task.engineStarted.connect(self.status.engine_started)
        self.task.engineEvent.connect(self.on_event)
        self.task.progressChanged.connect(self.on_progress)
        self.task.done.connect(self.on_done)
        self.progress_bar.setValue(0)
        preset = self.preset_combo.currentData()
        plan = estimate.stage_plan(command, preset, self.pixels, self.ratio)
        self.status.begin(title, plan, estimate.passes(command, preset))
        self.log(
            tr("Model {}; bands {}; device: {}; preset {}.").format(
                Path(self.model_widget.filePath()).name,
                self.bands_edit.text() or tr("as the layer's"),
                self.device_combo.currentText(),
                preset,
            )
        )
        for note in job.notes:
            self.log(note)
        self._set_running(True)
        self.timer.start()
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.render is not None:
            self.stage_label.setText(tr("Cancelling…"))
            self.background.cancel()
        if self.task is not None:
            self.stage_label.setText(tr("Cancelling…"))
            self.task.cancel()

    def on_event(self, event: EngineEvent) -> None:
        self.status.on_event(event)

    def on_progress(self, percent: float) -> None:
        self.progress_bar.setValue(int(percent))

    def update_times(self) -> None:
        self.status.tick()

    def on_done(self, outcome: EngineOutcome) -> None:
        """Main thread: add the styled layers, or report the failure."""
        job, self.task = self.job, None
        self.timer.stop()
        self._set_running(False)
        if outcome.log_tail:
            self.log_raw(outcome.log_tail)
        if job is None:
            return
        bar = self.iface.messageBar()
        if outcome.status is Status.CANCELLED:
            self.status.end(tr("Cancelled: nothing was written."), outcome.seconds)
            self.log(tr("Cancelled: nothing was written."))
            bar.pushMessage(
                tr("LoveCS"), tr("Cancelled; no output was written."), level=Qgis.Info, duration=5
            )
            return
        if outcome.status is Status.FAILED:
            self.last_error = outcome.error
            self.status.end(tr("Failed: {}").format(outcome.error.splitlines()[0][:300]))
            self.log(tr("The run failed (Details shows why)."))
            self.offers.append(messages.push_error(bar, outcome.error, self.show_log))
            return
        self.progress_bar.setValue(100)
        self.finish(job, outcome)

    def finish(self, job: Job, outcome: EngineOutcome) -> None:
        """A run that delivered: its layers, its verdict, and what the user may do next."""
        text = tr("Done in {}.").format(format_seconds(outcome.seconds))
        verdict = health_text(outcome.result)
        for line in [verdict, health_why(outcome.result)]:
            if line:
                self.log(line)
        if verdict:
            text = tr("Done in {}. {}.").format(
                format_seconds(outcome.seconds), verdict.split(" (")[0]
            )
        self.status.end(text, outcome.seconds)
        layer = add_result_layers(job, outcome.result, self.confidence_check.isChecked())
        self.log(tr("Added the layer '{}'.").format(layer.name()))
        self.correct_map(job, layer)
        offer, note = messages.offer_next(
            self.iface.messageBar(), outcome.result, job.model_out, keep=self.use_rejected_model,
            use=lambda model: self.model_widget.setFilePath(str(model)), details=self.show_log,
        )  # fmt: skip
        self.offers += [offer] if offer is not None else []
        if note:
            self.log(note)

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
