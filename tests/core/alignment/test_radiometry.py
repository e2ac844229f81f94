"""Sensor alignment on synthetic scenes with known bit depths, gains and offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.alignment.radiometry import (
    TOLERANCE,
    Alignment,
    Reference,
    describe_scene,
    nominal_maximum,
    reference_from_images,
    scene_alignment,
)
from tests.core.helpers import tiny_card, write_geotiff


def scene_like(rng: np.random.Generator, shape=(3, 80, 90), dark: float = 0.0) -> np.ndarray:
    """uint8 'source sensor' data: a spread of values, optionally darker (another class mix)."""
    x = rng.gamma(2.0, 40.0, shape) + 10
    return np.clip(x * (1 - dark), 0, 255).astype(np.uint8)


@pytest.fixture
def reference() -> Reference:
    rng = np.random.default_rng(0)
    images = [
        scene_like(rng, dark=d).reshape(3, -1).astype(np.float64) for d in (0.0, 0.2, 0.4, 0.1)
    ]
    return reference_from_images(images, 255.0)


def card_with(reference: Reference):
    card = tiny_card()
    card.radiometry = {"reference": reference.to_dict()}
    return card


def aligned_values(card, path: Path, bands=(1, 2, 3)) -> tuple[Alignment, np.ndarray]:
    ds = gdal.Open(str(path))
    alignment = scene_alignment(card, ds, list(bands))
    return alignment, alignment.apply(ds.ReadAsArray().astype(np.float32))


def test_same_sensor_scene_is_left_alone_whatever_its_class_mix(tmp_path, reference):
    """A darker scene of the source sensor (say mostly vegetation) is inside the range the
    source images spanned: no correction, unlike standardising with its own statistics."""
    rng = np.random.default_rng(1)
    for dark in (0.0, 0.3):
        data = scene_like(rng, dark=dark)
        alignment, values = aligned_values(
            card_with(reference), write_geotiff(tmp_path / f"s{dark}.tif", data)
        )
        assert alignment.is_identity, alignment.describe()
        assert alignment.in_source_range  # adaptation is then at best "uncertain" (.health)
        np.testing.assert_allclose(values, data, atol=1e-4)
        assert "already" in alignment.describe()


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_bit_depth_is_scaled_to_the_model_range(tmp_path, reference, bits):
    rng = np.random.default_rng(2)
    data = scene_like(rng)
    factor = (2**bits - 1) / 255.0
    # one sensor LSB of noise: real 10-16-bit data, not an 8-bit product on a grid
    noisy = np.round(data * factor) + rng.integers(0, 2, data.shape)
    raw = np.minimum(noisy, 2**bits - 1).astype(np.uint16)
    alignment, values = aligned_values(card_with(reference), write_geotiff(tmp_path / "s.tif", raw))
    assert alignment.bit_depth == bits
    assert alignment.range_scale == pytest.approx(1 / factor)
    assert f"{bits}-bit" in alignment.describe() and not alignment.in_source_range
    assert_common_stretch_to_reference(values, data, reference)


def assert_common_stretch_to_reference(values, data, reference):
    """Another sensor: back on the 8-bit scale through one linear map for all bands (colours
    kept), whose overall 2nd-98th percentile spread is the source's."""
    a, c = np.polyfit(data.ravel().astype(np.float64), values.ravel().astype(np.float64), 1)
    np.testing.assert_allclose(values, a * data + c, atol=0.7)
    lows, highs = np.percentile(values.reshape(3, -1), [2, 98], axis=1)
    assert np.mean(lows) == pytest.approx(np.mean(reference.low), abs=2.0)
    assert np.mean(highs) == pytest.approx(np.mean(reference.high), abs=2.0)


def test_nbits_tag_and_float_reflectance(tmp_path, reference):
    rng = np.random.default_rng(3)
    data = scene_like(rng)
    dark12 = data.astype(np.uint16) * 4  # 12-bit data that only uses its lower half
    path = tmp_path / "nbits.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 90, 80, 3, gdal.GDT_UInt16, ["NBITS=12"])
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(dark12[b])
    ds = None
    scene = describe_scene(gdal.Open(str(path)), [1, 2, 3])
    assert scene.bit_depth == 12 and scene.value_max == 4095  # the tag, not the values (10 bits)
    floats = write_geotiff(tmp_path / "f.tif", (data / 255.0).astype(np.float32))
    alignment, values = aligned_values(card_with(reference), floats)
    assert alignment.range_scale == pytest.approx(255.0)
    assert_common_stretch_to_reference(values, data, reference)
    assert nominal_maximum(np.array([3000.0]), "int16") == (4095.0, 12)


