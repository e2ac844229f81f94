"""Mapping on a local Ray cluster (2 CPU workers) equals the one-process map pixel for pixel: on a
synthetic raster, on a window of the shared spaceborne scene resampled to the model's GSD, with a
worker killed mid-run (restarted by Ray, or lost for good and its blocks resubmitted), and a
cancelled run leaves no file. Without Ray, ``--ray`` is a one-line error saying how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal

from lovecs_core.cli.main import main
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.progress import Cancelled, CancelToken, Reporter
from lovecs_core.rasters.reading import open_dataset, pixel_size_metres
from tests.core.helpers import tiny_card, tiny_model_file, write_geotiff

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (make setup installs the 'cluster' extra)"
)

from lovecs_core.mapping.ray.cluster import connected  # noqa: E402
from lovecs_core.mapping.ray.map import ACTOR_PREFIX, RayOptions, predict_raster_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module: 2 CPUs, session files under $TMPDIR/ray."""
    before = {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")}
    with connected("local", num_cpus=2) as r:
        yield r
    # Ray sets RAY_AUTH_MODE=token in this process: restored, or child processes (the plugin's
    # engine) would start clusters that write ~/.ray/auth_token
    assert {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")} == before


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker (1 CPU): the same float32 sums in every conv
    yield
    torch.set_num_threads(previous)


def read(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def _kill_one_worker(no_restart: bool):
    """A progress callback that kills the worker that wrote the first block, while its next
    block is in flight."""
    killed: list[str] = []

    def callback(event) -> None:
        if event.stage == "mapping" and event.fraction > 0 and not killed:
            suffix = f"-{event.extra['worker']}"
            names = [n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX)]
            name = next(n for n in names if n.endswith(suffix))
            ray.kill(ray.get_actor(name), no_restart=no_restart)
            killed.append(name)

    return callback, killed


def test_synthetic_raster_equals_one_process_with_confidence_and_probabilities(
    cluster, tmp_path: Path
):
    rng = np.random.default_rng(7)
    data = rng.integers(1, 256, (3, 420, 700)).astype(np.uint8)
    data[:, 300:, :200] = 0
    raster = write_geotiff(tmp_path / "r.tif", data, nodata=0)
    model = tiny_model_file(tmp_path / "m.lovecs", seed=2)
    outs = {}
    for name in ("one", "ray"):
        kwargs = dict(
            confidence=tmp_path / f"{name}_c.tif", probabilities=tmp_path / f"{name}_p.tif"
        )
        if name == "one":
            outs[name] = predict_raster(model, raster, tmp_path / "one.tif", **kwargs)
        else:
            outs[name] = predict_raster_ray(
                model, raster, tmp_path / "ray.tif", ray_options=RayOptions(block=256), **kwargs
            )
    one, par = outs["one"], outs["ray"]
    assert np.array_equal(read(one.output), read(par.output))
    assert np.array_equal(read(one.confidence), read(par.confidence))
    assert np.array_equal(read(one.probabilities), read(par.probabilities))  # float32, exactly
    assert (par.tiles_total, par.tiles_skipped) == (one.tiles_total, one.tiles_skipped)
    assert one.tiles_skipped > 0
    assert par.cluster["workers"] == 2 and par.cluster["blocks"] == 6
    assert par.cluster["processes"] == 2  # both workers mapped blocks
    ds = gdal.Open(str(par.output))  # the same file: tiling, colour table, overviews, style
    assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    assert ds.GetRasterBand(1).GetColorTable() is not None
    assert ds.GetRasterBand(1).GetOverviewCount() == 2
    assert (tmp_path / "ray.qml").exists()
    assert ds.GetMetadataItem("LOVECS_PRECISION") == "float32"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.fixture(scope="module")
def scene(shared_data: Path):
    """A 500 x 420 window of the shared spaceborne scene (10-bit, 1.5 m, nodata collar) at
    a corner of its footprint, for a model made for 1 m pixels: resampled on the fly."""
    path = shared_data / "target_b" / "scene.tif"
    ds = open_dataset(path)
    gt = ds.GetGeoTransform()
    x0, y0 = gt[0] + 1331 * gt[1], gt[3] + 0 * gt[5]
    extent = (x0, y0 + 420 * gt[5], x0 + 500 * gt[1], y0)
    assert pixel_size_metres(ds) == pytest.approx(1.5)
    return path, extent


@pytest.mark.parametrize("kill", ["none", "restarted", "lost for good"])
def test_real_scene_equals_one_process_even_when_a_worker_dies(
    cluster, scene, tmp_path: Path, kill: str
):
    path, extent = scene
    model = tiny_model_file(tmp_path / "m.lovecs", seed=1, gsd=1.0)
    one = predict_raster(model, path, tmp_path / "one.tif", extent=extent)
    assert one.resampled
    expected = read(one.output)
    assert (expected == 0).any() and (expected > 0).mean() > 0.3  # collar and footprint

    callback, killed = _kill_one_worker(no_restart=kill == "lost for good")
    reporter = Reporter(callback if kill != "none" else None)
    options = RayOptions(block=256, restarts=0 if kill == "lost for good" else 2)
    r = predict_raster_ray(
        model, path, tmp_path / "ray.tif", extent=extent, reporter=reporter, ray_options=options
    )
    assert np.array_equal(read(r.output), expected)
    assert r.resampled and r.tiles_total == one.tiles_total
    assert r.cluster["blocks"] >= 6
    if kill == "restarted":  # Ray restarted the actor and retried its blocks there
        assert killed and r.cluster["processes"] == 3
    elif kill == "lost for good":  # its blocks went to the other worker
        assert killed and r.cluster["resubmitted"] >= 1 and r.cluster["processes"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cancel_stops_the_workers_and_leaves_no_file(cluster, tmp_path: Path):
    data = np.random.default_rng(1).integers(1, 256, (3, 600, 600)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs")
    token = CancelToken()

    def callback(event) -> None:
        if event.stage == "mapping" and event.fraction > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        predict_raster_ray(
            model,
            raster,
            tmp_path / "o.tif",
            reporter=Reporter(callback, token),
            ray_options=RayOptions(block=256),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lovecs", "r.tif"]
    assert not [n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX)]


class Exploding(torch.nn.Module):
    """A network that fails in every forward pass (the workers import it from this module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("device exploded")


def test_an_error_in_a_worker_is_raised_as_itself_and_leaves_no_file(cluster, tmp_path: Path):
    data = np.random.default_rng(2).integers(1, 256, (3, 300, 300)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    with pytest.raises(RuntimeError, match="^device exploded$"):
        predict_raster_ray((tiny_card(), Exploding()), raster, tmp_path / "o.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tif"]
    assert not [n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX)]


def test_cli_predict_on_ray(cluster, tmp_path: Path, capsys):
    data = np.random.default_rng(3).integers(1, 256, (3, 300, 300)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs")
    args = ["--model", str(model), "--raster", str(raster), "--no-amp"]
    assert main(["predict", *args, "--out", str(tmp_path / "one.tif")]) == 0
    assert main(["predict", *args, "--out", str(tmp_path / "ray.tif"), "--ray"]) == 0
    assert "ray: 2 worker(s) on cpu" in capsys.readouterr().err
    assert np.array_equal(read(tmp_path / "one.tif"), read(tmp_path / "ray.tif"))


def test_without_ray_the_option_is_a_clear_error(tmp_path: Path):
    """In a Python where ``import ray`` fails, the engine imports and maps as before, and
    ``--ray`` fails at once with how to install Ray."""
    data = np.random.default_rng(3).integers(1, 256, (3, 80, 80)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs")
    script = f"""
import sys
sys.modules["ray"] = None  # import ray -> ImportError
from lovecs_core.cli.main import main
import lovecs_core.mapping.ray.map
base = ["--progress", "none", "predict", "--model", {str(model)!r}, "--raster", {str(raster)!r}]
assert main(base + ["--out", {str(tmp_path / "a.tif")!r}]) == 0
sys.exit(main(base + ["--out", {str(tmp_path / "b.tif")!r}, "--ray", "auto"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "needs Ray" in done.stderr and "pip install 'ray==2.60.0'" in done.stderr
    assert (tmp_path / "a.tif").exists() and not (tmp_path / "b.tif").exists()
