"""Time left during a run, from the engine's own pace. Plain Python, no QGIS import.

:class:`TimeLeft` takes the before-run plan (seconds per stage, ``estimate.stage_plan``) and the
progress events as they arrive, each with its arrival time. A stage's pace is measured from
consecutive events of that stage (the first few tiles or iterations); the stages not measured
yet take their planned seconds times how much slower or faster the measured stages ran than
planned. Until some stage has been measured there is no figure ("estimating…").
:class:`Smoothed` turns the figures into what the dock shows: it counts down between events and
never jumps up wildly when a slow stage (pseudo-labelling) begins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .engine import estimate

#: Events of one stage, after its first, before its pace counts (the first few tiles/iterations).
MIN_SAMPLES = 3


@dataclass
class StagePace:
    """What was seen of one stage: passes finished, the current fraction, measured pace."""

    passes_done: int = 0
    fraction: float = 0.0
    busy: float = 0.0  # seconds between consecutive events of this stage
    progress: float = 0.0  # fraction gained over those seconds
    samples: int = 0
    last_at: Optional[float] = None

    @property
    def seconds_per_pass(self) -> Optional[float]:
        if self.samples < MIN_SAMPLES or self.progress <= 0:
            return None
        return self.busy / self.progress


@dataclass
class TimeLeft:
    """Seconds left of a run, from its plan and its progress events (see the module docstring)."""

    plan: Mapping[str, float]
    passes: Mapping[str, int] = field(default_factory=dict)
    stages: dict[str, StagePace] = field(default_factory=dict)
    current: str = ""

    def update(self, stage: str, fraction: float, at: float) -> None:
        """One progress event of ``stage`` at ``fraction``, arrived at time ``at`` (seconds)."""
        if stage != self.current:
            self._leave(self.current)
            self.current = stage
        pace = self.stages.setdefault(stage, StagePace())
        if fraction < pace.fraction - 0.5:  # a new pass of a repeated stage
            pace.passes_done += 1
        elif pace.last_at is not None and fraction > pace.fraction:
            pace.busy += at - pace.last_at
            pace.progress += fraction - pace.fraction
            pace.samples += 1
        pace.fraction, pace.last_at = fraction, at

    def _leave(self, stage: str) -> None:
        pace = self.stages.get(stage)
        if pace is None:
            return
        pace.last_at = None  # the time away is not this stage's
        if pace.fraction >= 0.99:
            pace.passes_done, pace.fraction = pace.passes_done + 1, 0.0

    def speed(self) -> Optional[float]:
        """Measured over planned seconds per pass, over the stages measured (None: none yet)."""
        measured = planned = 0.0
        for stage, pace in self.stages.items():
            per_pass = pace.seconds_per_pass
            if per_pass is not None and self.plan.get(stage):
                measured += per_pass
                planned += self.plan[stage] / self.passes.get(stage, 1)
        return measured / planned if planned > 0 else None

    def seconds(self, now: float) -> Optional[float]:
        """Seconds left at time ``now``; None until a stage's pace was measured."""
        speed = self.speed()
        if speed is None:
            return None
        left = 0.0
        for stage, planned in self.plan.items():
            if stage == estimate.STARTING or (
                stage not in self.stages and self._started_after(stage)
            ):
                continue  # over, or a stage before the one running that the engine skipped
            pace = self.stages.get(stage, StagePace())
            total = self.passes.get(stage, 1)
            units = max(0.0, total - pace.passes_done - pace.fraction)
            per_pass = pace.seconds_per_pass or planned / total * speed
            since = now - pace.last_at if stage == self.current and pace.last_at else 0.0
            left += max(0.0, units * per_pass - since)
        return left

    def _started_after(self, stage: str) -> bool:
        """Whether ``stage`` comes before the running stage in the plan (so it was skipped)."""
        order = list(self.plan)
        if stage not in order or self.current not in order:
            return False
        return order.index(stage) < order.index(self.current)


@dataclass
class Smoothed:
    """The figure shown: counts down between updates, follows a lower figure quickly and a
    higher one slowly (at most ``max_rise`` of the shown value per second)."""

    max_rise: float = 0.02
    shown: Optional[float] = None
    at: float = 0.0

    def update(self, raw: Optional[float], now: float) -> Optional[float]:
        """The figure to show at ``now`` given the latest raw figure (None: not known yet)."""
        if self.shown is None:
            self.shown, self.at = raw, now
            return raw
        elapsed = max(0.0, now - self.at)
        expected = self.tick(now)
        if raw is None:
            return expected
        if raw < expected:
            self.shown = expected + 0.5 * (raw - expected)
        else:
            rise = self.max_rise * max(expected, 30.0) * max(elapsed, 1.0)
            self.shown = min(raw, expected + rise)
        return self.shown

    def tick(self, now: float) -> float:
        """The shown value counted down to ``now``."""
        assert self.shown is not None
        self.shown, self.at = max(0.0, self.shown - (now - self.at)), now
        return self.shown