def test_out_of_range_band_gain_and_offset_are_corrected(tmp_path, reference):
    """A band far outside anything the source sensor produced is brought back into range; the
    other bands are not touched."""
    rng = np.random.default_rng(4)
    data = scene_like(rng).astype(np.float64)
    skewed = data.copy()
    skewed[2] = skewed[2] * 0.3 + 120  # band 3: low gain, large offset (haze)
    alignment, values = aligned_values(
        card_with(reference),
        write_geotiff(tmp_path / "s.tif", np.clip(skewed, 0, 255).astype(np.uint8)),
    )
    assert alignment.corrected_bands == [2] and not alignment.in_source_range
    assert alignment.gain[:2] == [1.0, 1.0] and alignment.offset[:2] == [0.0, 0.0]
    lo, hi = np.percentile(values[2], [2, 98])
    tol = TOLERANCE * 255 + 1
    assert reference.low_range[2][0] - tol <= lo <= reference.low_range[2][1] + tol
    assert reference.high_range[2][0] - tol <= hi <= reference.high_range[2][1] + tol
    # the correction is an affine map that undoes most of the skew
    assert np.corrcoef(values[2].ravel(), data[2].ravel())[0, 1] > 0.99
    assert abs(np.median(values[2]) - np.median(data[2])) < abs(
        np.median(skewed[2]) - np.median(data[2])
    )


def test_alignment_folds_into_normalisation_statistics():
    a = Alignment(gain=[0.25, 2.0], offset=[3.0, -10.0])
    x = np.random.default_rng(5).uniform(0, 1000, (2, 7, 9)).astype(np.float32)
    mean, std = [100.0, 50.0], [40.0, 20.0]
    direct = (a.apply(x) - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    norm = a.normalization(mean, std)
    folded = (x - np.array(norm["mean"])[:, None, None]) / np.array(norm["std"])[:, None, None]
    np.testing.assert_allclose(folded, direct, rtol=1e-4, atol=1e-4)


def test_card_without_reference_gets_range_scaling_only(tmp_path):
    rng = np.random.default_rng(6)
    raw = scene_like(rng).astype(np.uint16) * 4 + rng.integers(0, 2, (3, 80, 90)).astype(np.uint16)
    card = tiny_card()  # uint8 card, no recorded reference (an older model file)
    alignment, _ = aligned_values(card, write_geotiff(tmp_path / "s.tif", raw))
    assert alignment.range_scale == pytest.approx(255 / 1023) and not alignment.corrected_bands
    card.band_dtype = "uint16"  # a model made for another type: nothing safe to do
    assert aligned_values(card, tmp_path / "s.tif")[0].is_identity


def test_an_8_bit_product_stored_in_a_wider_type_counts_as_8_bit(tmp_path, reference):
    """Values x16 (+8) in 12 bits or x257 in 16 bits are the 8-bit product they came from: scaled
    back, with no stretch and no tone, whatever the scene shows; a 10-bit grid stored in 12 bits
    (steps of 4) is not taken for one."""
    rng = np.random.default_rng(7)
    data = scene_like(rng, dark=0.3)  # a dark scene: a stretch would change it
    card = card_with(reference)
    plain, plain_values = aligned_values(card, write_geotiff(tmp_path / "p.tif", data))
    for factor, add in ((16, 8), (257, 0)):
        wide = data.astype(np.uint16) * factor + add
        wide[0, 0, :5] = 0  # a fill value without declared nodata
        alignment, values = aligned_values(
            card, write_geotiff(tmp_path / f"w{factor}.tif", wide.astype(np.uint16))
        )
        assert alignment.step == factor and not alignment.other_depth, alignment.describe()
        assert alignment.in_source_range == plain.in_source_range
        assert "8-bit product" in alignment.describe() and alignment.stretch == 1.0
        assert alignment.corrected_bands == plain.corrected_bands
        np.testing.assert_allclose(values[:, 1:], plain_values[:, 1:], atol=0.51)
    ten_bit_in_12 = (rng.integers(0, 1024, (3, 80, 90)) * 4).astype(np.uint16)
    scene = describe_scene(
        gdal.Open(str(write_geotiff(tmp_path / "t.tif", ten_bit_in_12))), [1, 2, 3]
    )
    assert scene.step == 1 and scene.bit_depth == 12
