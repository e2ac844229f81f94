"""Train -> adapt -> evaluate through the command line on small generated rasters: a source sensor
(uint8, 1 m) and a target sensor (uint16 10-bit, mixed bands, 2 m, nodata corner)."""

import json
from pathlib import Path

import numpy as np
from osgeo import gdal

from lovecs_core.cli.main import main
from lovecs_core.model.card import load_model_file, read_card
from tests.core.synthetic import (
    RUN_AWAY_ADAPT,
    SMALL_SAMPLE,
    tiny_train_args,
    write_classes,
    write_source,
    write_target,
)


def test_train_adapt_evaluate_cli(tmp_path: Path, capsys):
    images, labels = write_source(tmp_path / "src", n=2, size=96, gsd=1.0)
    scene, scene_labels = write_target(tmp_path / "tgt", size=96, gsd=2.0, nodata_corner=20)
    classes = write_classes(tmp_path / "classes.json")
    model = tmp_path / "src.lovecs"
    assert main(tiny_train_args(images, labels, classes, model)) == 0
    capsys.readouterr()

    scores = {}
    for method in ("source-only", "adabn", "lovecs"):
        out, map_tif = tmp_path / f"{method}.lovecs", tmp_path / f"{method}.tif"
        conf_tif = tmp_path / f"{method}_conf.tif"
        assert (
            main(
                [
                    "--progress",
                    "json",
                    "adapt",
                    "--model",
                    str(model),
                    "--target",
                    str(scene),
                    "--out",
                    str(out),
                    "--method",
                    method,
                    "--preset",
                    "fast",
                    "--iterations",
                    "20",
                    "--refresh-every",
                    "10",
                    "--crop",
                    "48",
                    "--pl-tile",
                    "64",
                    "--bn-windows",
                    "8",
                    "--map",
                    str(map_tif),
                    "--confidence",
                    str(conf_tif),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        result = lines[-1]
        assert result["type"] == "result" and result["map"] == str(map_tif)
        assert result["adaptation"]["method"] == method
        if method == "lovecs":
            progress = [line for line in lines if line["type"] == "progress"]
            stages = [p["stage"] for p in progress]
            assert "pseudo-labels" in stages and "training" in stages
            last = [p for p in progress if p["stage"] == "training"][-1]
            assert last["extra"]["round"] == 2 and last["extra"]["iteration"] == 20
            assert "loss" in last["extra"] and "round 2/2" in last["message"]
            # source data found through the card's provenance
            assert read_card(out).adaptation["source_data"] is True
        ds = gdal.Open(str(map_tif))
        assert (ds.RasterXSize, ds.RasterYSize) == (96, 96)
        assert gdal.Open(str(conf_tif)) is not None
        report = tmp_path / f"{method}.json"
        assert (
            main(
                [
                    "evaluate",
                    "--pred",
                    str(map_tif),
                    "--labels",
                    str(scene_labels),
                    "--classes",
                    str(classes),
                    "--json",
                    str(report),
                ]
            )
            == 0
        )
        table = capsys.readouterr().out
        assert "mIoU" in table and "building" in table
        scores[method] = json.loads(report.read_text())

    # the source model fed the other sensor's raw 10-bit values fails; the sensor alignment
    # (bit depth) that every method starts from repairs it, and adaptation keeps it repaired
    raw = tmp_path / "raw.tif"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--raster",
                str(scene),
                "--out",
                str(raw),
                "--no-align",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(raw),
                "--labels",
                str(scene_labels),
                "--classes",
                str(classes),
                "--json",
                str(tmp_path / "raw.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "raw.json").read_text())["miou"] < 0.5
    assert scores["source-only"]["miou"] > 0.8
    assert scores["adabn"]["miou"] > 0.8
    assert scores["lovecs"]["miou"] > 0.8
    assert scores["lovecs"]["pixels"] == int((np.ones((96, 96)).sum() - 20 * 20))


def test_run_away_adaptation_is_detected_and_rolled_back(tmp_path: Path, capsys):
    """Self-training that diverges (a learning rate 1000x too high) floods the map with one class: the
    health check calls it likely harmful, the user gets the aligned source model, and the
    adapted model is kept aside (or written anyway with --keep-adapted)."""
    images, labels = write_source(tmp_path / "src", n=2, size=96, gsd=1.0)
    scene, _ = write_target(tmp_path / "tgt", size=96, gsd=1.0)
    classes = write_classes(tmp_path / "classes.json")
    model = tmp_path / "src.lovecs"
    assert main(tiny_train_args(images, labels, classes, model, *SMALL_SAMPLE)) == 0
    source_map = tmp_path / "source.tif"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--raster",
                str(scene),
                "--out",
                str(source_map),
                "--device",
                "cpu",
                "--no-amp",  # adaptation's map is float32; predict's default is bf16 where native
            ]
        )
        == 0
    )
    capsys.readouterr()
    common = ["adapt", "--model", str(model), "--target", str(scene), *RUN_AWAY_ADAPT]
    out, map_tif = tmp_path / "adapted.lovecs", tmp_path / "map.tif"
    assert main(common + ["--out", str(out), "--map", str(map_tif)]) == 0
    text = capsys.readouterr().out
    assert "health check: likely harmful" in text and "the safe result" in text
    rejected = tmp_path / "adapted.rejected.lovecs"
    assert rejected.is_file() and f"kept in {rejected}" in text
    card = read_card(out)
    assert (
        card.default_domain == "source" and card.adaptation["health"]["verdict"] == "likely harmful"
    )
    assert card.adaptation["source_term"] == "model file sample"
    assert read_card(rejected).adaptation["result"] == "adapted model, rejected"
    # rolled back: the source model's weights, and the very map `lovecs predict` makes
    _, source_state = load_model_file(model)
    _, out_state = load_model_file(out)
    for key, value in source_state.items():
        if not key.startswith("sample.") and "target_" not in key:
            assert np.array_equal(value.numpy(), out_state[key].numpy()), key
    assert np.array_equal(
        gdal.Open(str(map_tif)).ReadAsArray(), gdal.Open(str(source_map)).ReadAsArray()
    )
    # --keep-adapted: the user insists
    kept = tmp_path / "kept.lovecs"
    assert main(common + ["--out", str(kept), "--keep-adapted"]) == 0
    assert "likely harmful" in capsys.readouterr().out
    assert read_card(kept).default_domain == "target"
    assert not (tmp_path / "kept.rejected.lovecs").exists()


def test_paper_settings_and_absent_classes_from_the_command_line(tmp_path: Path, caplog):
    """--native-scale and --scene-statistics give the paper's LoveCS; --absent-share says which
    classes the adapted model may not predict (those rare on the source model's map)."""
    images, labels = write_source(tmp_path / "src", n=2, size=96, gsd=1.0)
    scene, _ = write_target(tmp_path / "tgt", size=96, gsd=2.0)
    classes = write_classes(tmp_path / "classes.json")
    model = tmp_path / "src.lovecs"
    assert main(tiny_train_args(images, labels, classes, model, *SMALL_SAMPLE)) == 0
    out, map_tif = tmp_path / "a.lovecs", tmp_path / "a.tif"
    args = ["adapt", "--model", str(model), "--target", str(scene), "--out", str(out)]
    args += ["--map", str(map_tif), "--preset", "fast", "--iterations", "4", "--crop", "48"]
    args += ["--refresh-every", "2", "--pl-tile", "64", "--device", "cpu", "--keep-adapted"]
    args += ["--native-scale", "--scene-statistics", "--absent-share", "0.3"]
    with caplog.at_level("INFO"):
        assert main(args) == 0
    adaptation = read_card(out).adaptation
    settings = adaptation["settings"]
    assert settings["native_scale"] and settings["scene_statistics"]
    assert settings["absent_share"] == 0.3
    assert adaptation["target_gsd"] == 2.0  # the scene's own GSD
    rare = [name for name, share in adaptation["reference_shares"].items() if share < 0.3]
    assert rare and adaptation["classes_off"] == rare
    assert "left out of the adapted model (under 30.0 % of the source model's map)" in caplog.text
    codes = {c.name: c.code for c in read_card(out).classes}
    mapped = set(np.unique(gdal.Open(str(map_tif)).ReadAsArray()).tolist())
    assert not mapped & {codes[name] for name in rare}
