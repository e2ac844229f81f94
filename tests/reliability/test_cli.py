"""Bad inputs through the command line, one data-driven case each: ``lovecs predict`` and
``lovecs adapt`` either succeed with a complete output (and the warning the case calls for) or
fail with exit code 1 and a message naming the problem and what to do; in every case the
input's bytes and folder are unchanged, and no partial or temporary file is left."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from .conftest import make_model, make_raster, run_engine, snapshot, temporary_files


def read_band(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))  # keep the dataset alive while its band is read
    return ds.GetRasterBand(1).ReadAsArray()


# (raster kind, extra arguments, exit code, text the output must hold)
PREDICT_RASTERS = [
    ("corrupt", [], 1, "cannot open raster"),
    ("truncated", [], 1, "truncated.tif"),
    ("no_geotransform", [], 1, "no geotransform, so its pixel size is unknown"),
    ("no_geotransform", ["--no-resample"], 0, ""),
    ("no_crs", [], 1, "no coordinate reference system"),
    ("geographic", [], 0, ""),
    ("us_feet", [], 0, ""),
    ("two_bands", [], 1, "expects 3 band(s)"),
    ("four_bands_untagged", [], 0, "using the first 3, bands 1,2,3"),
    ("uint16_12bit", [], 0, "holds uint16 values but the model was made for uint8"),
    ("float_0_1", [], 0, "holds float32 values but the model was made for uint8"),
    ("float64", [], 0, "holds float64 values"),
    ("complex", [], 1, "holds complex values"),
    ("nan_inf", [], 0, ""),
    ("one_pixel", [], 0, ""),
    ("three_pixels", [], 0, ""),
    ("huge_vrt", [], 1, "map a part of it"),
]


@pytest.mark.parametrize(
    "kind,extra,code,text",
    PREDICT_RASTERS,
    ids=[f"{k}{'+' + ' '.join(e) if e else ''}" for k, e, *_ in PREDICT_RASTERS],
)
def test_predict_raster_cases(cli, tmp_path, kind, extra, code, text):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    model = make_model(inputs, "good")
    raster = make_raster(inputs, kind)
    before = snapshot(inputs)
    out = outputs / "map.tif"
    t0 = time.monotonic()
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", out, *extra)
    assert rc == code, log
    assert text in log
    assert snapshot(inputs) == before  # the input's bytes, no .aux.xml beside it
    assert temporary_files(outputs) == []
    if code:
        assert list(outputs.iterdir()) == []  # no output at all
        assert time.monotonic() - t0 < 10  # refused up front
    else:
        ds = gdal.Open(str(out))
        src = gdal.Open(str(raster))
        assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
        assert sorted(p.name for p in outputs.iterdir()) == [
            "map.qml",
            "map.tif",
            "map.tif.aux.xml",
        ] or sorted(p.name for p in outputs.iterdir()) == ["map.qml", "map.tif"]


def test_nan_and_inf_pixels_become_nodata(cli, tmp_path):
    raster = make_raster(tmp_path, "nan_inf")
    out = tmp_path / "map.tif"
    rc, log = cli(
        "predict", "--model", make_model(tmp_path, "good"), "--raster", raster, "--out", out
    )
    assert rc == 0, log
    codes = read_band(out)
    assert (codes[:8, :8] == 0).all() and (codes[30:, 30:] == 0).all()
    assert (codes[10:28, 10:28] > 0).all()


def test_all_nodata_is_refused_or_an_all_nodata_map(cli, tmp_path):
    """Nothing to map: refused by the sensor alignment ("no valid pixels"), or without it an
    all-nodata map; never a crash, never a partial file."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    raster = make_raster(inputs, "all_nodata")
    model = make_model(inputs, "good")
    before = snapshot(inputs)
    out = outputs / "map.tif"
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", out)
    if rc:
        assert rc == 1 and "no valid pixels" in log and list(outputs.iterdir()) == []
    else:
        assert (read_band(out) == 0).all()
    assert snapshot(inputs) == before and temporary_files(outputs) == []


