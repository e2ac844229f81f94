"""Ray never hangs and never outlives the run: an address that does not answer is one line
within seconds, worker settings are checked, SIGTERM (the plugin's cancel) ends the run with
exit code 130 and stops the local cluster, and a ``kill -9`` of the run leaves no Ray process
behind (the reaper stops them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.core.helpers import tiny_model_file, write_geotiff

from .conftest import PY, ROOT, make_model, make_raster, temporary_files

pytest.importorskip("ray", reason="Ray is not installed (make setup installs the 'cluster' extra)")

from lovecs_core.mapping.ray import reaper  # noqa: E402

#: ``lovecs ARGS`` with the connect timeout shortened (a test does not wait 20 s).
SHORT_TIMEOUT = """
import sys
from lovecs_core.mapping.ray import cluster
cluster.CONNECT_TIMEOUT_S = 3.0
from lovecs_core.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _predict(tmp_path: Path, *extra: str) -> list[str]:
    model, raster = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    return ["predict", "--model", str(model), "--raster", str(raster), "--out",
            str(tmp_path / "map.tif"), *extra]  # fmt: skip


def test_an_address_that_refuses_is_one_line_at_once(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run(
        [PY, "-c", SHORT_TIMEOUT, *_predict(tmp_path, "--ray", "127.0.0.1:1")],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "cannot connect to the Ray cluster at 127.0.0.1:1 (connection refused)" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60
    assert not (tmp_path / "map.tif").exists() and temporary_files(tmp_path) == []


def test_an_address_that_never_answers_times_out(tmp_path):
    """A port that accepts connections but is no Ray cluster: Ray would retry for minutes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        t0 = time.monotonic()
        proc = subprocess.run(
            [PY, "-c", SHORT_TIMEOUT, *_predict(tmp_path, "--ray", f"127.0.0.1:{port}")],
            cwd=str(ROOT), capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 120


@pytest.mark.parametrize("flag,value", [("--ray-workers", "0"), ("--ray-cpus-per-worker", "-2")])
def test_worker_settings_are_checked(cli, tmp_path, flag, value):
    rc, log = cli(*_predict(tmp_path, "--ray", flag, value))
    assert rc == 1 and f"{flag} must be a whole number of at least 1, got {int(value)}" in log
    assert not (tmp_path / "map.tif").exists()


def _mapping_on_ray(tmp_path: Path) -> tuple[subprocess.Popen, set[reaper.Process]]:
    """A run mapping a large raster on a local Ray cluster, once its workers map; with the
    processes below it (the cluster's)."""
    data = np.random.default_rng(0).integers(1, 255, (3, 2500, 2500)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "big.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs")
    child = subprocess.Popen(
        [PY, "-m", "lovecs_core", "--progress", "json", "predict", "--model", str(model),
         "--raster", str(raster), "--out", str(tmp_path / "out" / "map.tif"), "--ray",
         "--ray-workers", "1", "--device", "cpu"],
        cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    for line in child.stdout:
        event = json.loads(line)
        if event.get("stage") == "mapping" and event.get("fraction", 0) > 0:
            break
    else:
        pytest.fail(f"the run ended before mapping (exit {child.wait()})")
    below = reaper.descendants(child.pid, reaper._table())
    assert len(below) >= 3  # the reaper, Ray's GCS, raylet ...
    return child, below


def _gone(processes: set[reaper.Process], within: float) -> set[reaper.Process]:
    deadline = time.monotonic() + within
    while True:
        alive = reaper._alive(processes, reaper._table())
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _ray_folders() -> set[str]:
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("ray-*")}


def test_sigterm_cancels_with_130_and_stops_the_cluster(tmp_path):
    folders = _ray_folders()
    child, below = _mapping_on_ray(tmp_path)
    child.send_signal(signal.SIGTERM)
    rest = child.stdout.read() if child.stdout else ""
    assert child.wait(timeout=120) == 130
    assert '"type": "cancelled"' in rest
    assert _gone(below, within=30) == set()
    assert list((tmp_path / "out").iterdir()) == []
    assert _ray_folders() <= folders  # the session folder went with the cluster


def test_kill_9_of_the_run_leaves_no_ray_process(tmp_path):
    child, below = _mapping_on_ray(tmp_path)
    child.kill()
    child.wait(timeout=30)
    if child.stdout:
        child.stdout.close()
    assert _gone(below, within=40) == set()
