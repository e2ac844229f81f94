"""The one no-overwrite rule (``checks.outputs.check_outputs``) through every command: an output
is never an input, a device, a pipe or a folder; its name leaves room for the hidden names
written beside it; the checkpoint counts in the disk estimate and is checked like an output;
leftovers of a killed run are removed by the next run. All refused up front, inputs intact."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from lovecs_core.contract import checkpoint_path

from .conftest import make_model, make_raster, snapshot, temporary_files


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "dev_null":
        return Path(os.devnull)
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("kind", ["dev_null", "fifo"])
def test_a_device_or_pipe_is_never_an_output(cli, tmp_path, kind):
    inputs = tmp_path / "in"
    inputs.mkdir()
    model, raster = make_model(inputs, "good"), make_raster(inputs, "good")
    special = _special(tmp_path, kind)
    before = snapshot(inputs)
    t0 = time.monotonic()
    for args in (
        ["predict", "--model", model, "--raster", raster, "--out", special],
        [
            "predict",
            "--model",
            model,
            "--raster",
            raster,
            "--out",
            tmp_path / "m.tif",
            "--confidence",
            special,
        ],  # fmt: skip
        ["evaluate", "--pred", raster, "--labels", raster, "--json", special],
        [
            "adapt",
            "--model",
            model,
            "--target",
            raster,
            "--out",
            tmp_path / "a.lovecs",
            "--map",
            special,
            "--method",
            "adabn",
        ],  # fmt: skip
    ):
        rc, log = cli(*args)
        assert rc == 1, log
        assert "is not a regular file (a device, pipe or socket)" in log
    assert time.monotonic() - t0 < 20
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # /dev/null is still the device
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(special).st_mode)
    assert snapshot(inputs) == before and not (tmp_path / "m.tif").exists()


def test_evaluate_json_naming_an_input_is_refused(cli, tmp_path):
    raster = make_raster(tmp_path, "good")
    labels = tmp_path / "labels.tif"
    labels.write_bytes(b"not read")
    before = snapshot(tmp_path)
    for target, text in ((raster, "map (--pred)"), (labels, "labels (--labels)")):
        rc, log = cli("evaluate", "--pred", raster, "--labels", labels, "--json", target)
        assert rc == 1 and f"would overwrite the {text}" in log
    assert snapshot(tmp_path) == before


def test_an_output_name_too_long_for_its_temporary_names_is_refused_up_front(cli, tmp_path):
    model, raster = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    before = snapshot(tmp_path)
    out = tmp_path / ("m" * 240 + ".tif")  # a legal name; its ..m*240.model-grid-... is not
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", out)
    assert rc == 1
    assert "more than the 255 bytes a file name may have here; choose a shorter name" in log
    assert snapshot(tmp_path) == before


def test_leftovers_of_a_killed_run_are_removed_by_the_next(cli, tmp_path):
    """What a ``kill -9`` of ``lovecs predict`` leaves (empty hidden rasters of the map and its
    confidence) goes when the command runs again; files of other names stay."""
    model, raster = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    out = tmp_path / "out"
    out.mkdir()
    left = [
        ".map.part-1a2b3c4d.tif",
        "..map.model-grid-5e6f7a8b.part-0a1b2c3d.tif",
        "..map.model-grid-conf-11223344.part-55667788.tif",
        ".conf.part-99aabbcc.tif",
        "map.qml.part",
    ]
    for name in left:
        (out / name).touch()
    (out / ".other.part-1a2b3c4d.tif").touch()  # another output's: not this run's business
    rc, log = cli(
        "predict", "--model", model, "--raster", raster, "--out", out / "map.tif",
        "--confidence", out / "conf.tif",
    )  # fmt: skip
    assert rc == 0, log
    names = {p.name for p in out.iterdir()}
    assert not names & set(left)
    assert {"map.tif", "conf.tif", ".other.part-1a2b3c4d.tif"} <= names


def _adapt(cli, tmp_path: Path, *extra: str) -> tuple[int, str]:
    model, raster = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    return cli(
        "adapt", "--model", model, "--target", raster, "--out", tmp_path / "a.lovecs",
        "--preset", "fast", "--iterations", "2", "--device", "cpu", *extra,
    )  # fmt: skip


def test_a_folder_at_the_checkpoint_path_is_refused_before_training(cli, tmp_path, monkeypatch):
    from lovecs_core.adaptation import adapt as selftrain

    monkeypatch.setattr(selftrain, "adapt", lambda *a, **k: pytest.fail("adaptation started"))
    checkpoint_path(tmp_path / "a.lovecs").mkdir()
    rc, log = _adapt(cli, tmp_path)
    assert rc == 1
    assert "the checkpoint" in log and "is an existing folder" in log
    assert temporary_files(tmp_path) == []


def test_the_checkpoint_counts_in_the_disk_estimate(cli, tmp_path, monkeypatch):
    """Room for the model file and its rejected twin, not for the checkpoint beside them:
    refused up front, naming the checkpoint."""
    import shutil as _shutil

    from lovecs_core.checks import outputs as checks

    model_size = make_model(tmp_path, "good").stat().st_size
    usage = _shutil.disk_usage(tmp_path)
    free = 3 * model_size
    monkeypatch.setattr(checks, "MIN_FREE_BYTES", 0)
    monkeypatch.setattr(
        checks.shutil, "disk_usage", lambda p: type(usage)(usage.total, usage.total - free, free)
    )

    def started(*a, **k):
        raise RuntimeError("adaptation started")

    monkeypatch.setattr("lovecs_core.adaptation.adapt.adapt", started)
    rc, log = _adapt(cli, tmp_path)
    assert rc == 1 and "disk full" in log and "the checkpoint" in log
    assert "adaptation started" not in log
    rc, log = _adapt(cli, tmp_path, "--method", "adabn")  # no self-training, no checkpoint
    assert "adaptation started" in log and "disk full" not in log
