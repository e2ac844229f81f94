"""The refine session: one engine child process kept alive while the dock is open
(``python -m lovecs_core --progress json session``), driven with one JSON request a line.

:class:`SessionClient` queues requests and sends the next one when the previous one's ``reply``
arrived, so one runs at a time; everything is asynchronous (``QProcess``, and the engine's
Python is looked up on a worker thread), so the GUI never waits. When the process dies, the
request in flight fails, :attr:`SessionClient.died` says why, and the next request starts a new
process, sending the last ``open`` and ``view`` again first. :meth:`SessionClient.cancel` kills the
process (the next request restarts it). The requests, their keys and the reply's shape are in
the engine's ``contract`` (``SESSION_REQUESTS``, ``REPLY``).
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

from .engine import contract
from .environment import engine_env, find_engine_python
from .events import parse_line
from .i18n import tr

#: How long :meth:`SessionClient.stop` lets the engine quit before killing it (ms).
QUIT_GRACE_MS = 3000
LOG_TAIL_LINES = 60


class SessionError(ValueError):
    """A request the contract does not know, or keys it does not take."""


@dataclass
class Request:
    id: int
    request: str
    keys: dict[str, Any]
    resent: bool = False  # an ``open``/``view`` sent again after a restart

    def line(self) -> str:
        return json.dumps({"id": self.id, "request": self.request, **self.keys}) + "\n"


@dataclass
class Reply:
    """The engine's answer to one request (or the plugin's, when the process died first)."""

    id: int
    request: str
    ok: bool
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    resent: bool = False


def session_argv(python: str) -> list[str]:
    return [python, "-m", "lovecs_core", "--progress", "json", "session"]


class SessionClient(QObject):
    """Talks to one engine session process.

    Signals: ``replied(Reply)``; ``engineEvent(EngineEvent)`` for progress and log lines;
    ``died(str)`` when the process ended without being asked to (the message says how);
    ``busyChanged(bool)``; ``started()`` each time a process started."""

    replied = pyqtSignal(object)
    engineEvent = pyqtSignal(object)  # noqa: N815 (Qt naming)
    died = pyqtSignal(str)
    busyChanged = pyqtSignal(bool)  # noqa: N815
    started = pyqtSignal()
    _pythonFound = pyqtSignal(object, str)  # noqa: N815 (argv or None, error)

    def __init__(
        self,
        argv: Optional[Sequence[str]] = None,
        python: Optional[str] = None,
        parent: Optional[QObject] = None,
    ) -> None:
        """``argv`` replaces the whole command line (tests use it for fake engines)."""
        super().__init__(parent)
        self._argv = list(argv) if argv is not None else None
        self._python = python
        self._queue: collections.deque[Request] = collections.deque()
        self._current: Optional[Request] = None
        self._next_id = 1
        self._process: Optional[QProcess] = None
        self._starting = False
        self._stopping = False
        self._stdout = b""
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._remembered: dict[str, dict[str, Any]] = {}  # last ok open and view
        self._fresh = True  # the next process needs no resending (none ran, or stop() asked)
        self.restarts = 0
        self._was_busy = False
        self._stop_reason = ""
        self._pythonFound.connect(self._on_python)

    # -- state ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue) or self._starting

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.NotRunning

    @property
    def pid(self) -> Optional[int]:
        return int(self._process.processId()) if self.running else None

    def log_tail(self, lines: int = 5) -> str:
        return "\n".join(list(self._log)[-lines:])

    # -- requests ---------------------------------------------------------------------------------
    def request(self, kind: str, **keys: Any) -> int:
        """Queue a request (keys from ``contract.SESSION_REQUESTS[kind]``); its id."""
        allowed = contract.SESSION_REQUESTS.get(kind)
        if allowed is None:
            raise SessionError(f"unknown session request {kind!r}")
        unknown = set(keys) - set(allowed)
        if unknown:
            raise SessionError(f"request {kind!r} takes no {', '.join(sorted(unknown))}")
        req = Request(self._take_id(), kind, dict(keys))
        if kind == contract.OPEN:  # a new model: the view must be computed again
            self._remembered.pop(contract.VIEW, None)
        self._queue.append(req)
        self._pump()
        self._update_busy()
        return req.id

    def _update_busy(self) -> None:
        busy = self.busy
        if busy != self._was_busy:
            self._was_busy = busy
            self.busyChanged.emit(busy)

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _pump(self) -> None:
        if self._current is not None or self._starting or not self._queue:
            return
        if not self.running:
            self._start()
            return
        self._current = self._queue.popleft()
        self._process.write(self._current.line().encode("utf-8"))

    # -- the process ------------------------------------------------------------------------------
    def _start(self) -> None:
        self._starting = True
        if self._argv is not None:
            self._launch(self._argv)
            return
        python = self._python

        def find() -> None:  # worker thread: the first check runs a Python (seconds)
            try:
                self._pythonFound.emit(session_argv(python or find_engine_python()), "")
            except Exception as exc:  # EngineNotFound, OSError
                self._pythonFound.emit(None, str(exc))

        threading.Thread(target=find, daemon=True, name="lovecs-session-python").start()

    def _on_python(self, argv: Optional[list[str]], error: str) -> None:
        if argv is None:
            self._starting = False
            self._fail_all(tr("the engine cannot start: {}").format(error))
            return
        self._launch(argv)

    def _launch(self, argv: Sequence[str]) -> None:
        process = QProcess(self)
        environment = QProcessEnvironment()
        for key, value in engine_env().items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.readyReadStandardOutput.connect(lambda: self._read_stdout(process))
        process.readyReadStandardError.connect(lambda: self._read_stderr(process))
        process.finished.connect(lambda code, status: self._on_finished(process, code, status))
        process.errorOccurred.connect(lambda error: self._on_error(process, error))
        self._process = process
        self._stdout = b""
        self._stopping = False
        if not self._fresh:  # a restart: bring the new process where the old one was
            self.restarts += 1
            for kind in (contract.VIEW, contract.OPEN):
                if kind in self._remembered:
                    self._queue.appendleft(
                        Request(self._take_id(), kind, dict(self._remembered[kind]), True)
                    )
        self._fresh = False
        process.start(argv[0], list(argv[1:]))
        self._starting = False
        self.started.emit()
        self._pump()

    def _read_stdout(self, process: QProcess) -> None:
        if process is not self._process:
            return
        self._stdout += bytes(process.readAllStandardOutput())
        *lines, self._stdout = self._stdout.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", "replace"))

    def _read_stderr(self, process: QProcess) -> None:
        text = bytes(process.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._log.append(line)
                self.engineEvent.emit(parse_line(line, "stderr"))

    def _handle_line(self, line: str) -> None:
        event = parse_line(line, "stdout")
        if event.type != contract.REPLY:
            if event.type == contract.LOG:
                self._log.append(event.message)
            self.engineEvent.emit(event)
            return
        data = dict(event.data)
        current = self._current
        if current is None or data.get("id") != current.id:
            self._log.append(f"unexpected reply: {line}")
            return
        self._current = None
        reply = Reply(
            current.id,
            str(data.pop("request", current.request)),
            bool(data.pop("ok", False)),
            str(data.pop("error", "") or ""),
            data,
            current.resent,
        )
        reply.data.pop("id", None)
        if reply.ok and current.request in (contract.OPEN, contract.VIEW):
            self._remembered[current.request] = dict(current.keys)
        self.replied.emit(reply)
        self._pump()
        self._update_busy()

    def _on_error(self, process: QProcess, error: QProcess.ProcessError) -> None:
        if process is self._process and error == QProcess.FailedToStart:
            self._process = None
            self._fail_all(tr("the engine could not start: {}").format(process.errorString()))

    def _on_finished(self, process: QProcess, code: int, status: QProcess.ExitStatus) -> None:
        if process is not self._process:
            return
        self._read_stdout(process)
        self._process = None
        process.deleteLater()
        if self._stopping:
            self._fail_all(self._stop_reason or tr("stopped"))
            return
        how = (
            tr("crashed or was killed")
            if status == QProcess.CrashExit
            else tr("ended (exit code {})").format(code)
        )
        message = tr("The engine session {}").format(how)
        tail = self.log_tail(3)
        if tail:
            message += ": " + tail.replace("\n", " | ")
        message += tr("; it restarts with the next request.")
        self._fail_all(message)
        self.died.emit(message)

    def _fail_all(self, message: str) -> None:
        """The request in flight and every queued one fail with ``message``."""
        failed = ([self._current] if self._current is not None else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for req in failed:
            self.replied.emit(Reply(req.id, req.request, False, message, {}, req.resent))
        self._update_busy()

    # -- stopping ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Kill the process now: what runs and what waits fail ("cancelled"); the next request
        starts a new process (with the last ``open`` and ``view``)."""
        process = self._process
        if process is None:
            self._fail_all(tr("cancelled"))
            return
        self._stopping, self._stop_reason = True, tr("cancelled")
        process.kill()
        process.waitForFinished(3000)  # a killed process is gone at once

    def stop(self, on_stopped: Optional[Callable[[], None]] = None) -> None:
        """Ask the engine to quit (then kill it after a grace period); forgets the last open and
        view, so a later request starts afresh."""
        self._queue.clear()
        self._remembered.clear()
        self._fresh = True
        process = self._process
        if process is None:
            if on_stopped is not None:
                on_stopped()
            return
        self._stopping, self._stop_reason = True, tr("stopped")
        if on_stopped is not None:
            process.finished.connect(lambda *_: on_stopped())
        process.write(Request(self._take_id(), contract.QUIT, {}).line().encode("utf-8"))
        process.closeWriteChannel()
        QTimer.singleShot(QUIT_GRACE_MS, lambda: process.kill() if process is self._process else 0)

    def stop_now(self, timeout_ms: int = QUIT_GRACE_MS) -> None:
        """:meth:`stop`, waiting for the process to end (when QGIS closes the dock)."""
        process = self._process
        self.stop()
        if process is not None and not process.waitForFinished(timeout_ms):
            process.kill()
            process.waitForFinished(1000)
