"""EngineProcess and EngineTask with fake engines (small Python scripts): events, failures,
crashes, cancellation without orphans, partial-output cleanup."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from qgis.core import QgsApplication

from lovecs_qgis.events import EngineEvent, ProgressMap, Status, parse_line
from lovecs_qgis.runner import EngineProcess, remove_partial_outputs
from lovecs_qgis.task import EngineTask

from .conftest import wait_until


def fake(tmp_path: Path, body: str, name: str = "engine.py") -> list[str]:
    script = tmp_path / name
    script.write_text(
        "import json, os, signal, subprocess, sys, time\n"
        "def emit(**kw):\n"
        "    print(json.dumps(kw), flush=True)\n" + textwrap.dedent(body)
    )
    return [sys.executable, str(script)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_parse_line():
    event = parse_line(
        '{"type": "progress", "stage": "mapping", "fraction": 0.25, '
        '"message": "1/4 tiles", "extra": {}}\n'
    )
    assert (event.type, event.stage, event.fraction) == ("progress", "mapping", 0.25)
    assert event.text == "mapping 25 %: 1/4 tiles"
    assert parse_line("plain text\n").type == "log"
    assert parse_line("{not json").data["message"] == "{not json"
    assert parse_line('["a list"]').type == "log"
    assert parse_line('{"type": "result"}', "stderr").type == "log"  # stderr is never events


def test_progress_map_is_monotone_and_ignores_unknown_stages():
    progress = ProgressMap({"training": (10, 90), "mapping": (90, 100)})
    assert progress.update(EngineEvent("progress", {"stage": "training", "fraction": 0.5})) == 50
    assert (
        progress.update(EngineEvent("progress", {"stage": "pseudo-labels", "fraction": 0.1}))
        is None
    )
    assert progress.update(EngineEvent("progress", {"stage": "training", "fraction": 0.25})) == 50
    assert progress.update(EngineEvent("progress", {"stage": "mapping", "fraction": 1.0})) == 100


def test_success_streams_events_and_result(tmp_path):
    argv = fake(
        tmp_path,
        """
        for i in range(3):
            emit(type="progress", stage="mapping", fraction=i / 2, message=f"{i}/2", extra={})
        print("not json on stdout", flush=True)
        print("a log line", file=sys.stderr, flush=True)
        emit(type="result", output="map.tif", tiles_total=2)
    """,
    )
    events = []
    outcome = EngineProcess("predict", [], argv=argv).run(events.append)
    assert outcome.status is Status.SUCCESS and outcome.ok
    assert outcome.result == {"output": "map.tif", "tiles_total": 2}
    progress = [e for e in events if e.type == "progress"]
    assert [e.fraction for e in progress] == [0.0, 0.5, 1.0]
    logs = {e.message for e in events if e.type == "log"}
    assert logs == {"not json on stdout", "a log line"}
    assert "a log line" in outcome.log_tail


def test_engine_error_message_is_reported(tmp_path):
    argv = fake(
        tmp_path,
        """
        print("Traceback noise", file=sys.stderr)
        emit(type="error", message="the model expects 4 band(s) but 3 were selected")
        sys.exit(1)
    """,
    )
    outcome = EngineProcess("predict", [], argv=argv).run()
    assert outcome.status is Status.FAILED and outcome.returncode == 1
    assert outcome.error == "the model expects 4 band(s) but 3 were selected"


def test_crash_without_json_uses_the_stderr_tail(tmp_path):
    argv = fake(
        tmp_path,
        """
        print("RuntimeError: CUDA error: an illegal memory access", file=sys.stderr, flush=True)
        os._exit(3)
    """,
    )
    outcome = EngineProcess("predict", [], argv=argv).run()
    assert outcome.status is Status.FAILED
    assert "exit code 3" in outcome.error and "illegal memory access" in outcome.error


def test_killed_engine_is_described(tmp_path):
    argv = fake(
        tmp_path,
        """
        emit(type="progress", stage="mapping", fraction=0.1, message="", extra={})
        os.kill(os.getpid(), signal.SIGKILL)
    """,
    )
    outcome = EngineProcess("predict", [], argv=argv).run()
    assert outcome.status is Status.FAILED and outcome.returncode == -signal.SIGKILL
    assert "SIGKILL" in outcome.error and "out of memory" in outcome.error


def test_exit_zero_without_result_is_a_failure(tmp_path):
    outcome = EngineProcess("predict", [], argv=fake(tmp_path, "print('bye')\n")).run()
    assert outcome.status is Status.FAILED
    assert "without reporting a result" in outcome.error


def test_graceful_cancel(tmp_path):
    """SIGTERM reaches the engine, which reports 'cancelled' and removes its partial file."""
    partial = tmp_path / ".map.part-0123abcd.tif"
    argv = fake(
        tmp_path,
        f"""
        open({str(partial)!r}, "w").close()
        def stop(*_):
            os.remove({str(partial)!r})
            emit(type="cancelled")
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        emit(type="progress", stage="mapping", fraction=0.0, message="", extra={{}})
        while True:
            time.sleep(0.05)
    """,
    )
    events: list[EngineEvent] = []
    start = time.monotonic()
    outcome = EngineProcess("predict", [], argv=argv, grace=5).run(
        events.append, is_cancelled=lambda: bool(events)
    )
    assert outcome.status is Status.CANCELLED and outcome.returncode == 130
    assert time.monotonic() - start < 4
    assert not partial.exists()


def test_cancel_kills_a_stubborn_engine_and_its_children(tmp_path):
    """An engine ignoring SIGTERM, with a grandchild holding the pipes: both are killed after
    the grace period; partial files a killed engine leaves behind are removed."""
    out = tmp_path / "map.tif"
    partial = tmp_path / ".map.part-89abcdef.tif"
    pid_file = tmp_path / "child.pid"
    argv = fake(
        tmp_path,
        f"""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, "
                                  "signal.SIG_IGN); time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        open({str(partial)!r}, "w").close()
        emit(type="progress", stage="mapping", fraction=0.0, message="", extra={{}})
        time.sleep(60)
    """,
    )
    (tmp_path / "map.tif").write_text("an earlier, complete map")
    events: list[EngineEvent] = []
    proc = EngineProcess("predict", [], argv=argv, outputs=[out], grace=0.5)
    start = time.monotonic()
    outcome = proc.run(events.append, is_cancelled=lambda: bool(events))
    assert outcome.status is Status.CANCELLED
    assert time.monotonic() - start < 5
    assert outcome.returncode == -signal.SIGKILL
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 3
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild) and not alive(proc.pid)
    assert not partial.exists()
    assert out.read_text() == "an earlier, complete map"  # finished files are never touched


def test_remove_partial_outputs_only_touches_temporary_names(tmp_path):
    """Every name the engine's contract gives a temporary file (each tag, nested, sidecars) is
    removed; finished files and other outputs' temporary files are kept."""
    from lovecs_core.contract import TEMPORARY_TAGS, part_path, temporary_path

    out = tmp_path / "map.tif"
    keep = [
        out,
        tmp_path / "map.qml",
        tmp_path / ".map.part-xyz.tif",
        temporary_path(tmp_path / "other.tif"),
        tmp_path / "map.tif.aux.xml",
    ]
    drop = []
    for tag in TEMPORARY_TAGS:
        stage = temporary_path(out, tag)
        nested = temporary_path(stage)  # a stage file written through a name of its own
        drop += [stage, nested, Path(f"{stage}.aux.xml"), Path(f"{nested}.ovr")]
    model = tmp_path / "adapted.lovecs"
    drop.append(part_path(model))
    for path in keep + drop:
        path.write_text("x")
    removed = remove_partial_outputs([out, model, tmp_path / "missing" / "x.tif"])
    assert sorted(removed) == sorted(drop)
    assert all(p.exists() for p in keep)


