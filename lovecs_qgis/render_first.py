"""A layer that is not a file (XYZ, WMS), rendered in QGIS's raster writer task before a run, so
that QGIS stays responsive while its tiles arrive (:func:`~lovecs_qgis.layer_render.render_plan`).
"""

from __future__ import annotations

from typing import Callable, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .layer_render import MapInput, RenderError, RenderPlan


class BackgroundRender(QObject):
    """At most one render at a time. ``progressed(percent)``; ``failed(message)`` when it was
    cancelled or failed (its partial file removed) or the written file cannot be opened."""

    progressed = pyqtSignal(float)
    failed = pyqtSignal(str)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.plan: Optional[RenderPlan] = None
        self._then: Optional[Callable[[MapInput], None]] = None

    def start(self, plan: RenderPlan, then: Callable[[MapInput], None]) -> None:
        """Run ``plan``'s task; ``then(rendered input)`` once the file is written."""
        self.plan, self._then = plan, then
        plan.task.progressChanged.connect(self.progressed.emit)
        plan.task.writeComplete.connect(lambda _: self._written())
        plan.task.errorOccurred.connect(self._stopped)
        QgsApplication.taskManager().addTask(plan.task)

    def cancel(self) -> None:
        if self.plan is not None:
            self.plan.task.cancel()

    def _finish(self) -> tuple[Optional[RenderPlan], Optional[Callable[[MapInput], None]]]:
        plan, then = self.plan, self._then
        self.plan, self._then = None, None
        return plan, then

    def _written(self) -> None:
        plan, then = self._finish()
        if plan is None or then is None:
            return
        try:
            source = plan.result()
        except RenderError as exc:
            self.failed.emit(str(exc))
            return
        then(source)

    def _stopped(self, error: int) -> None:
        plan, _ = self._finish()
        if plan is not None:
            self.failed.emit(str(plan.failure(error)))
