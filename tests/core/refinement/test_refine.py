"""Refine: the head learns the user's corrections, remembers the rest, and says how accurate it is;
``lovecs refine`` and the session process (``lovecs session``) do it from the outside."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.cli.main import main
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.card import read_card, read_source_sample
from lovecs_core.model.card_fields import HEAD_CONTEXT, HEAD_FEATURES
from lovecs_core.model.wide_head import CONTEXT, RANDOM_FEATURES
from lovecs_core.rasters.corrections import pixel_centres, write_points
from tests.core.helpers import tiny_model_file, write_geotiff
from tests.core.synthetic import label_map, source_image

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    labels = label_map(64, seed=3)
    return write_geotiff(tmp_path / "scene.tif", source_image(labels, seed=4)), labels


def clicks(
    tmp_path: Path, raster: Path, labels: np.ndarray, per_class: int = 12, seed: int = 0
) -> tuple[Path, np.ndarray]:
    """Points at random pixels of each class, and a mask of the clicked pixels."""
    rng = np.random.default_rng(seed)
    ds = gdal.Open(str(raster))
    rows, cols = [], []
    for code in (1, 2, 3):
        r, c = np.nonzero(labels == code)
        pick = rng.choice(r.size, per_class, replace=False)
        rows += r[pick].tolist()
        cols += c[pick].tolist()
    rows_a, cols_a = np.array(rows), np.array(cols)
    path = write_points(
        tmp_path / "clicks.gpkg",
        pixel_centres(ds, rows_a, cols_a),
        labels[rows_a, cols_a].tolist(),
        ds.GetProjection(),
    )
    clicked = np.zeros(labels.shape, bool)
    clicked[rows_a, cols_a] = True
    return path, clicked


def test_lovecs_refine_learns_the_corrections_and_records_them(tmp_path, scene, capsys):
    raster, labels = scene
    model = tiny_model_file(tmp_path / "tiny.lovecs", seed=1)
    points, clicked = clicks(tmp_path, raster, labels)
    before, after, out = (
        tmp_path / "before.tif",
        tmp_path / "after.tif",
        tmp_path / "refined.lovecs",
    )
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--raster",
                str(raster),
                "--out",
                str(before),
                "--device",
                "cpu",
                "--no-amp",
            ]
        )
        == 0
    )
    args = [
        "refine",
        "--model",
        str(model),
        "--raster",
        str(raster),
        "--points",
        str(points),
        "--out",
        str(out),
        "--map",
        str(after),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "accuracy on corrections not trained on" in text and "cross-validation over 36" in text
    unclicked = ~clicked
    accuracy = {
        name: (gdal.Open(str(path)).ReadAsArray() == labels)[unclicked].mean()
        for name, path in (("before", before), ("after", after))
    }
    # a model that knows nothing of these classes learns them from the clicks (not only the
    # clicked pixels), held back by the pull toward its own head (L2) and its anchors
    assert accuracy["after"] > accuracy["before"] + 0.15, accuracy
    card = read_card(out)
    record = card.provenance["refinement"]
    assert record["corrections"]["per_class"] == {"1": 12, "2": 12, "3": 12}
    assert (
        record["accuracy"]["refined"]["n"] == 36 and len(record["accuracy"]["refined"]["ci"]) == 2
    )
    refined = record["accuracy"]["refined"]
    assert (
        refined["ci"][0] <= refined["oa"] <= refined["ci"][1] and record["accuracy"]["folds"] == 5
    )
    assert main(["info", str(out)]) == 0
    assert "head with 256 random features and a 33-cell context" in capsys.readouterr().out


def test_refine_refuses_to_overwrite_its_inputs(tmp_path, scene, capsys):
    raster, labels = scene
    model = tiny_model_file(tmp_path / "tiny.lovecs")
    points, _ = clicks(tmp_path, raster, labels, per_class=2)
    digest = model.read_bytes()
    rc = main(
        [
            "refine",
            "--model",
            str(model),
            "--raster",
            str(raster),
            "--points",
            str(points),
            "--out",
            str(model),
        ]
    )
    assert rc != 0 and "would overwrite the model" in capsys.readouterr().err
    assert model.read_bytes() == digest


class Session:
    """``lovecs session`` in a child process, spoken to in JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lovecs_core", "--progress", "json", "session"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.next_id = 0

    def ask(self, request: str, **keys: object) -> dict:
        self.next_id += 1
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"id": self.next_id, "request": request, **keys}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["type"] == "reply":
                assert event["id"] == self.next_id and event["request"] == request
                return event
        raise AssertionError(f"the session ended without replying to {request}")


def test_the_session_refines_undoes_resets_saves_and_survives_a_bad_request(tmp_path, scene):
    raster, labels = scene
    # one tile holds the whole raster, for the session and for lovecs predict: their maps are
    # then equal pixel for pixel. Over several tiles they differ where the network's output
    # depends on the tiling (the session keeps tile cores, predict blends overlapping tiles;
    # bench/saved_map.py measures how much)
    model = tiny_model_file(tmp_path / "tiny.lovecs", seed=1, tile=96)
    points, clicked = clicks(tmp_path, raster, labels)
    view = tmp_path / "view.tif"
    session = Session()
    try:
        assert session.ask("refine", points=str(points), map=str(view))["error"].startswith(
            "no model open"
        )
        assert session.ask("open", model=str(model), device="cpu")["ok"]
        reply = session.ask("view", raster=str(raster), map=str(view))
        assert reply["ok"] and reply["pixels"] == 64 * 64
        source_map = gdal.Open(str(view)).ReadAsArray()
        assert not session.ask("dance")["ok"]  # the session goes on
        reply = session.ask("refine", points=str(points), map=str(view))
        assert reply["ok"] and reply["refines"] == 1, reply
        refined = gdal.Open(str(view)).ReadAsArray()
        assert (refined == labels)[~clicked].mean() > (source_map == labels)[~clicked].mean() + 0.15
        assert reply["accuracy"]["folds"] == 5 and reply["corrections"]["features"] == 36
        assert session.ask("undo", map=str(view))["refines"] == 0
        assert np.array_equal(gdal.Open(str(view)).ReadAsArray(), source_map)
        session.ask("refine", points=str(points), map=str(view))
        saved = session.ask("save", out=str(tmp_path / "refined.lovecs"))
        card = read_card(saved["output"])
        assert saved["ok"] and card.provenance["refinement"]["corrections"]["features"] == 36
        assert card.architecture[HEAD_FEATURES] == RANDOM_FEATURES  # the refit's random features
        assert card.architecture[HEAD_CONTEXT] == CONTEXT  # and its context window
        mapped = predict_raster(saved["output"], str(raster), tmp_path / "saved.tif", device="cpu")
        # the saved model maps the raster as the session mapped the view
        assert np.array_equal(gdal.Open(str(mapped.output)).ReadAsArray(), refined)
        assert read_source_sample(saved["output"]) is None  # none in the tiny model, none made up
        assert not session.ask("save", out=str(model))["ok"]  # never over the model it started from
        assert session.ask("reset", map=str(view))["refines"] == 0
        assert np.array_equal(gdal.Open(str(view)).ReadAsArray(), source_map)
        assert session.ask("quit")["ok"]
        assert session.proc.wait(timeout=30) == 0
    finally:
        session.proc.kill()