# (model kind, text of the error)
PREDICT_MODELS = [
    ("corrupt", "is not a LoveCS model file"),
    ("truncated", "truncated"),
    ("future_version", "unsupported 'format_version' 99"),
    ("pickle", "is not a LoveCS model file"),
    ("text_stats", "normalization.source.mean must hold numbers, found 'a lot'"),
    ("wide_network", "architecture.width must be a whole number 1..1024, found 40000"),
    ("tile_zero", "'tile.size' must be a whole number of pixels"),
    ("wrong_shapes", "weights do not match the card's architecture"),
]


@pytest.mark.parametrize("kind,text", PREDICT_MODELS, ids=[k for k, _ in PREDICT_MODELS])
def test_predict_model_cases(cli, tmp_path, kind, text):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    model = make_model(inputs, kind)
    raster = make_raster(inputs, "good")
    before = snapshot(inputs)
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", outputs / "m.tif")
    assert rc == 1
    assert text in log and "Traceback" not in log
    assert snapshot(inputs) == before
    assert list(outputs.iterdir()) == []
    assert not (inputs / "PWNED").exists()  # the pickle never ran
    if kind in ("wide_network", "tile_zero", "text_stats", "future_version"):
        rc, log = cli("info", model)  # refused by `lovecs info` too, before any build
        assert rc == 1 and text in log


@pytest.mark.parametrize("case", ["is_input", "is_folder", "under_a_file", "existing"])
def test_predict_output_path_cases(cli, tmp_path, case):
    model = make_model(tmp_path, "good")
    raster = make_raster(tmp_path, "good")
    out = {
        "is_input": raster,
        "is_folder": tmp_path / "folder.tif",
        "under_a_file": raster / "map.tif",
        "existing": tmp_path / "old.tif",
    }[case]
    if case == "is_folder":
        out.mkdir()
    if case == "existing":
        out.write_bytes(b"an older map")
    before = snapshot(tmp_path)
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", out)
    if case == "existing":  # replaced, complete
        assert rc == 0, log
        assert gdal.Open(str(out)).RasterXSize == 40
        return
    assert rc == 1
    assert {
        "is_input": "would overwrite the input raster",
        "is_folder": "is an existing folder",
        "under_a_file": "is a file, not a folder",
    }[case] in log
    assert snapshot(tmp_path) == before
    assert temporary_files(tmp_path) == []


def test_a_failed_run_leaves_an_existing_output_as_it_was(cli, tmp_path):
    out = tmp_path / "old.tif"
    out.write_bytes(b"an older map")
    rc, log = cli(
        "predict",
        "--model",
        make_model(tmp_path, "good"),
        "--raster",
        make_raster(tmp_path, "two_bands"),
        "--out",
        out,
    )
    assert rc == 1 and out.read_bytes() == b"an older map"


def test_full_disk_is_refused_up_front(cli, tmp_path, monkeypatch):
    import shutil as _shutil

    from lovecs_core.checks import outputs as checks

    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        checks.shutil, "disk_usage", lambda p: type(usage)(usage.total, usage.total - 4096, 4096)
    )
    model, raster = make_model(tmp_path, "good"), make_raster(tmp_path, "good")
    rc, log = cli("predict", "--model", model, "--raster", raster, "--out", tmp_path / "m.tif")
    assert rc == 1 and "disk full" in log and "free some space" in log
    rc, log = cli(
        "adapt",
        "--model",
        model,
        "--target",
        raster,
        "--out",
        tmp_path / "a.lovecs",
        "--method",
        "adabn",
        "--preset",
        "fast",
    )
    assert rc == 1 and "disk full" in log
    assert temporary_files(tmp_path) == [] and not (tmp_path / "m.tif").exists()


# -- adapt: everything refused before the first iteration -----------------------------------------

ADAPT_CASES = [
    ("out_is_model", "the adapted model would overwrite the source model"),
    ("map_is_target", "the map would overwrite the target scene"),
    ("map_is_out", "the adapted model and the map are the same file"),
    ("crop_zero", "crop must be a whole number of at least 16, got 0"),
    ("iterations_negative", "iterations must be a whole number of at least 1, got -3"),
    ("tile_zero", "'tile.size' must be a whole number of pixels"),
    ("out_folder_is_a_file", "is a file, not a folder"),
    ("out_is_a_folder", "is an existing folder"),
    ("portion", "portion must be a number above 0 and at most 1, got 2.0"),
]


