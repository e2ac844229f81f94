"""The alignment's tone step (lovecs_core.alignment.tone): chosen by a model's confidence on a sample of a
scene of another bit depth, mildest first; applied by mapping and adaptation alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from osgeo import gdal
from torch import nn

from lovecs_core.adaptation.config import make_config
from lovecs_core.adaptation.scene import open_scene
from lovecs_core.alignment.radiometry import (
    Alignment,
    Reference,
    adapted_transform,
    scene_alignment,
)
from lovecs_core.alignment.tone import choose_tone, mildest_tone, parse_tone
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.progress import Reporter
from tests.core.helpers import tiny_card, write_geotiff

GAMMA = 0.6  # the tone the synthetic 10-bit scene needs
LEVELS_10BIT = (150, 420, 900)  # raw values of its three classes (blocks)


class BrightnessModel(nn.Module):
    """Logits ``log(exp(-k (x - centre_c)^2) + eps)`` of the un-normalised mean band value ``x``:
    the top class is the nearest centre, and the model is confident only near a centre (far
    from all of them every class gets about ``eps``)."""

    def __init__(self, centres, mean: float, std: float, k: float = 0.03, eps=0.01) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32))
        self.weight = nn.Parameter(torch.zeros(1))  # for the device the model is on
        self.mean, self.std, self.k, self.eps = mean, std, k, eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = (z * self.std + self.mean).mean(dim=1, keepdim=True)
        near = torch.exp(-self.k * (x - self.centres.view(1, -1, 1, 1)) ** 2)
        return torch.log(near + self.eps) + 0 * self.weight


def blocks(levels, size: int = 96) -> np.ndarray:
    """Three vertical bands of equal width, one value each, on three identical bands."""
    img = np.zeros((size, size), dtype=np.float64)
    for i, v in enumerate(levels):
        img[:, i * size // 3 : (i + 1) * size // 3] = v
    return np.repeat(img[None], 3, axis=0)


def card_and_model(tmp_path):
    """A card whose source reference spans 40..200, and a model whose class centres are where
    the 10-bit scene's levels land after the affine alignment and a tone of ``GAMMA``."""
    card = tiny_card(classes=tiny_card().classes, gsd=1.0, tile=64, overlap=16)
    wide = [(0.0, 255.0)] * 3
    card.radiometry = {
        "reference": Reference(255.0, [40.0] * 3, [200.0] * 3, wide, wide, 4).to_dict()
    }
    path = write_geotiff(tmp_path / "scene10.tif", blocks(LEVELS_10BIT).astype(np.uint16))
    gdal.Open(str(path)).GetRasterBand(1)  # readable
    alignment = scene_alignment(card, gdal.Open(str(path)), [1, 2, 3])
    aligned = alignment.apply(np.asarray(LEVELS_10BIT, dtype=np.float32).reshape(1, 3))[0]
    centres = 255.0 * (np.clip(aligned, 0, 255) / 255.0) ** GAMMA
    mean, std = card.stats("source")
    return card, BrightnessModel(centres.tolist(), mean[0], std[0]), path


def test_parse_tone_accepts_auto_off_and_a_gamma():
    assert parse_tone(None) == "auto"
    assert parse_tone(" OFF ") == "off"
    assert parse_tone("0.6") == pytest.approx(0.6)
    for bad in ("bright", "0", "-1", "9"):
        with pytest.raises(ValueError):
            parse_tone(bad)


def test_the_mildest_tone_with_most_of_the_gain_wins():
    # the most confident gamma (0.5) is only a little ahead of a milder one (0.7)
    scores = {1.0: 0.650, 0.9: 0.655, 0.8: 0.664, 0.7: 0.6725, 0.6: 0.667, 0.5: 0.6767}
    assert mildest_tone(scores) == 0.7
    # a clear single peak is taken
    assert mildest_tone({1.0: 0.80, 0.8: 0.81, 0.6: 0.83, 0.5: 0.815}) == 0.6
    # a gain under half a point of confidence is noise: no tone
    assert mildest_tone({1.0: 0.800, 0.8: 0.804, 0.6: 0.802}) == 1.0
    # nothing beats no tone
    assert mildest_tone({1.0: 0.9, 0.8: 0.85, 0.5: 0.7}) == 1.0


