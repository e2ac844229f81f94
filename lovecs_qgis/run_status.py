"""A running job as the dock shows it: the stage line, the progress bar, the time line and the
log, fed by the engine's events (:class:`RunStatus`).

Before the engine's first progress event (Python, PyTorch and the model loading: up to a
minute) the stage line says what is happening and the bar is busy; the time left comes from the
run's measured pace (:mod:`lovecs_qgis.time_left`), "estimating…" until it is known.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from .engine import contract
from .events import EngineEvent
from .i18n import tr
from .time_left import Smoothed, TimeLeft
from .wording import people_line, stage_text, stage_title, time_text


class RunStatus:
    """Writes to the form's ``stage_label``, ``time_label``, ``progress_bar`` and logs."""

    def __init__(self, form: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.form = form
        self.clock = clock
        self.title = ""
        self.started = 0.0
        self.stage = ""
        self.running = False
        self.left = TimeLeft({})
        self.shown = Smoothed()

    def begin(self, title: str, plan: Mapping[str, float], passes: Mapping[str, int]) -> None:
        """A run starts: ``title`` (``"Classifying scene"``), the before-run plan of stages."""
        self.title, self.stage, self.running = title, "", True
        self.started = self.clock()
        self.left, self.shown = TimeLeft(dict(plan), dict(passes)), Smoothed()
        self.form.progress_bar.setRange(0, 0)  # busy until the engine reports progress
        self.form.stage_label.setText(tr("{}: starting the engine…").format(title))
        self.form.log(tr("{}: starting the engine…").format(title))
        self.tick()

    def engine_started(self) -> None:
        """The engine's process runs; it loads PyTorch and the model before it reports."""
        if self.running and not self.stage:
            self.form.stage_label.setText(
                tr("{}: loading PyTorch and the model…").format(self.title)
            )

    def on_event(self, event: EngineEvent) -> None:
        if event.type == contract.PROGRESS:
            self._progress(event)
        elif event.type == contract.LOG:
            self.form.log_raw(event.message)
            line = people_line(event.message)
            if line:
                self.form.log(line)
        elif event.message.strip():
            self.form.log_raw(event.message)

    def _progress(self, event: EngineEvent) -> None:
        if not self.stage:
            self.form.progress_bar.setRange(0, 100)
        if event.stage != self.stage:
            self.stage = event.stage
            self.form.log(stage_title(event.stage) + "…")
        self.form.stage_label.setText(stage_text(event))
        self.left.update(event.stage, event.fraction, event.at)
        self.form.log_raw(event.text)

    def tick(self, now: Optional[float] = None) -> None:
        """Refresh the time line (every second while running)."""
        now = self.clock() if now is None else now
        left = self.shown.update(self.left.seconds(now), now) if self.running else None
        self.form.time_label.setText(time_text(now - self.started, left, self.running))

    def end(self, text: str, seconds: Optional[float] = None) -> None:
        """The run ended: ``text`` on the stage line, the elapsed time alone on the time line."""
        self.running = False
        self.form.progress_bar.setRange(0, 100)
        self.form.stage_label.setText(text)
        elapsed = self.clock() - self.started if seconds is None else seconds
        self.form.time_label.setText(time_text(elapsed, None, False))
