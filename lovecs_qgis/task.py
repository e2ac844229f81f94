"""The dock's background job: :class:`EngineTask`, a ``QgsTask`` running one engine command in a
child process (:class:`~lovecs_qgis.runner.EngineProcess`) on a worker thread."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Sequence

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .engine import contract
from .events import EngineEvent, EngineOutcome, ProgressMap, Status
from .i18n import tr
from .runner import GRACE_S, STAGES, EngineProcess


class EngineTask(QgsTask):
    """A ``QgsTask`` running one engine command in a child process, for the dock.

    Signals: ``engineStarted()`` once the child process runs (it then loads PyTorch and the
    model), ``engineEvent(EngineEvent)`` for every engine message (both queued to the main
    thread for receivers living there), ``done(EngineOutcome)`` from :meth:`finished`, on the
    main thread. ``progressChanged`` (QgsTask's) carries the overall percentage. The task never
    touches widgets; the receiver of ``done`` adds layers.

    A run the user cancelled ends as a completed task, not a failed one: QGIS would otherwise
    notify "Task failed" for what the user asked; its description then says "cancelled".
    """

    engineStarted = pyqtSignal()  # noqa: N815 (Qt naming)
    engineEvent = pyqtSignal(object)  # noqa: N815 (Qt naming)
    done = pyqtSignal(object)

    def __init__(
        self,
        description: str,
        command: str,
        args: Sequence[str],
        outputs: Iterable[str | os.PathLike[str]] = (),
        python: Optional[str] = None,
        grace: float = GRACE_S,
        argv: Optional[Sequence[str]] = None,
        on_finished: Optional[Callable[[EngineOutcome], None]] = None,
    ) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.command = command
        self.args = list(args)
        self.outputs = list(outputs)
        self.python = python
        self.grace = grace
        self.argv = argv
        self.on_finished = on_finished
        self.outcome: Optional[EngineOutcome] = None
        self.process: Optional[EngineProcess] = None
        self._progress = ProgressMap(STAGES.get(command, {}))

    def run(self) -> bool:  # worker thread
        try:
            self.process = EngineProcess(
                self.command,
                self.args,
                python=self.python,
                outputs=self.outputs,
                grace=self.grace,
                argv=self.argv,
            )
            self.process.start()
            self.engineStarted.emit()
            self.outcome = self.process.run(self._on_event, self.isCanceled)
        except Exception as exc:  # the engine python was not found, could not start, ...
            self.outcome = EngineOutcome(Status.FAILED, error=str(exc))
        return self.outcome.status is not Status.FAILED

    def _on_event(self, event: EngineEvent) -> None:
        if event.type == contract.PROGRESS:
            percent = self._progress.update(event)
            if percent is not None:
                self.setProgress(percent)
        self.engineEvent.emit(event)

    def cancel(self) -> None:
        """Stop the child right away (SIGTERM; the worker escalates to SIGKILL after grace)."""
        self.setDescription(tr("{} (cancelled)").format(self.description()))
        super().cancel()
        if self.process is not None:
            self.process.terminate()

    def finished(self, result: bool) -> None:  # main thread
        if self.outcome is None:  # cancelled before it started
            self.outcome = EngineOutcome(Status.CANCELLED, error="cancelled by the user")
        if self.on_finished is not None:
            self.on_finished(self.outcome)
        self.done.emit(self.outcome)
