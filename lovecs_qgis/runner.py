"""Run the engine in a separate process and follow it: ``<python> -m lovecs_core --progress json
<command> ...``.

The child streams JSON lines on stdout (``progress``, ``result``, ``error``, ``cancelled``) and
log text on stderr. A crash or out-of-memory error in torch ends the child, never QGIS. The child
leads its own process group (a new session), so cancelling stops it and everything it started:
SIGTERM first (the engine then stops at its next progress report and removes partial outputs),
SIGKILL for the whole group after a grace period.

This module is plain Python (no QGIS import): :class:`EngineProcess` is used by the Processing
algorithms (a blocking loop that polls the feedback's cancel flag) and by
:class:`~lovecs_qgis.task.EngineTask`, the ``QgsTask`` the dock runs. What the child writes
(event types, stage names and weights, temporary-file names) is defined in the engine's
``contract`` module.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from .engine import contract
from .environment import engine_env, find_engine_python
from .events import EngineEvent, EngineOutcome, Status, parse_line

GRACE_S = 10.0
ORPHAN_WAIT_S = 2.0
_WINDOWS = os.name == "nt"
#: The child leads a new process group, so the whole group can be stopped.
_NEW_GROUP: dict[str, Any] = (
    {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    if _WINDOWS
    else {"start_new_session": True}
)
LOG_TAIL_LINES = 200

#: Overall progress (percent) spanned by each engine stage, per command.
STAGES: dict[str, dict[str, tuple[float, float]]] = contract.STAGES


def remove_partial_outputs(outputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete temporary files the engine writes beside ``outputs`` before renaming them (left
    behind only when the engine was killed); the outputs themselves are never touched."""
    removed = []
    for output in map(Path, outputs):
        for entry in contract.partial_files(output):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def engine_args(**options: Any) -> list[str]:
    """``--flag value`` pairs for options that are set (None/''/False left out; True: flag only;
    lists: the flag then every item). Keys use ``_`` for ``-``."""
    args: list[str] = []
    for key, value in options.items():
        if value is None or value is False or value == "" or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


@dataclasses.dataclass
class _Seen:
    """What :meth:`EngineProcess.run` has read from the child so far."""

    result: Optional[dict[str, Any]] = None
    error: str = ""
    engine_cancelled: bool = False
    exited_at: Optional[float] = None

    def take(self, event: EngineEvent) -> None:
        if event.type == contract.RESULT:
            self.result = event.data
        elif event.type == contract.ERROR:
            self.error = event.message or str(event.data)
        elif event.type == contract.CANCELLED:
            self.engine_cancelled = True


