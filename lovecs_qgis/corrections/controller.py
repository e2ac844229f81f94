"""The glue of the "Correct the map" section: the panel's buttons, the map tool, the corrections
layers and the engine's refine session (:class:`~lovecs_qgis.session.SessionClient`).

The dock hands over a map with :meth:`CorrectionsController.set_map` (once a land-cover layer
exists); before each ``refine`` the corrections, uncommitted edits included, are written to a
temporary GeoPackage in the output folder and the session fits the model to them; the map file
the session rewrites is reloaded in place.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..engine import card as model_card
from ..engine import contract
from ..events import EngineEvent
from ..i18n import tr
from ..session import Reply, SessionClient
from .history import EditHistory
from .layer import (
    CorrectionSet,
    CorrectionsLayerError,
    open_corrections,
    reference_set,
    save_edits,
    write_snapshot,
)
from .map_tool import CorrectionTool
from .panel import CorrectionsPanel

ClassInfo = model_card.ClassInfo
#: Requests after which the map file was rewritten.
_REWRITES = (contract.VIEW, contract.REFINE, contract.UNDO, contract.RESET)


@dataclass
class MapContext:
    """What a land-cover map was made from: the map layer, the raster and bands it maps, the
    model, its classes, the output folder and the device."""

    map_layer: QgsRasterLayer
    raster: str
    model: str
    classes: Sequence[ClassInfo]
    folder: Path
    bands: Optional[list[int]] = None
    device: str = "auto"
    extent: Optional[list[float]] = None  # the part of ``raster`` mapped (its CRS; None: all)

    @property
    def map_path(self) -> Path:
        return Path(self.map_layer.source().split("|")[0])


def reload_raster(layer: QgsRasterLayer) -> None:
    """Show a rewritten map file: the provider reopens it, the style stays."""
    layer.dataProvider().reloadData()
    layer.reload()
    layer.triggerRepaint()


def map_context(
    job: Any, layer: QgsRasterLayer, bands: Optional[list[int]], device: Optional[str]
) -> MapContext:
    """What the dock's finished ``job`` (a :class:`~lovecs_qgis.jobs.Job`) mapped into ``layer``:
    the adapted model when there is one, else the model used; the raster (the layer's file, or
    the one rendered from it) and the ``--extent`` of it mapped."""
    model = job.model_out if job.model_out and job.model_out.is_file() else job.classes_model
    flag = "--target" if job.command == "adapt" else "--raster"
    raster = job.args[job.args.index(flag) + 1]
    classes = model_card.read_card(model).classes
    extent = None
    if "--extent" in job.args:
        extent = [float(v) for v in job.args[job.args.index("--extent") + 1].split(",")]
    return MapContext(
        layer, raster, str(model), classes, job.map_path.parent, bands, device or "auto", extent
    )


class CorrectionsController(QObject):
    """Drives a :class:`CorrectionsPanel`. ``applyRequested(points, class_field)`` asks the dock
    to adapt the model to the whole layer with the corrections written to ``points``."""

    applyRequested = pyqtSignal(str, str)  # noqa: N815 (Qt naming)

    def __init__(
        self,
        iface: Any,
        panel: CorrectionsPanel,
        session: Optional[SessionClient] = None,
        parent: Optional[QObject] = None,
    ) -> None:
        super().__init__(parent)
        self.iface = iface
        self.panel = panel
        self.session = session or SessionClient(parent=self)
        self.context: Optional[MapContext] = None
        self.corrections: Optional[CorrectionSet] = None
        self.history = EditHistory(self)
        self.tool: Optional[CorrectionTool] = None
        self.snapshots: list[Path] = []
        self.last_reply: Optional[Reply] = None
        self._opened: Optional[tuple[str, str, str]] = None  # model, raster, map of the session
        self._watched: list[QgsVectorLayer] = []
        self._connect()
        self.panel.setEnabled(False)
        self.panel.set_busy(False)

    def _connect(self) -> None:
        p = self.panel
        p.correctToggled.connect(self.set_correcting)
        p.palette.classChanged.connect(self._on_class)
        p.undoRequested.connect(self.history.undo)
        p.redoRequested.connect(self.history.redo)
        p.sourceChanged.connect(self._on_source_changed)
        p.refineRequested.connect(self.refine)
        p.undoRefineRequested.connect(lambda: self._rewrite(contract.UNDO))
        p.resetRequested.connect(lambda: self._rewrite(contract.RESET))
        p.saveRequested.connect(self.save_model)
        p.applyRequested.connect(self.apply_to_layer)
        p.cancelRequested.connect(self.session.cancel)
        self.history.changed.connect(self._update_edit_buttons)
        self.session.replied.connect(self.on_reply)
        self.session.died.connect(self.on_died)
        self.session.busyChanged.connect(self.panel.set_busy)
        self.session.engineEvent.connect(self.on_event)
        QgsProject.instance().layersWillBeRemoved.connect(self._on_layers_removed)

    @property
    def canvas(self) -> Any:
        return self.iface.mapCanvas()

    # -- the map and its corrections --------------------------------------------------------------
    def set_map(self, context: MapContext) -> CorrectionSet:
        """Correct this map from now on: its corrections layer (or the chosen reference layer)
        is opened, styled and put in edit mode; the section is enabled."""
        self.context = context
        self.panel.palette.set_classes(context.classes)
        corrections = self._open_corrections()
        self.panel.setEnabled(True)
        return corrections

    def _open_corrections(self) -> CorrectionSet:
        assert self.context is not None
        reference = self.panel.reference_combo.currentLayer()
        field = self.panel.field_combo.currentField()
        if isinstance(reference, QgsVectorLayer) and field:
            corrections = reference_set(reference, field, self.context.classes)
        else:
            layer = self.context.map_layer
            corrections = open_corrections(
                self.context.map_path, layer.crs(), self.context.classes, title=layer.name()
            )
        self._use(corrections)
        return corrections

    def _use(self, corrections: CorrectionSet) -> None:
        for layer in (lyr for lyr in self._watched if not sip.isdeleted(lyr)):
            for signal in (layer.featureAdded, layer.featureDeleted, layer.afterRollBack):
                try:
                    signal.disconnect(self.update_counts)
                except TypeError:
                    pass
        self.corrections = corrections
        self._watched = list(corrections.layers)
        for layer in self._watched:
            layer.featureAdded.connect(self.update_counts)
            layer.featureDeleted.connect(self.update_counts)
            layer.afterRollBack.connect(self.update_counts)
        self.history.clear()
        was_active = self.tool is not None and self.canvas.mapTool() is self.tool
        if self.tool is not None:
            self.canvas.unsetMapTool(self.tool)
        self.tool = CorrectionTool(self.canvas, corrections, self.history)
        self.tool.code = self.panel.palette.selected_code()
        self.tool.message.connect(self.panel.set_status)
        if was_active or self.panel.correct_button.isChecked():
            self.canvas.setMapTool(self.tool)
        self.update_counts()

    def _on_source_changed(self) -> None:
        if self.context is None:
            return
        try:
            self._open_corrections()
        except CorrectionsLayerError as exc:
            self.panel.set_status(html.escape(str(exc)))

    def _on_layers_removed(self, ids: Sequence[str]) -> None:
        mine = [self.context.map_layer] if self.context is not None else []
        mine += self.corrections.layers if self.corrections is not None else []
        if any(not sip.isdeleted(layer) and layer.id() in ids for layer in mine):
            self.forget_map()

    def forget_map(self) -> None:
        """The map or its corrections left the project: nothing to correct until the next map."""
        if self.tool is not None and self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        self.tool = None
        self._watched = []
        self.context = self.corrections = None
        self._opened = None
        self.history.clear()
        self.panel.correct_button.setChecked(False)
        self.panel.setEnabled(False)

    def _on_class(self, code: int) -> None:
        if self.tool is not None:
            self.tool.code = code

    def set_correcting(self, on: bool) -> None:
        """Make the "Correct" tool the canvas's map tool (or give the canvas back)."""
        if self.tool is None:
            return
        if on:
            self.canvas.setMapTool(self.tool)
        elif self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

    def update_counts(self, *_: object) -> dict[int, int]:
        counts = self.corrections.counts() if self.corrections is not None else {}
        self.panel.set_counts(counts)
        self._update_edit_buttons()
        return counts

    def _update_edit_buttons(self) -> None:
        self.panel.undo_button.setEnabled(self.history.can_undo())
        self.panel.redo_button.setEnabled(self.history.can_redo())

    # -- the session ------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        """Queue ``open`` and ``view`` unless the session already has this model and map."""
        assert self.context is not None
        c = self.context
        key = (c.model, c.raster, str(c.map_path))
        if self._opened == key:
            return
        self.session.request(contract.OPEN, model=c.model, device=c.device)
        self.session.request(
            contract.VIEW, raster=c.raster, bands=c.bands, extent=c.extent, map=str(c.map_path)
        )
        self._opened = key

    def snapshot(self) -> Path:
        """The corrections, unsaved edits included, in a new GeoPackage in the output folder."""
        assert self.context is not None and self.corrections is not None
        path, _ = write_snapshot(self.corrections, self.context.folder, self.context.map_path.stem)
        self.snapshots.append(path)
        return path

    def refine(self) -> Optional[int]:
        """Fit the model to the corrections and rewrite the map; the request's id."""
        if self.context is None or self.corrections is None:
            return None
        if not self.corrections.feature_count():
            self.panel.set_status(tr("Add corrections on the map first."))
            return None
        self._ensure_open()
        points = self.snapshot()
        self.panel.set_status(tr("Refining…"))
        return self.session.request(
            contract.REFINE,
            points=str(points),
            class_field=self.corrections.class_field,
            layer=contract.CORRECTIONS_LAYER,
            map=str(self.context.map_path),
        )

    def _rewrite(self, kind: str) -> Optional[int]:
        if self.context is None:
            return None
        self._ensure_open()
        return self.session.request(kind, map=str(self.context.map_path))

    def save_model(self, out: str) -> Optional[int]:
        if self.context is None:
            return None
        self._ensure_open()
        return self.session.request(contract.SAVE, out=out)

    def apply_to_layer(self) -> Optional[Path]:
        """Write the corrections and ask the dock to adapt the whole layer with them."""
        if self.context is None or self.corrections is None:
            return None
        points = self.snapshot()
        self.applyRequested.emit(str(points), self.corrections.class_field)
        return points

    def on_reply(self, reply: Reply) -> None:
        self.last_reply = reply
        if not reply.ok:
            if reply.request in (contract.OPEN, contract.VIEW):
                self._opened = None
            self.panel.set_status(
                "<span style='color:#b00'>{}</span>".format(
                    html.escape(tr("{} failed: {}").format(reply.request, reply.error))
                )
            )
            return
        if reply.request in _REWRITES and self.context is not None:
            written = Path(str(reply.data.get("map") or self.context.map_path))
            if written == self.context.map_path:
                reload_raster(self.context.map_layer)
        seconds = reply.data.get("seconds")
        took = tr(" in {:.1f} s").format(float(seconds)) if seconds is not None else ""
        if reply.request == contract.REFINE:
            self.panel.show_refine(reply.data)
            self.panel.set_status(tr("Map refined{}.").format(took))
        elif reply.request == contract.UNDO:
            self.panel.set_status(tr("Back one refine{}.").format(took))
        elif reply.request == contract.RESET:
            self.panel.accuracy_label.setText("")
            self.panel.problems_label.setText("")
            self.panel.set_status(tr("Back to the source model{}.").format(took))
        elif reply.request == contract.SAVE:
            self.panel.set_status(
                tr("Refined model saved: {}").format(reply.data.get("out") or reply.data)
            )

    def on_died(self, message: str) -> None:
        self.panel.set_status("<span style='color:#b00'>{}</span>".format(html.escape(message)))

    def on_event(self, event: EngineEvent) -> None:
        if event.type == contract.PROGRESS:
            self.panel.set_status(html.escape(event.text))

    # -- the end ----------------------------------------------------------------------------------
    def remove_snapshots(self) -> None:
        for path in self.snapshots:
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                try:
                    os.remove(name)
                except OSError:
                    pass
        self.snapshots.clear()

    def close(self) -> list[str]:
        """Save the edits, give the canvas back, end the session (dock closed); the errors."""
        errors = save_edits(self.corrections) if self.corrections is not None else []
        self.set_correcting(False)
        self.session.stop_now()
        self._opened = None
        self.remove_snapshots()
        return errors