@pytest.mark.parametrize("case,text", ADAPT_CASES, ids=[c for c, _ in ADAPT_CASES])
def test_adapt_refuses_before_anything_runs(tmp_path, case, text, monkeypatch, capsys, caplog):
    from lovecs_core.adaptation import adapt as selftrain
    from lovecs_core.cli.main import main

    def never(*a, **k):
        raise AssertionError("adaptation started")

    monkeypatch.setattr(selftrain, "adapt", never)
    model = make_model(tmp_path, "tile_zero" if case == "tile_zero" else "good")
    scene = make_raster(tmp_path, "good")
    out = tmp_path / "adapted.lovecs"
    extra: list = []
    if case == "out_is_model":
        out = model
    elif case == "map_is_target":
        extra = ["--map", scene]
    elif case == "map_is_out":
        extra = ["--map", out]
    elif case == "crop_zero":
        extra = ["--crop", "0"]
    elif case == "iterations_negative":
        extra = ["--iterations", "-3"]
    elif case == "out_folder_is_a_file":
        out = scene / "adapted.lovecs"
    elif case == "out_is_a_folder":
        out = tmp_path / "folder.lovecs"
        out.mkdir()
    elif case == "portion":
        extra = ["--portion", "2"]
    before = snapshot(tmp_path)
    rc = main(
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
            *map(str, extra),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert text in captured.out + caplog.text
    assert '"type": "progress"' not in captured.out  # not a single step ran
    assert snapshot(tmp_path) == before
    assert temporary_files(tmp_path) == []


def test_adapt_out_equal_to_model_through_the_real_cli(tmp_path):
    """The data-loss case, as a user runs it: exit code 1, the message once, the model intact."""
    model = make_model(tmp_path, "good")
    scene = make_raster(tmp_path, "good")
    before = model.read_bytes()
    proc = run_engine(
        "adapt",
        "--model",
        model,
        "--target",
        scene,
        "--out",
        model,
        "--method",
        "adabn",
        "--preset",
        "fast",
    )
    assert proc.returncode == 1
    assert proc.stderr.count("would overwrite the source model") == 1
    assert model.read_bytes() == before


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "Données d'été 2024" / "scène n°1"
    folder.mkdir(parents=True)
    model = make_model(folder, "good")
    raster = make_raster(folder, "good", "île de la Cité.tif")
    out = folder / "carte d'occupation.tif"
    proc = run_engine(
        "predict", "--model", model, "--raster", raster, "--out", out, "--device", "cpu"
    )
    assert proc.returncode == 0, proc.stderr
    assert gdal.Open(str(out)).RasterXSize == 40
    assert temporary_files(folder) == []


def test_target_smaller_than_a_training_crop_is_adapted(cli, tmp_path):
    """A 40 px scene with the preset's 256 px crops: the windows are padded, the run ends."""
    from tests.core.synthetic import write_source

    images, labels = write_source(tmp_path / "src", n=1, size=48)
    model = make_model(tmp_path, "good")
    scene = make_raster(tmp_path, "good")
    out, landcover = tmp_path / "adapted.lovecs", tmp_path / "map.tif"
    rc, log = cli(
        "adapt",
        "--model",
        model,
        "--target",
        scene,
        "--out",
        out,
        "--map",
        landcover,
        "--preset",
        "fast",
        "--iterations",
        "2",
        "--refresh-every",
        "2",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--source-images",
        images / "s0.tif",
        "--source-labels",
        labels / "s0.tif",
    )
    assert rc == 0, log
    assert out.is_file() and gdal.Open(str(landcover)).RasterXSize == 40
    assert temporary_files(tmp_path) == []


def test_wide_network_card_is_refused_without_allocating(tmp_path):
    """The card claims 40,000 channels; even below the card limits, a network larger than the
    engine accepts is refused on the meta device, before a byte of weights is allocated."""
    from lovecs_core.model.card import ModelFileError, read_card
    from lovecs_core.model.networks import check_weights

    card = read_card(make_model(tmp_path, "good"))
    card.architecture = {
        "arch": "fpn",
        "encoder": "resnet50",
        "csn": True,
        "pyramid_channels": 2048,
        "segmentation_channels": 2048,
    }
    t0 = time.monotonic()
    with pytest.raises(ModelFileError, match="million parameters"):
        check_weights(card, {}, "big.lovecs")
    assert time.monotonic() - t0 < 30
