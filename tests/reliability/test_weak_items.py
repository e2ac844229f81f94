"""What a user meets at the edges: a class name holding a control character still gives a style
QGIS can load, a blank (constant) scene is mapped with a warning, ``lovecs train`` applies the
outputs rule to its model file and checkpoint, and no run leaves a ``torchinductor_*`` folder in
the temporary folder."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from lovecs_core.contract import checkpoint_path
from tests.core.helpers import write_geotiff
from tests.core.synthetic import write_classes, write_source

from .conftest import PY, ROOT, crafted_model, make_model, make_raster, snapshot


def test_a_control_character_in_a_class_name_gives_a_loadable_style(cli, tmp_path):
    def bell(card: dict) -> None:
        card["classes"][0]["name"] = "buil\x07ding\x1b[1m"

    model = crafted_model(tmp_path / "bell.lovecs", bell)
    rc, log = cli(
        "predict", "--model", model, "--raster", make_raster(tmp_path, "good"), "--out",
        tmp_path / "map.tif",
    )  # fmt: skip
    assert rc == 0, log
    labels = [e.get("label") for e in ET.parse(tmp_path / "map.qml").iter("paletteEntry")]
    assert labels[0] == "buil\ufffdding\ufffd[1m" and labels[1:] == ["road", "water"]


def test_a_constant_scene_is_mapped_with_a_warning(cli, tmp_path):
    raster = write_geotiff(tmp_path / "blank.tif", np.zeros((3, 40, 40), np.uint8))
    rc, log = cli(
        "predict", "--model", make_model(tmp_path, "good"), "--raster", raster, "--out",
        tmp_path / "map.tif",
    )  # fmt: skip
    assert rc == 0, log
    assert "blank.tif holds one value in each band (0, 0, 0) wherever it has data" in log
    rc, log = cli(  # a scene with content: no such warning
        "predict", "--model", make_model(tmp_path, "good"), "--raster",
        make_raster(tmp_path, "good"), "--out", tmp_path / "map2.tif",
    )  # fmt: skip
    assert rc == 0 and "holds one value" not in log


def test_train_never_writes_over_an_input_nor_into_a_folder(cli, tmp_path):
    images, labels = write_source(tmp_path / "src", n=1, size=48)
    classes = write_classes(tmp_path / "classes.json")
    common = ["train", "--images", images, "--labels", labels, "--classes", classes, "--arch",
              "tiny", "--iterations", "2", "--device", "cpu"]  # fmt: skip
    before = snapshot(tmp_path)
    cases = [
        (labels / "s0.tif", [], "the model would overwrite the label raster"),
        (classes, [], "the model would overwrite the classes"),
        (Path(os.devnull), [], "is not a regular file (a device, pipe or socket)"),
    ]
    out = tmp_path / "model.lovecs"
    checkpoint_path(out).mkdir()
    cases.append((out, ["--checkpoint-every", "1"], "the checkpoint"))
    for target, extra, text in cases:
        rc, log = cli(*common, "--out", target, *extra)
        assert rc == 1 and text in log, log
    assert snapshot(tmp_path) == before and not out.exists()


def test_no_torchinductor_folder_is_left_in_the_temporary_folder(tmp_path):
    """The optimiser's first step imports torch's compiler, which makes
    ``$TMPDIR/torchinductor_USER``; a run keeps it in a folder of its own, removed at exit."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    model, scene = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    env = {**os.environ, "TMPDIR": str(temp)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    proc = subprocess.run(
        [PY, "-m", "lovecs_core", "adapt", "--model", str(model), "--target", str(scene),
         "--out", str(tmp_path / "a.lovecs"), "--method", "cbst", "--preset", "fast",
         "--iterations", "1", "--batch-size", "1", "--crop", "32", "--pl-tile", "32",
         "--source-weight", "0", "--device", "cpu"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in temp.iterdir()) == []
