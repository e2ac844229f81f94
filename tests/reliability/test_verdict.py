"""The health check judges the maps the user gets, and abstains where the valid area is too small:
its class shares are those of the delivered maps (the adapted model's map, and ``lovecs
predict``'s map with the safe result), and a run-away that looks "improved" on a patch of a
mostly-nodata scene is at best "uncertain"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from osgeo import gdal

from lovecs_core.adaptation.health import health_check
from lovecs_core.cli.main import main
from lovecs_core.contract import IMPROVED, UNCERTAIN, rejected_path
from lovecs_core.model.card import read_card
from tests.core.synthetic import tiny_train_args, write_classes, write_source, write_target

from .test_adapt_faults import json_run


def _shares(path, names) -> dict[str, float]:
    ds = gdal.Open(str(path))
    codes = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    counts = np.bincount(codes.ravel(), minlength=len(names) + 1)[1 : len(names) + 1]
    return {n: round(float(c) / max(counts.sum(), 1), 4) for n, c in zip(names, counts)}


def _adapt(model: Path, scene: Path, out: Path, landcover: Path, *extra: str) -> list[str]:
    return [
        "adapt", "--model", str(model), "--target", str(scene), "--out", str(out), "--map",
        str(landcover), "--preset", "fast", "--iterations", "4", "--refresh-every", "2",
        "--crop", "32", "--pl-tile", "32", "--batch-size", "2", "--keep-adapted", "--device",
        "cpu", "--no-amp", *extra,
    ]  # fmt: skip


def test_the_verdict_is_on_the_delivered_maps(tmp_path, capsys):
    """A trained model and a 2 m scene with a nodata corner: the adaptation's own maps (at the
    model's scale) and the delivered ones (warped back to the scene's grid) differ."""
    images, labels = write_source(tmp_path / "src", n=2, size=96)
    model = tmp_path / "model.lovecs"
    assert main(tiny_train_args(images, labels, write_classes(tmp_path / "c.json"), model)) == 0
    scene, _ = write_target(tmp_path / "tgt", size=96, gsd=2.0, nodata_corner=40)
    out, landcover = tmp_path / "adapted.lovecs", tmp_path / "map.tif"
    rc, lines = json_run(capsys, _adapt(model, scene, out, landcover))
    assert rc == 0, lines[-1]
    health = lines[-1]["health"]
    names = list(health["shares_after"])
    assert health["shares_after"] == _shares(landcover, names)  # --keep-adapted: this map
    # the safe result's map, as `lovecs predict` makes it with the aligned source model
    safe = tmp_path / "safe.tif"
    rc, lines = json_run(
        capsys, _adapt(model, scene, tmp_path / "safe.lovecs", safe, "--method", "source-only")
    )
    assert rc == 0, lines[-1]
    assert health["shares_before"] == _shares(safe, names)
    assert read_card(out).adaptation["health"] == health and not rejected_path(out).exists()


def test_too_small_a_valid_area_is_never_improved():
    """96.5 % of the scene is nodata; on its valid patch the adapted map looks better by every
    figure (more confident, the same classes): the verdict abstains."""
    size, patch = 1000, 186  # 186² / 1000² = 3.5 % valid
    rng = np.random.default_rng(0)
    source = np.full((size, size), 255, np.uint8)
    source[:patch, :patch] = rng.integers(0, 3, (patch, patch))
    adapted = source.copy()
    before = np.where(source < 255, 50, 0).astype(np.uint8)
    after = np.where(source < 255, 90, 0).astype(np.uint8)
    names = ["building", "road", "water"]
    judged = health_check(source, before, adapted, after, names, 255, 100.0)
    assert judged.verdict == IMPROVED  # the figures alone say "improved"
    report = health_check(
        source, before, adapted, after, names, 255, 100.0, scene_pixels=source.size
    )
    assert report.verdict == UNCERTAIN
    assert (
        "the valid area is too small to judge: 34,596 pixels, 3.5 % of the scene"
        in (report.reasons[-1])
    )
    assert json.dumps(report.to_dict())  # the card records it
