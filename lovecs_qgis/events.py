"""What the engine's child process says, as the plugin sees it: one :class:`EngineEvent` per JSON
line (or log line), how a run ended (:class:`EngineOutcome`), and the overall progress bar that
never goes backwards (:class:`ProgressMap`). Plain Python, no QGIS import."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .engine import contract


@dataclass
class EngineEvent:
    """One message from the child: ``progress``, ``result``, ``error``, ``cancelled`` (stdout JSON)
    or ``log`` (a stderr line, or stdout text that is not JSON). ``at``: when it was read
    (``time.monotonic()``), so the pace of a run is measured from the engine's output."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @property
    def stage(self) -> str:
        return str(self.data.get("stage", ""))

    @property
    def fraction(self) -> float:
        return float(self.data.get("fraction", 0.0))

    @property
    def message(self) -> str:
        return str(self.data.get("message", ""))

    @property
    def text(self) -> str:
        """A human line: ``"mapping 41 %: 41/100 tiles"`` for progress, else the message."""
        if self.type == contract.PROGRESS:
            head = f"{self.stage} {100 * self.fraction:.0f} %"
            return f"{head}: {self.message}" if self.message else head
        return self.message


def parse_line(line: str, stream: str = "stdout") -> EngineEvent:
    """An event from one line of the child's output; anything not a JSON event is a log line."""
    text = line.rstrip("\r\n")
    if stream == "stdout" and text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("type"), str):
            kind = data.pop("type")
            return EngineEvent(kind, data)
    return EngineEvent(contract.LOG, {"message": text, "stream": stream})


class Status(enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class EngineOutcome:
    """How a run ended: the ``result`` payload on success, a readable ``error`` otherwise."""

    status: Status
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    returncode: Optional[int] = None
    log_tail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS


class ProgressMap:
    """Engine stage fractions -> one overall percentage that never goes backwards. Stages not in
    the map (e.g. pseudo-labelling between training rounds) keep the current value."""

    def __init__(self, stages: Mapping[str, tuple[float, float]]) -> None:
        self.stages = dict(stages)
        self.percent = 0.0

    def update(self, event: EngineEvent) -> Optional[float]:
        span = self.stages.get(event.stage)
        if span is None:
            return None
        low, high = span
        self.percent = max(self.percent, low + (high - low) * min(max(event.fraction, 0.0), 1.0))
        return self.percent
