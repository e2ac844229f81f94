"""``checks.outputs.check_outputs``, the one rule every command applies to its outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lovecs_core.checks import outputs
from lovecs_core.checks.outputs import CheckError, check_outputs, remove_leftovers
from lovecs_core.contract import PROBE_PREFIX, checkpoint_path


def test_new_names_and_regular_files_pass(tmp_path: Path):
    old = tmp_path / "old.tif"
    old.write_bytes(b"an older map")
    paths = check_outputs([("map", tmp_path / "new" / "map.tif"), ("old", old), ("none", None)])
    assert paths == [tmp_path / "new" / "map.tif", old]


@pytest.mark.parametrize(
    "case,text",
    [
        ("input", "the map would overwrite the scene"),
        ("twice", "the map and the confidence are the same file"),
        ("folder", "is an existing folder"),
        ("device", "is not a regular file (a device, pipe or socket)"),
        ("long", "choose a shorter name"),
    ],
)
def test_refusals(tmp_path: Path, case: str, text: str):
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"pixels")
    out = {
        "input": scene,
        "twice": tmp_path / "m.tif",
        "folder": tmp_path,
        "device": Path(os.devnull),
        "long": tmp_path / ("x" * 230 + ".tif"),
    }[case]
    second = ("confidence", out if case == "twice" else None)
    with pytest.raises(CheckError, match=text.replace("(", r"\(").replace(")", r"\)")):
        check_outputs([("map", out), second], [("scene", scene)])


def test_the_disk_must_hold_all_outputs_together(tmp_path: Path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs, "MIN_FREE_BYTES", 0)
    monkeypatch.setattr(
        outputs.shutil, "disk_usage", lambda p: type(usage)(usage.total, usage.total - 100, 100)
    )
    check_outputs([("a", tmp_path / "a", 60)])
    check_outputs([("b", tmp_path / "b", 60)])
    with pytest.raises(CheckError, match="disk full: .* is needed for the a and the b;"):
        check_outputs([("a", tmp_path / "a", 60), ("b", tmp_path / "b", 60)])


def test_leftovers_go_but_the_checkpoint_and_fresh_probes_stay(tmp_path: Path):
    out = tmp_path / "model.lovecs"
    stale = [tmp_path / "model.lovecs.part", tmp_path / "model.lovecs.ckpt.part"]
    keep = [checkpoint_path(out), tmp_path / f"{PROBE_PREFIX}fresh", tmp_path / "other.part"]
    old_probe = tmp_path / f"{PROBE_PREFIX}old"
    for p in [*stale, *keep, old_probe]:
        p.touch()
    hour_ago = time.time() - 3600
    os.utime(old_probe, (hour_ago, hour_ago))
    assert sorted(remove_leftovers(out)) == sorted([*stale, old_probe])
    assert all(p.exists() for p in keep)
