"""Sensor randomisation: deterministic under a seed, labels aligned, nodata kept, values in range;
the DataLoader path gives the sampler's batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lovecs_core.rasters.labelled import RasterSource, pair_rasters
from lovecs_core.training.augment import PARTS, SensorRandomisation, randomise
from lovecs_core.training.sampling import WindowBatches, WindowSampler
from tests.core.synthetic import write_source


@pytest.fixture
def sources(tmp_path: Path) -> list[RasterSource]:
    images, labels = write_source(tmp_path / "src", n=2, size=80)
    sources = [RasterSource(i, label_path=lab) for i, lab in pair_rasters([images], [labels])]
    valid = np.ones((80, 80), dtype=bool)
    valid[:40, :50] = False  # a large nodata corner
    sources[0]._valid = valid
    return sources


def sampler(sources, parts=PARTS, probability=1.0, seed=3, crop=48):
    rand = (
        None
        if parts is None
        else SensorRandomisation(parts=list(parts), probability=probability, clean_share=0.0)
    )
    return WindowSampler(
        sources,
        [1, 2, 3],
        crop,
        [120.0] * 3,
        [60.0] * 3,
        scale_range=(0.8, 1.25),
        seed=seed,
        randomisation=rand,
    )


@pytest.mark.parametrize("part", PARTS)
def test_each_part_is_seeded_in_range_and_changes_values(part):
    data = np.random.default_rng(0).uniform(0, 255, (3, 32, 32)).astype(np.float32)
    cfg = SensorRandomisation.only(part, probability=1.0)
    a = randomise(data, np.random.default_rng(7), cfg, 255.0)
    b = randomise(data, np.random.default_rng(7), cfg, 255.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == data.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 255.0
    assert np.abs(a - data).mean() > 0.05
    c = randomise(data, np.random.default_rng(8), cfg, 255.0)
    assert not np.array_equal(a, c)


def test_clean_share_leaves_that_share_of_windows_unchanged():
    data = np.random.default_rng(0).uniform(0, 255, (3, 16, 16)).astype(np.float32)
    rng = np.random.default_rng(5)
    cfg = SensorRandomisation(probability=1.0, clean_share=0.5)
    unchanged = [np.array_equal(randomise(data, rng, cfg, 255.0), data) for _ in range(400)]
    assert 0.42 < np.mean(unchanged) < 0.58
    always = SensorRandomisation(probability=1.0, clean_share=1.0)
    assert np.array_equal(randomise(data, rng, always, 255.0), data)
    with pytest.raises(ValueError, match="clean_share"):
        SensorRandomisation(clean_share=1.5)


def test_unknown_part_is_refused():
    with pytest.raises(ValueError, match="unknown sensor randomisation"):
        SensorRandomisation(parts=["gain", "colour"])


def test_windows_keep_labels_and_nodata_and_are_reproducible(sources):
    nodata_seen = 0
    for seed in range(16):  # the first window of a seed: same geometry with and without
        x0, y0 = sampler(sources, parts=None, seed=seed).sample_one()
        x1, y1 = sampler(sources, seed=seed).sample_one()
        # same window, same labels and nodata: only the pixel values changed
        np.testing.assert_array_equal(y0, y1)
        invalid = np.all(x0 == 0, axis=0)
        assert np.all(x1[:, invalid] == 0) and np.all(y1[invalid] == -1)
        assert np.isfinite(x1).all() and not np.array_equal(x0, x1)
        nodata_seen += int(invalid.any())
    assert nodata_seen >= 3
    a, b = sampler(sources, seed=11), sampler(sources, seed=11)
    for _ in range(3):
        xa, ya = a.sample(2)
        xb, yb = b.sample(2)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    raw = sampler(sources, parts=None, seed=11)
    assert not np.array_equal(sampler(sources, seed=11).sample(2)[0], raw.sample(2)[0])


def test_dataloader_batches_equal_the_sampler_without_workers_and_are_seeded_with(sources):
    reference = sampler(sources, parts=None, seed=5)
    batches = iter(WindowBatches(sampler(sources, parts=None, seed=5), 2, workers=0))
    for _ in range(3):
        x, y = next(batches)
        xr, yr = reference.sample(2)
        np.testing.assert_array_equal(x, xr)
        np.testing.assert_array_equal(y, yr)
    runs = []
    for _ in range(2):
        it = iter(WindowBatches(sampler(sources, seed=5), 2, workers=1, seed=5))
        runs.append([next(it) for _ in range(2)])
    for (xa, ya), (xb, yb) in zip(*runs):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (2, 3, 48, 48) and ya.shape == (2, 48, 48)


def test_cli_settings_reach_the_card_record():
    from lovecs_core.cli.train import randomisation

    settings = randomisation("gain,blur", 0.3, 0.25)
    assert settings is not None
    assert (settings["parts"], settings["probability"], settings["clean_share"]) == (
        ["gain", "blur"],
        0.3,
        0.25,
    )
    assert randomisation("all", None)["clean_share"] == SensorRandomisation().clean_share
    assert randomisation("none", 0.3, 0.2) is None
    with pytest.raises(ValueError, match="clean_share"):
        randomisation("all", None, 2.0)