def test_alignment_with_a_tone_is_applied_to_pixels_not_folded():
    a = Alignment([0.5, 0.5], [10.0, 0.0], gamma=0.5, model_max=255.0)
    x = np.array([[0.0, 100.0, 490.0, 2000.0], [0.0, 255.0, 510.0, 0.0]], dtype=np.float32)
    expected = 255.0 * (np.clip(x * 0.5 + np.array([[10.0], [0.0]]), 0, 255) / 255.0) ** 0.5
    np.testing.assert_allclose(a.apply(x), expected, rtol=1e-6)
    assert a.normalization([1.0, 2.0], [3.0, 4.0]) == {"mean": [1.0, 2.0], "std": [3.0, 4.0]}
    assert a.pixel_transform() is a and "gamma 0.5" in a.describe()
    again = Alignment.from_dict(a.to_dict())
    assert again.gamma == 0.5 and again.gain == a.gain
    plain = Alignment([2.0], [1.0])
    assert plain.pixel_transform() is None and "gamma" not in plain.describe()


def test_the_model_finds_the_tone_a_10_bit_scene_needs(tmp_path):
    card, net, path = card_and_model(tmp_path)
    ds = gdal.Open(str(path))
    affine = scene_alignment(card, ds, [1, 2, 3])
    assert affine.other_depth
    chosen = choose_tone(card, net, ds, [1, 2, 3], affine)
    assert chosen.gamma == pytest.approx(GAMMA), chosen.describe()
    assert "gamma 0.6" in chosen.describe()
    assert choose_tone(card, net, ds, [1, 2, 3], affine, "off").gamma == 1.0
    assert choose_tone(card, net, ds, [1, 2, 3], affine, 0.8).gamma == pytest.approx(0.8)


def test_an_8_bit_scene_gets_no_tone_even_if_the_model_would_like_one(tmp_path):
    """Same encoding as the source: whatever the model prefers, the scene is left as it is."""
    card, net, _ = card_and_model(tmp_path)
    levels8 = [round(v * 255 / 1023) for v in LEVELS_10BIT]
    path = write_geotiff(tmp_path / "scene8.tif", blocks(levels8).astype(np.uint8))
    ds = gdal.Open(str(path))
    affine = scene_alignment(card, ds, [1, 2, 3])
    assert not affine.other_depth
    assert choose_tone(card, net, ds, [1, 2, 3], affine).gamma == 1.0


def test_mapping_and_adaptation_see_the_scene_through_the_tone(tmp_path):
    card, net, path = card_and_model(tmp_path)
    truth = blocks((1, 2, 3))[0].astype(np.uint8)
    conf = {}
    for tone in ("auto", "off"):
        out = predict_raster(
            (card, net),
            path,
            tmp_path / f"{tone}.tif",
            device="cpu",
            tone=tone,
            confidence=tmp_path / f"{tone}-conf.tif",
            confidence_dtype="float32",
        )
        assert out.alignment is not None
        assert out.alignment["gamma"] == pytest.approx(GAMMA if tone == "auto" else 1.0)
        right = (gdal.Open(str(out.output)).ReadAsArray() == truth).mean()
        assert right > 0.99 or tone == "off"
        conf[tone] = float(gdal.Open(str(out.confidence)).ReadAsArray().mean())
    assert conf["auto"] > 0.95 > conf["off"] + 0.1, conf

    scene = open_scene(card, net, path, None, make_config("fast", device="cpu"), Reporter())
    assert scene.alignment.gamma == pytest.approx(GAMMA)
    assert (scene.mean, scene.std) == tuple(list(v) for v in card.stats("source"))
    data, _ = scene.source.read(0, 0, 96, 96)
    raw = blocks(LEVELS_10BIT).astype(np.float32)
    np.testing.assert_allclose(data, scene.alignment.apply(raw), rtol=1e-5)

    adapted = card.copy()
    adapted.radiometry = {**card.radiometry, "alignment": scene.alignment.to_dict()}
    transform = adapted_transform(adapted, "target")
    assert transform is not None and transform.gamma == pytest.approx(GAMMA)
    assert adapted_transform(adapted, "source") is None
