"""Progress events and cancellation, shared by the CLI, the plugin runner and tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, TextIO

from .contract import EVENT_TYPES, PROGRESS


class Cancelled(Exception):
    """Raised inside the engine when a :class:`CancelToken` was cancelled."""


@dataclass
class ProgressEvent:
    """One progress report: a stage name, a fraction in [0, 1] of that stage, and details."""

    stage: str
    fraction: float
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"type": PROGRESS, **asdict(self)}, default=float)


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """Thread-safe cancellation flag; the engine polls it between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class Reporter:
    """Engine-side helper: forwards events to an optional callback and polls an optional token."""

    def __init__(
        self, callback: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
    ) -> None:
        self.callback = callback
        self.cancel = cancel

    def __call__(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        if self.callback is not None:
            self.callback(ProgressEvent(stage, min(max(float(fraction), 0.0), 1.0), message, extra))

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()


class JsonLinesSink:
    """Progress callback that writes one JSON object per line (the plugin runner reads these).

    Events are throttled to at most one per ``min_interval`` seconds per stage, except stage
    changes and completion, so a fast loop does not flood the pipe.
    """

    def __init__(self, stream: TextIO, min_interval: float = 0.2) -> None:
        self.stream = stream
        self.min_interval = min_interval
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        stage, last_time = self._last
        if event.stage == stage and event.fraction < 1.0 and now - last_time < self.min_interval:
            return
        self._last = (event.stage, now)
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


def emit_json(stream: TextIO, kind: str, **payload: Any) -> None:
    """Write a non-progress JSON line (``result``, ``error``, ``cancelled``)."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}; the plugin reads {EVENT_TYPES}")
    stream.write(json.dumps({"type": kind, **payload}, default=str) + "\n")
    stream.flush()