class EngineProcess:
    """One engine run in a child process (see the module docstring). For example::

    proc = EngineProcess("predict", ["--model", m, "--raster", r, "--out", o], outputs=[o])
    outcome = proc.run(on_event=print, is_cancelled=feedback.isCanceled)
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str],
        python: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        outputs: Iterable[str | os.PathLike[str]] = (),
        grace: float = GRACE_S,
        argv: Optional[Sequence[str]] = None,
    ) -> None:
        """``argv`` replaces the whole command line (tests use it for fake engines)."""
        self.command = command
        self.args = list(args)
        self.python = python
        self._argv = None if argv is None else list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.outputs = [Path(p) for p in outputs]
        self.grace = grace
        self._proc: Optional[subprocess.Popen[str]] = None
        self._events: "queue.Queue[Optional[EngineEvent]]" = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._open_streams = 0
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._terminated_at: Optional[float] = None
        self._killed = False
        self._started_at = 0.0

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("the engine process was already started")
        argv = self.argv
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            cwd=self.cwd,
            env=self.env if self.env is not None else engine_env(),
            **_NEW_GROUP,
        )
        self._open_streams = 2
        for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
            reader = threading.Thread(
                target=self._read, args=(stream, name), daemon=True, name=f"lovecs-{name}"
            )
            reader.start()
            self._readers.append(reader)

    def _read(self, stream: Any, name: str) -> None:
        try:
            for line in stream:
                event = parse_line(line, name)
                if event.type == contract.LOG:
                    self._log.append(event.message)
                self._events.put(event)
        finally:
            stream.close()
            self._events.put(None)  # one end marker per stream

    @property
    def argv(self) -> list[str]:
        """The child's command line (finding the engine's Python on first use)."""
        if self._argv is None:
            if self.python is None:
                self.python = find_engine_python()
            self._argv = [
                self.python,
                "-m",
                "lovecs_core",
                "--progress",
                "json",
                self.command,
                *self.args,
            ]
        return self._argv

    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self._proc is None else self._proc.poll()

    def next_event(self, timeout: float = 0.1) -> Optional[EngineEvent]:
        """The next event, or None after ``timeout`` seconds without one or when both output
        streams are closed (see :attr:`drained`)."""
        while self._open_streams:
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                return None
            if item is None:
                self._open_streams -= 1
                continue
            return item
        return None

    @property
    def drained(self) -> bool:
        """Both of the child's output streams are closed and every event was read."""
        return self._proc is not None and self._open_streams == 0

    def terminate(self) -> None:
        """Ask the engine to stop (SIGTERM to its process group); returns at once."""
        if self._terminated_at is None:
            self._terminated_at = time.monotonic()
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """Stop the engine and everything it started now (SIGKILL to its process group)."""
        self._killed = True
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        if _WINDOWS:  # no process groups to signal: end the process tree (untested here)
            if self._proc.poll() is None:
                subprocess.run(
                    ["taskkill", "/T", "/F", "/PID", str(self._proc.pid)],
                    capture_output=True,
                    check=False,
                )
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self, grace: Optional[float] = None) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the child is gone."""
        if self._proc is None:
            return
        self.terminate()
        try:
            self._proc.wait(timeout=self.grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            self.kill()
            self._proc.wait()
        self._signal_group(signal.SIGKILL)  # whatever the engine started and left behind

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        return None if self._proc is None else self._proc.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._log)[-lines:])

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.cancel(grace=1.0)

    # -- the loop -------------------------------------------------------------------------------
    def run(
        self,
        on_event: Optional[Callable[[EngineEvent], None]] = None,
        is_cancelled: Optional[Callable[[], bool]] = None,
        poll: float = 0.1,
    ) -> EngineOutcome:
        """Start (if needed), follow until the child ends, and say how it ended. ``is_cancelled``
        is polled every ``poll`` seconds; when it turns true the child is stopped."""
        if self._proc is None:
            self.start()
        assert self._proc is not None
        seen = _Seen()
        try:
            while True:
                event = self.next_event(poll)
                if event is not None:
                    seen.take(event)
                    if on_event is not None:
                        on_event(event)
                self._stop_if_asked(is_cancelled)
                self._stop_orphans(seen)
                if self.drained:
                    self._reap()
                    break
        except BaseException:
            self.cancel(grace=1.0)
            raise
        finally:
            self._signal_group(signal.SIGKILL)  # no orphans: the whole group goes
        return self._outcome(seen)

    def _stop_if_asked(self, is_cancelled: Optional[Callable[[], bool]]) -> None:
        """SIGTERM once the caller cancels; SIGKILL once the grace period after it has passed."""
        if self._terminated_at is None and is_cancelled is not None and is_cancelled():
            self.terminate()
        if (
            self._terminated_at is not None
            and not self._killed
            and self.running
            and time.monotonic() - self._terminated_at > self.grace
        ):
            self.kill()

    def _stop_orphans(self, seen: "_Seen") -> None:
        """Note when the child exits; if its pipes stay open a while after (a grandchild holds
        them), stop the whole group."""
        if seen.exited_at is None and not self.running:
            seen.exited_at = time.monotonic()
        if (
            seen.exited_at is not None
            and not self.drained
            and (time.monotonic() - seen.exited_at > ORPHAN_WAIT_S)
        ):
            self._signal_group(signal.SIGKILL)  # a grandchild holds the pipes open

    def _reap(self) -> None:
        """Wait for the drained child: a terminated one gets what is left of its grace period,
        then SIGKILL."""
        assert self._proc is not None
        if self._terminated_at is not None and not self._killed:
            try:
                self._proc.wait(
                    timeout=max(0.0, self.grace - (time.monotonic() - self._terminated_at))
                )
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc.wait()

    def _outcome(self, seen: "_Seen") -> EngineOutcome:
        """How the run ended; partial outputs are removed unless it succeeded."""
        assert self._proc is not None
        code = self._proc.returncode
        seconds = time.monotonic() - self._started_at
        tail = self.log_tail()
        if code == 0 and seen.result is not None:
            return EngineOutcome(Status.SUCCESS, seen.result, "", code, tail, seconds)
        remove_partial_outputs(self.outputs)
        if self._terminated_at is not None or seen.engine_cancelled:
            return EngineOutcome(Status.CANCELLED, {}, "cancelled by the user", code, tail, seconds)
        error = seen.error or self._describe_failure(code)
        return EngineOutcome(Status.FAILED, {}, error, code, tail, seconds)

    def _describe_failure(self, code: Optional[int]) -> str:
        last = [ln for ln in self._log if ln.strip()][-3:]
        if code == 0:
            head = "the engine finished without reporting a result"
        elif code is not None and code < 0:
            name = _signal_name(-code)
            hint = " (out of memory?)" if name == "SIGKILL" else ""
            head = f"the engine process was killed by {name}{hint}"
        else:
            head = f"the engine process failed (exit code {code})"
        return head + (": " + " | ".join(last) if last else "")