def test_a_missing_interpreter_fails_cleanly(tmp_path):
    proc = EngineProcess("predict", [], argv=[str(tmp_path / "no-python"), "-m", "x"])
    with pytest.raises(OSError):
        proc.run()


def test_engine_task_reports_progress_and_outcome(tmp_path, qgis_app):
    argv = fake(
        tmp_path,
        """
        for i in range(5):
            emit(type="progress", stage="mapping", fraction=i / 4, message="", extra={})
            time.sleep(0.02)
        emit(type="result", output="map.tif")
    """,
    )
    done, events, progress = [], [], []
    task = EngineTask("fake predict", "predict", [], argv=argv)
    task.done.connect(done.append)
    task.engineEvent.connect(events.append)
    task.progressChanged.connect(progress.append)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: bool(done), 30)
    outcome = done[0]
    assert outcome.status is Status.SUCCESS and outcome.result["output"] == "map.tif"
    assert len([e for e in events if e.type == "progress"]) == 5
    # "mapping" spans 0-85 % of the overall bar; QgsTask sets 100 % when complete
    assert [p for p in progress if p < 100][-1] == pytest.approx(85.0)


def test_engine_task_cancel_stops_the_child(tmp_path, qgis_app):
    argv = fake(
        tmp_path,
        """
        emit(type="progress", stage="mapping", fraction=0.0, message="", extra={})
        time.sleep(60)
    """,
    )
    done, events = [], []
    task = EngineTask("fake predict", "predict", [], argv=argv, grace=0.5)
    task.done.connect(done.append)
    task.engineEvent.connect(events.append)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: bool(events), 30)
    pid = task.process.pid
    task.cancel()
    wait_until(lambda: bool(done), 30)
    assert done[0].status is Status.CANCELLED
    assert not alive(pid)


def test_engine_task_without_engine_fails_with_a_message(tmp_path, qgis_app):
    done = []
    task = EngineTask("broken", "predict", [], argv=[str(tmp_path / "missing-python")])
    task.done.connect(done.append)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: bool(done), 30)
    assert done[0].status is Status.FAILED and "missing-python" in done[0].error


def test_result_payload_round_trip(tmp_path):
    payload = {"output": str(tmp_path / "m.tif"), "nested": {"a": [1, 2]}}
    argv = fake(tmp_path, f"emit(type='result', **{json.dumps(payload)!s})\n")
    assert EngineProcess("x", [], argv=argv).run().result == payload
