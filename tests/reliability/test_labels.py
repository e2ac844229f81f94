"""Label rasters holding class codes the classes do not know (code 9 when the classes are
1..3): the pixels are left out of the scores or the training, and the user is told which codes
and how many pixels, never silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.core.helpers import write_geotiff
from tests.core.synthetic import label_map, write_classes

from .conftest import make_model, snapshot


def labels_with_unknown_codes(path: Path, size: int = 48) -> tuple[Path, np.ndarray]:
    """Labels 1..3 with a 10 x 12 block of code 9 and a 5 x 4 block of code 7."""
    labels = label_map(size, seed=3)
    labels[:10, :12] = 9
    labels[20:25, 30:34] = 7
    return write_geotiff(path, labels), labels


def test_evaluate_names_label_codes_that_are_not_classes(cli, tmp_path):
    labels_path, labels = labels_with_unknown_codes(tmp_path / "labels.tif")
    pred = write_geotiff(tmp_path / "map.tif", np.where(labels > 3, 1, labels).astype(np.uint8))
    classes = write_classes(tmp_path / "classes.json")
    scores = tmp_path / "scores.json"
    before = snapshot(tmp_path)
    rc, log = cli(
        "evaluate", "--pred", pred, "--labels", labels_path, "--classes", classes, "--json", scores
    )
    assert rc == 0, log
    assert (
        "hold class code(s) 7 (20 px), 9 (120 px) that are not among the classes (1, 2, 3): "
        "these 140 labelled pixels are ignored" in log
    )
    result = json.loads(scores.read_text())
    assert result["unknown_label_codes"] == {"7": 20, "9": 120}
    assert result["pixels"] == labels.size - 140 and result["miou"] == 1.0
    assert "left out: labelled pixels with codes that are no class: 7 (20 px), 9 (120 px)" in log
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "scores.json"} == before


def test_evaluate_without_unknown_codes_says_nothing_of_them(cli, tmp_path):
    labels = label_map(48, seed=3)
    labels_path = write_geotiff(tmp_path / "labels.tif", labels)
    pred = write_geotiff(tmp_path / "map.tif", labels)
    classes = write_classes(tmp_path / "classes.json")
    rc, log = cli("evaluate", "--pred", pred, "--labels", labels_path, "--classes", classes)
    assert rc == 0 and "not among the classes" not in log and "left out" not in log


def test_adapt_warns_of_source_labels_with_unknown_codes(cli, tmp_path):
    from tests.core.synthetic import source_image, write_target

    labels_path, labels = labels_with_unknown_codes(tmp_path / "labels.tif")
    image = write_geotiff(tmp_path / "image.tif", source_image(np.clip(labels, 1, 3), seed=1))
    scene, _ = write_target(tmp_path / "tgt", size=48, gsd=1.0)
    rc, log = cli(
        "adapt",
        "--model",
        make_model(tmp_path, "good"),
        "--target",
        scene,
        "--out",
        tmp_path / "adapted.lovecs",
        "--preset",
        "fast",
        "--iterations",
        "2",
        "--refresh-every",
        "2",
        "--crop",
        "32",
        "--pl-tile",
        "32",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--source-images",
        image,
        "--source-labels",
        labels_path,
    )
    assert rc == 0, log
    assert (
        "the source labels hold class code(s) 7 (20 px), 9 (120 px) that are not among the "
        "classes (1, 2, 3)" in log
    )


def test_train_warns_of_labels_with_unknown_codes(cli, tmp_path):
    from tests.core.synthetic import source_image, tiny_train_args

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    labels_path, labels = labels_with_unknown_codes(tmp_path / "labels" / "a.tif")
    write_geotiff(tmp_path / "images" / "a.tif", source_image(np.clip(labels, 1, 3), seed=1))
    classes = write_classes(tmp_path / "classes.json")
    args = tiny_train_args(
        tmp_path / "images",
        tmp_path / "labels",
        classes,
        tmp_path / "m.lovecs",
        "--iterations",
        "2",
    )
    rc, log = cli(*args)
    assert rc == 0, log
    assert (
        "the training labels hold class code(s) 7 (20 px), 9 (120 px) that are not among the "
        "classes (1, 2, 3)" in log
    )
