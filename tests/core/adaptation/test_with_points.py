"""``lovecs adapt --points``: the scene adapted, both models refitted to the user's corrections,
and the corrections' held-out accuracy decides which model is delivered."""

import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.adaptation.with_points import LEAN
from lovecs_core.checks.outputs import remove_leftovers
from lovecs_core.cli.main import main
from lovecs_core.contract import IMPROVED, VERDICTS, points_folder, rejected_path
from lovecs_core.model.card import read_card
from lovecs_core.rasters.corrections import pixel_centres, write_points
from tests.core.synthetic import tiny_train_args, write_classes, write_source, write_target

SMALL_ADAPT = ["--preset", "fast", "--iterations", "20", "--refresh-every", "10", "--crop", "48",
               "--pl-tile", "64", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("with_points")
    images, labels = write_source(folder / "src", n=2, size=96, gsd=1.0)
    scene, scene_labels = write_target(folder / "tgt", size=96, gsd=2.0)
    model = folder / "src.lovecs"
    assert main(tiny_train_args(images, labels, write_classes(folder / "c.json"), model)) == 0
    return model, scene, scene_labels


def _clicks(scene: Path, labels: Path, out: Path, n: int, seed: int = 0):
    truth = gdal.Open(str(labels)).ReadAsArray()
    grid = gdal.Open(str(scene))
    rows, cols = np.divmod(np.random.default_rng(seed).choice(truth.size, n, replace=False), 96)
    path = write_points(out, pixel_centres(grid, rows, cols), truth[rows, cols].tolist(),
                        grid.GetProjection())  # fmt: skip
    return path, rows, cols, truth[rows, cols]


def _adapt(model, scene, out, *extra) -> dict:
    args = ["--progress", "json", "adapt", "--model", str(model), "--target", str(scene),
            "--out", str(out), *SMALL_ADAPT, *extra]  # fmt: skip
    assert main(args) == 0
    return args


def test_the_corrections_judge_and_the_delivered_map_follows_them(trained, tmp_path, capsys):
    model, scene, labels = trained
    points, rows, cols, codes = _clicks(scene, labels, tmp_path / "clicks.gpkg", 40)
    out, map_tif = tmp_path / "adapted.lovecs", tmp_path / "adapted.tif"
    _adapt(model, scene, out, "--points", str(points), "--map", str(map_tif))
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    card = read_card(out)
    record = card.adaptation["corrections"]
    assert record["verdict"] in VERDICTS and result["health"]["verdict"] == record["verdict"]
    assert LEAN in result["health"]["reasons"] and record["caution"] == LEAN  # the verdict's lean
    assert record["source"]["refined"]["n"] == record["adapted"]["refined"]["n"] == 40
    better = record["adapted"]["refined"]["correct"] > record["source"]["refined"]["correct"]
    assert (record["verdict"] == IMPROVED) == better
    assert record["delivered"] == ("adapted model" if better else "source model")
    assert rejected_path(out).is_file() == (not better)  # the adapted model is never lost
    assert card.provenance["refinement"]["corrections"]["features"] == 40
    # the delivered map has learnt the corrections: it gets more of them right than the plain
    # source model's map
    plain = tmp_path / "plain.tif"
    assert main(["predict", "--model", str(model), "--raster", str(scene), "--out", str(plain),
                 "--device", "cpu"]) == 0  # fmt: skip
    on_clicks = {
        name: float((gdal.Open(str(path)).ReadAsArray()[rows, cols] == codes).mean())
        for name, path in (("delivered", map_tif), ("source", plain))
    }
    assert on_clicks["delivered"] >= on_clicks["source"], on_clicks
    assert on_clicks["delivered"] >= 0.8, on_clicks


def test_too_few_corrections_leave_the_label_free_verdict_and_say_so(trained, tmp_path, capsys):
    model, scene, labels = trained
    points, *_ = _clicks(scene, labels, tmp_path / "few.gpkg", 5)
    out = tmp_path / "few.lovecs"
    _adapt(model, scene, out, "--points", str(points))
    record = read_card(out).adaptation["corrections"]
    assert record["verdict"] is None and "at least 10 are needed" in record["reason"]


def test_resume_is_refused_with_points(trained, tmp_path):
    model, scene, labels = trained
    points, *_ = _clicks(scene, labels, tmp_path / "p.gpkg", 12)
    args = ["adapt", "--model", str(model), "--target", str(scene), "--out",
            str(tmp_path / "r.lovecs"), "--points", str(points), "--resume"]  # fmt: skip
    assert main(args) != 0


def test_the_adapted_model_kept_aside_says_it_was_not_delivered(trained, tmp_path):
    model, scene, labels = trained
    points, *_ = _clicks(scene, labels, tmp_path / "c.gpkg", 20, seed=1)
    out = tmp_path / "a.lovecs"
    _adapt(model, scene, out, "--points", str(points))
    card = read_card(out)
    if rejected_path(out).is_file():  # the source model delivered: the adapted one says why
        aside = read_card(rejected_path(out)).adaptation
        assert aside["result"].endswith("not delivered")
        assert aside["corrections"] == card.adaptation["corrections"]
    assert card.adaptation["result"].startswith(card.adaptation["corrections"]["delivered"])


def test_a_killed_runs_points_folder_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "m.lovecs"
    folder = points_folder(out)
    folder.mkdir()
    (folder / "adapted.lovecs").write_bytes(b"left by kill -9")
    assert folder in remove_leftovers(out) and not folder.exists()
