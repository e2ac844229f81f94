from pathlib import Path

import numpy as np
import pytest

from lovecs_core.rasters.labelled import (
    RasterSource,
    band_statistics,
    code_lookup,
    open_sources,
    pair_rasters,
)
from lovecs_core.rasters.reading import RasterError
from lovecs_core.training.sampling import WindowSampler
from tests.core.helpers import write_geotiff


def coded_raster(tmp_path: Path, size: int = 120, labelled: slice = slice(None)) -> RasterSource:
    """Band 1 = 10 x label code, band 2 = column index, band 3 = row index (exact, no noise)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(1, 4, (size // 8, size // 8)), 8, 0), 8, 1)
    labels = labels.astype(np.uint8)
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    image = np.stack([labels * 10, cols, rows]).astype(np.uint16)
    lab = np.zeros_like(labels)
    lab[labelled, labelled] = labels[labelled, labelled]
    img_path = write_geotiff(tmp_path / "img.tif", image)
    lab_path = write_geotiff(tmp_path / "lab.tif", lab)
    return RasterSource(img_path, label_path=lab_path)


def test_pairing_by_name_in_order_and_missing(tmp_path: Path):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    for name in ("b", "a"):
        write_geotiff(tmp_path / "i" / f"{name}.tif", np.zeros((4, 4), np.uint8))
        write_geotiff(tmp_path / "l" / f"{name}.tif", np.zeros((4, 4), np.uint8))
    pairs = pair_rasters([tmp_path / "i"], [tmp_path / "l"])
    assert [(p[0].name, p[1].parent.name) for p in pairs] == [("a.tif", "l"), ("b.tif", "l")]
    # explicit files with different names are paired in order
    write_geotiff(tmp_path / "mask_x.tif", np.zeros((4, 4), np.uint8))
    pairs = pair_rasters([tmp_path / "i" / "a.tif"], [tmp_path / "mask_x.tif"])
    assert pairs[0][1].name == "mask_x.tif"
    (tmp_path / "l" / "a.tif").unlink()
    with pytest.raises(RasterError, match="no label raster"):
        pair_rasters([tmp_path / "i"], [tmp_path / "l"])


def test_labels_must_share_the_image_grid(tmp_path: Path):
    img = write_geotiff(tmp_path / "img.tif", np.zeros((3, 10, 10), np.uint8))
    lab = write_geotiff(tmp_path / "lab.tif", np.zeros((12, 10), np.uint8))
    with pytest.raises(RasterError, match="image's grid"):
        open_sources([(img, lab)])


def test_band_statistics_use_valid_pixels_only(tmp_path: Path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 1000, (2, 300, 40)).astype(np.uint16)
    data[:, :50] = 0  # nodata
    path = write_geotiff(tmp_path / "s.tif", data, nodata=0)
    for in_memory in (True, False):
        stats = band_statistics([RasterSource(path, in_memory=in_memory)])
        values = data[:, 50:].reshape(2, -1).astype(float)
        np.testing.assert_allclose(stats.mean, values.mean(axis=1), rtol=1e-6)
        np.testing.assert_allclose(stats.std, values.std(axis=1), rtol=1e-5)
        assert stats.pixels == values.shape[1]
        assert stats.minimum == values.min(axis=1).tolist()


def test_windows_are_drawn_toward_labelled_pixels(tmp_path: Path):
    source = coded_raster(tmp_path, size=200, labelled=slice(0, 40))
    codes = [1, 2, 3]
    weighted = WindowSampler([source], codes, 32, [0, 0, 0], [1, 1, 1], augment=False, seed=0)
    uniform = WindowSampler(
        [source], codes, 32, [0, 0, 0], [1, 1, 1], augment=False, weighting="uniform", seed=0
    )
    hit_w = np.mean([(weighted.sample_one()[1] >= 0).any() for _ in range(200)])
    hit_u = np.mean([(uniform.sample_one()[1] >= 0).any() for _ in range(200)])
    assert hit_w == 1.0
    assert hit_u < 0.4  # ~ (40 + 32)^2 / 200^2 = 13 %


def test_class_weighting_centres_windows_on_every_class_alike(tmp_path: Path):
    """A class on 1 % of the labelled pixels gets about a third of the window centres."""
    size = 200
    labels = np.full((size, size), 1, np.uint8)
    labels[:, 100:] = 2
    labels[90:110, 40:60] = 3  # 400 pixels of 40 000
    image = np.stack([labels * 10] * 3).astype(np.uint8)
    source = RasterSource(
        write_geotiff(tmp_path / "img.tif", image),
        label_path=write_geotiff(tmp_path / "lab.tif", labels),
    )
    centres = {}
    for weighting in ("labels", "classes"):
        sampler = WindowSampler(
            [source], [1, 2, 3], 1, [0] * 3, [1] * 3, augment=False, weighting=weighting, seed=0
        )
        centres[weighting] = np.array([sampler.sample_one()[1][0, 0] for _ in range(600)])
        assert sampler.labelled_pixels == size * size
    assert np.mean(centres["labels"] == 2) < 0.05  # class 3 (index 2): ~1 % of the centres
    assert 0.2 < np.mean(centres["classes"] == 2) < 0.45
    assert 0.2 < np.mean(centres["classes"] == 0) < 0.45


def test_augmentation_keeps_image_and_labels_aligned_and_varies(tmp_path: Path):
    source = coded_raster(tmp_path)
    sampler = WindowSampler([source], [1, 2, 3], 40, [0, 0, 0], [1, 1, 1], seed=3)
    orientations = set()
    for _ in range(60):
        image, target = sampler.sample_one()
        assert image.shape == (3, 40, 40) and target.shape == (40, 40)
        labelled = target >= 0
        assert labelled.all()
        # band 1 is 10 x code: the label (index + 1) must sit on its own pixel
        np.testing.assert_array_equal(image[0], (target + 1) * 10.0)
        gx = np.sign(image[1][0, -1] - image[1][0, 0]), np.sign(image[1][-1, 0] - image[1][0, 0])
        orientations.add(gx)
    assert len(orientations) == 4  # columns run right, left, down or up: rotations happened


def test_random_scale_resamples_the_window(tmp_path: Path):
    source = coded_raster(tmp_path, size=160)
    for scale, span in ((2.0, 16), (0.5, 64)):
        sampler = WindowSampler(
            [source],
            [1, 2, 3],
            32,
            [0, 0, 0],
            [1, 1, 1],
            scale_range=(scale, scale),
            augment=False,
            seed=0,
        )
        image, target = sampler.sample_one()
        assert image.shape == (3, 32, 32)
        covered = image[1].max() - image[1].min()  # column indices seen across the window
        assert abs(covered - (span - 1)) <= 2
        # each label comes from the source pixel under the (bilinear) image's coordinates
        inner = (slice(2, -2), slice(2, -2))
        cols = np.floor(image[1][inner] + 0.5).astype(int)
        rows = np.floor(image[2][inner] + 0.5).astype(int)
        assert (source.labels[rows, cols] == target[inner] + 1).mean() > 0.99


def test_invalid_pixels_are_ignored_and_zero(tmp_path: Path):
    image = np.full((3, 64, 64), 500, np.uint16)
    image[:, :, :32] = 0
    labels = np.full((64, 64), 2, np.uint8)
    src = RasterSource(
        write_geotiff(tmp_path / "i.tif", image, nodata=0),
        label_path=write_geotiff(tmp_path / "l.tif", labels),
    )
    sampler = WindowSampler([src], [1, 2], 64, [400] * 3, [50] * 3, augment=False, seed=0)
    img, target = sampler.sample_one()
    assert (target[:, :32] == -1).all() and (target[:, 32:] == 1).all()
    assert (img[:, :, :32] == 0).all() and np.allclose(img[:, :, 32:], 2.0)


def test_code_lookup():
    lut = code_lookup([3, 7])
    assert lut[3] == 0 and lut[7] == 1 and lut[0] == -1 and lut[5] == -1
