"""The reaper (``mapping/ray/reaper.py``) without Ray: it stops what a killed run left orphaned,
removes the session folder, and leaves a run that ended its cluster cleanly alone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lovecs_core.mapping.ray import reaper

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")

#: A "run" that starts a long-lived child (as ray.init starts the cluster's processes).
RUN = "import subprocess, time; subprocess.Popen(['sleep', '120']); time.sleep(120)"


def _start(tmp_path: Path) -> tuple[subprocess.Popen, subprocess.Popen, Path]:
    folder = tmp_path / "session"
    folder.mkdir()
    run = subprocess.Popen([sys.executable, "-c", RUN])
    watcher = subprocess.Popen([sys.executable, "-I", reaper.__file__, str(run.pid), str(folder)])
    deadline = time.monotonic() + 20
    while not reaper.descendants(run.pid, reaper._table()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2 * reaper.POLL_S + 0.5)  # the reaper has noted the child
    return run, watcher, folder


def test_a_killed_run_leaves_nothing(tmp_path: Path):
    run, watcher, folder = _start(tmp_path)
    children = reaper.descendants(run.pid, reaper._table())
    run.kill()
    run.wait()
    assert watcher.wait(timeout=30) == 0
    assert reaper._alive(children, reaper._table()) == set()
    assert not folder.exists()


def test_a_clean_end_leaves_the_run_alone(tmp_path: Path):
    run, watcher, folder = _start(tmp_path)
    children = reaper.descendants(run.pid, reaper._table())
    folder.rmdir()  # the run stopped its cluster and removed the folder
    assert watcher.wait(timeout=30) == 0
    assert reaper._alive(children, reaper._table()) == children  # still the run's
    reaper.stop(children | {(run.pid, reaper._table()[run.pid][1])})
    run.wait(timeout=10)
