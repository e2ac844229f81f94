"""Stops a local Ray cluster's processes when the run that started it dies without stopping
them (``kill -9``, out of memory): Ray's agents would otherwise run on, orphaned.

A small watcher process, started before the cluster, follows the run's process tree (Linux's
``/proc``): while the run lives it notes every process below it (Ray's GCS, raylet, agents,
workers) with its start time; once the run is gone it stops those still there (SIGTERM, then
SIGKILL), with their own children, and removes the cluster's session folder. After a clean end
(the run removes the folder) only processes Ray left orphaned are stopped, and it exits.
Standard library only: run as a script (``python -I reaper.py PID FOLDER``), so it needs no
import path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Seconds between two looks at the run's process tree.
POLL_S = 0.5
#: Seconds the processes get to stop after SIGTERM before SIGKILL.
GRACE_S = 3.0

Process = tuple[int, str]  # (pid, start time): a pid reused by another process is not ours


def _table() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time), from ``/proc``."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (name) "
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> set[Process]:
    """The processes below ``root`` (children, theirs ...)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[Process] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][1]))
        todo.extend(children.get(pid, []))
    return found


def _alive(processes: set[Process], table: dict[int, tuple[int, str]]) -> set[Process]:
    return {(pid, start) for pid, start in processes if table.get(pid, (0, ""))[1] == start}


def _signal(processes: set[Process], sig: int) -> None:
    for pid, _ in processes:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def stop(processes: set[Process]) -> None:
    """Stop ``processes`` that still run, and their children: SIGTERM, then SIGKILL."""
    table = _table()
    left = _alive(processes, table)
    for pid, _ in list(left):
        left |= descendants(pid, table)
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _alive(left, _table())
    _signal(left, signal.SIGKILL)


def watch(run: int, folder: str) -> None:
    """Note the processes below ``run`` while it runs and ``folder`` (the cluster's session
    files) exists; then stop those left orphaned (below ``run`` no more), and remove ``folder``
    when ``run`` died without doing so."""
    me = os.getpid()
    seen: set[Process] = set()
    while True:
        table = _table()
        if run not in table or not os.path.isdir(folder):
            break
        seen = _alive(seen, table) | descendants(run, table)
        seen = {p for p in seen if p[0] != me}
        time.sleep(POLL_S)
    table = _table()
    attached = descendants(run, table) if run in table else set()
    stop(seen - attached)
    if run not in table:
        shutil.rmtree(folder, ignore_errors=True)


def start_reaper(folder: str) -> None:
    """Start the watcher for this process and the cluster whose session files are in
    ``folder`` (nothing where there is no ``/proc``)."""
    if not Path("/proc/self/stat").is_file():
        return
    subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).resolve()), str(os.getpid()), folder],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped with the run's process group
        close_fds=True,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
