import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal
from torch import nn

from lovecs_core.adaptation.adabn import recompute_target_statistics
from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.config import AdaptError, make_config
from lovecs_core.adaptation.health import SAME_SENSOR
from lovecs_core.adaptation.pseudolabels import (
    CONF_SCALE,
    NO_CLASS,
    class_balanced_pseudo_labels,
    class_thresholds,
    gsd_scales,
    multiscale_probabilities,
    predict_scene,
)
from lovecs_core.alignment.radiometry import scene_alignment
from lovecs_core.model.card import read_card
from lovecs_core.model.csn import CrossSensorNorm, csn_layers, replace_bn_with_csn
from lovecs_core.model.networks import model_from_file
from lovecs_core.progress import Cancelled, CancelToken, Reporter
from lovecs_core.rasters.labelled import RasterSource, band_statistics, pair_rasters
from lovecs_core.training.sampling import WindowSampler
from tests.core.helpers import tiny_model_file, write_geotiff
from tests.core.synthetic import write_source, write_target


# -- class-balanced thresholds --------------------------------------------------------------------
def test_class_balanced_selection_on_a_known_array():
    # class 0: 10 pixels, class 1: 5 pixels, class 2: never predicted, 255: invalid
    pred = np.array([0] * 10 + [1] * 5 + [NO_CLASS] * 2, dtype=np.uint8)
    conf = np.array(
        [
            0.91,
            0.99,
            0.50,
            0.97,
            0.60,
            0.70,
            0.80,
            0.95,
            0.65,
            0.55,  # class 0
            0.40,
            0.45,
            0.90,
            0.42,
            0.41,  # class 1
            0.99,
            0.99,
        ],
        dtype=np.float32,
    )
    thresholds = class_thresholds(pred, conf, 3, portion=0.2)
    # top 20 %: 2 of 10 for class 0 (0.99, 0.97), 1 of 5 for class 1 (0.90)
    assert thresholds[0] == pytest.approx(0.97) and thresholds[1] == pytest.approx(0.90)
    assert thresholds[2] == np.inf
    labels, _ = class_balanced_pseudo_labels(pred, conf, [4, 7, 9], portion=0.2)
    expected = np.zeros(17, dtype=np.uint8)
    expected[[1, 3]] = 4  # codes, not indices
    expected[12] = 7
    assert labels.tolist() == expected.tolist()
    # the balance: a class predicted everywhere with high confidence does not swamp the others
    assert (labels == 4).sum() == 2 and (labels == 7).sum() == 1


def test_each_predicted_class_keeps_at_least_one_pixel():
    pred = np.array([0, 1, 1, 1], dtype=np.uint8)
    conf = np.array([0.3, 0.9, 0.8, 0.7], dtype=np.float32)
    labels, _ = class_balanced_pseudo_labels(pred, conf, [1, 2], portion=0.1)
    assert labels.tolist() == [1, 2, 0, 0]


# -- multi-scale pseudo-labeller ------------------------------------------------------------------
def test_gsd_scales_follow_the_ratio():
    assert gsd_scales(0.5, 1.5, 4) == pytest.approx([2.0, 2.5, 3.0, 3.5])
    assert gsd_scales(0.5, 1.5, 1) == [3.0]
    assert gsd_scales(1.0, 1.0, 4) == pytest.approx([1.0, 1.1667], abs=1e-4)  # 0.67, 0.83 -> 1
    assert gsd_scales(None, 1.5, 2) == pytest.approx([1.0, 1.1667], abs=1e-4)
    # finer target: scaled down towards the source GSD, never below it, de-duplicated
    assert gsd_scales(2.0, 1.0, 3) == pytest.approx([0.5, 0.5833], abs=1e-4)


class SizeProbe(nn.Module):
    """Logits that depend only on the input height: class 0 gets h / 100."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, 0] = x.shape[-2] / 100.0
        return logits


def test_multiscale_runs_each_scale_and_averages_softmax():
    probe = SizeProbe()
    x = torch.zeros(1, 3, 20, 30)
    probs = multiscale_probabilities(probe, x, [1.0, 2.0, 3.5], divisor=8)
    assert probe.sizes == [(24, 32), (40, 64), (72, 112)]  # rounded up to multiples of 8
    expected = np.mean([1 / (1 + np.exp(-h / 100.0)) for h in (24, 40, 72)])
    assert probs.shape == (1, 2, 20, 30)
    assert torch.allclose(probs[0, 0], torch.full((20, 30), float(expected)), atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(1, 20, 30), atol=1e-6)


def test_multiscale_keeps_spatial_alignment():
    # an identity "model" on a smooth 2-class logit field: every scale gives back the input
    yy, xx = torch.meshgrid(torch.linspace(-2, 2, 24), torch.linspace(-3, 3, 32), indexing="ij")
    logits = torch.stack([xx, yy])[None]
    probs = multiscale_probabilities(nn.Identity(), logits, [1.0, 2.0, 3.0])
    ref = torch.softmax(logits, 1)
    assert (probs - ref)[..., 2:-2, 2:-2].abs().max() < 0.02


def test_scene_prediction_in_tiles_matches_one_pass(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, 40, 50)).astype(np.uint8)
    data[:, :5, :5] = 0
    scene = RasterSource(write_geotiff(tmp_path / "s.tif", data, nodata=0))
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1).eval()  # pointwise: tiles + margins must reproduce one pass
    mass = np.zeros(4)
    pred, conf = predict_scene(
        model,
        scene,
        [100] * 3,
        [50] * 3,
        [1.0, 2.0],
        device=torch.device("cpu"),
        tile=16,
        margin=4,
        batch=3,
        mass=mass,
    )
    full = torch.from_numpy(((data.astype(np.float32) - 100) / 50)[None])
    full[..., :5, :5] = 0
    probs = multiscale_probabilities(model, full, [1.0, 2.0])[0]
    c, k = probs.max(0)
    inner = (slice(6, -2), slice(6, -2))
    assert (pred[inner] == k.numpy()[inner]).all()
    assert conf.dtype == np.uint16
    np.testing.assert_allclose(conf[inner] / CONF_SCALE, c.numpy()[inner], atol=1e-5)
    assert (pred[:5, :5] == NO_CLASS).all() and (conf[:5, :5] == 0).all()
    valid = pred != NO_CLASS  # the soft class shares: the mean probabilities of the valid pixels
    np.testing.assert_allclose(mass / valid.sum(), probs.numpy()[:, valid].mean(1), atol=0.01)


# -- AdaBN ----------------------------------------------------------------------------------------
def test_adabn_recomputes_only_the_target_statistics(tmp_path: Path):
    data = (np.random.default_rng(0).normal(600, 40, (3, 64, 64))).clip(1, 1023).astype(np.uint16)
    scene = RasterSource(write_geotiff(tmp_path / "t.tif", data, nodata=0))
    net = replace_bn_with_csn(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1))).eval()
    layer = csn_layers(net)[0]
    sampler = WindowSampler(
        [scene], [1, 2], 32, [500] * 3, [100] * 3, weighting="valid", augment=False, seed=0
    )
    recompute_target_statistics(net, sampler, windows=8, batch=4, device=torch.device("cpu"))
    normalised = (data.astype(np.float64) - 500) / 100  # windows see mean ~1.0, std ~0.4
    assert torch.allclose(layer.target_running_mean, torch.full((3,), normalised.mean()), atol=0.05)
    assert torch.allclose(layer.target_running_var, torch.full((3,), normalised.var()), rtol=0.2)
    assert torch.equal(layer.running_mean, torch.zeros(3))  # source slot untouched
    assert layer.momentum == 0.1 and not net.training


# -- self-training driver -------------------------------------------------------------------------
@pytest.fixture
def small_setup(tmp_path: Path):
    images, labels = write_source(tmp_path / "src", n=1, size=64)
    scene, scene_labels = write_target(tmp_path / "tgt", size=48, gsd=2.0, nodata_corner=8)
    model = tiny_model_file(tmp_path / "m.lovecs")
    return tmp_path, model, scene, pair_rasters([images], [labels])


def spy_domains(net: nn.Module) -> list[tuple[bool, bool]]:
    """Record (training, source domain) of the first CSN layer at each forward."""
    calls: list[tuple[bool, bool]] = []
    layer = csn_layers(net)[0]
    layer.register_forward_pre_hook(lambda m, _: calls.append((m.training, m.source)))
    return calls


def four_step_config(**overrides):
    """Two rounds of two iterations on 32-pixel windows, no confidence floor."""
    return make_config(
        "fast",
        iterations=4,
        refresh_every=2,
        crop=32,
        batch_size=2,
        min_confidence=0,
        pl_tile=32,
        device="cpu",
        **overrides,
    )


@pytest.mark.parametrize("method", ["lovecs", "cbst"])
def test_domains_are_forwarded_separately(small_setup, method):
    tmp_path, model, scene, pairs = small_setup
    card, net = model_from_file(str(model))
    calls = spy_domains(net)
    cfg = four_step_config()
    result = adapt(
        (card, net),
        scene,
        tmp_path / "a.lovecs",
        method=method,
        config=cfg,
        source_pairs=pairs,
        keep_adapted=True,  # the adapted model's card, whatever the health check says
    )
    train_calls = [c for c in calls if c[0]]
    eval_calls = [c for c in calls if not c[0]]
    assert len(train_calls) == 8  # 4 iterations x (source batch, target batch)
    # eval passes: the reference map (aligned source model, source slot), then the rounds'
    # pseudo-labels, then the health check's maps as the user gets them: the safe result's
    # (source slot) and the adapted model's
    first_target = (
        next(i for i, c in enumerate(eval_calls) if not c[1]) if method == "lovecs" else None
    )
    if method == "lovecs":
        assert [c[1] for c in train_calls] == [True, False] * 4
        assert first_target and all(c[1] for c in eval_calls[:first_target])
        slots = [source for source, _ in itertools.groupby(c[1] for c in eval_calls[first_target:])]
        assert slots == [False, True, False]  # pseudo-labels: target; the verdict's two maps
        assert result.card.adaptation["scales"] == pytest.approx([1.3333, 2.3333], abs=1e-3)
    else:
        assert all(c[1] for c in train_calls)  # one set of statistics: always the source slot
        assert result.card.adaptation["scales"] == [2.0]  # one scale: the model's GSD
        layer = csn_layers(net)[0]
        assert torch.equal(layer.running_mean, layer.target_running_mean)
    assert len(result.rounds) == 2
    saved = read_card(result.output)
    assert saved.default_domain == "target" and saved.adaptation["method"] == method
    # the scene is seen through the sensor alignment, never standardised with its own statistics
    expected = scene_alignment(card, gdal.Open(str(scene)), [1, 2, 3]).normalization(
        *card.stats("source")
    )
    assert saved.normalization["target"]["mean"] == pytest.approx(expected["mean"])
    assert saved.normalization["target"]["mean"] != pytest.approx(
        band_statistics([RasterSource(scene)]).mean
    )
    health = saved.adaptation["health"]
    assert health["verdict"] in ("improved", "uncertain", "likely harmful")
    # the source model's soft shares (its mean probabilities) are a distribution over the classes
    assert sum(health["soft_shares_before"].values()) == pytest.approx(1.0, abs=1e-3)
    assert health["soft_shares_before"] != health["shares_before"]
    assert 0 < health["class_confidence_before"] <= 1 and 0 < health["class_confidence_after"] <= 1
    # learnt and mapped at the model's GSD (1 m), where the source model maps the 2 m scene
    assert saved.adaptation["target_gsd"] == pytest.approx(1.0)
    assert saved.adaptation["target_scale"] == pytest.approx(2.0)
    assert 0.05 < result.rounds[0]["labelled_fraction"] < 0.35  # top 10 % per class + anchor


@pytest.mark.parametrize("scene_statistics", [False, True])
def test_target_slot_keeps_the_source_statistics_unless_asked(small_setup, scene_statistics):
    tmp_path, model, scene, pairs = small_setup
    card, net = model_from_file(str(model))
    before = csn_layers(net)[0].running_mean.clone()
    cfg = four_step_config(native_scale=True, scene_statistics=scene_statistics)
    result = adapt(
        (card, net),
        scene,
        tmp_path / "a.lovecs",
        config=cfg,
        source_pairs=pairs,
        keep_adapted=True,
    )
    _, adapted = model_from_file(str(result.output))
    layer = csn_layers(adapted)[0]
    held = torch.equal(layer.target_running_mean, before)
    assert held != scene_statistics  # the paper's CSN learns the scene's statistics
    assert not torch.equal(layer.running_mean, before)  # the source slot learns in both cases
    assert layer.target_num_batches_tracked == (4 if scene_statistics else 0)
    assert result.card.adaptation["target_gsd"] == pytest.approx(2.0)  # the scene's own GSD


def test_source_only_and_adabn_cards(small_setup):
    tmp_path, model, scene, _ = small_setup
    cfg = make_config("fast", crop=32, bn_windows=4, batch_size=2, device="cpu")
    src = adapt(model, scene, tmp_path / "s.lovecs", method="source-only", config=cfg)
    assert src.card.default_domain == "source" and "target" not in src.card.normalization
    bn = adapt(model, scene, tmp_path / "b.lovecs", method="adabn", config=cfg, keep_adapted=True)
    assert bn.card.default_domain == "target"
    # an untrained model runs the scene at the source GSD (1 m here; the scene has 2 m)
    assert bn.card.domain_gsd("target") == pytest.approx(1.0)
    _, net = model_from_file(str(bn.output))
    layer = csn_layers(net)[0]
    assert not torch.allclose(layer.running_mean, layer.target_running_mean)


def test_missing_source_data_is_explained(small_setup):
    tmp_path, model, scene, _ = small_setup
    cfg = make_config(
        "fast",
        iterations=2,
        refresh_every=2,
        crop=32,
        batch_size=2,
        min_confidence=0,
        pl_tile=32,
        device="cpu",
    )
    with pytest.raises(AdaptError, match="--source-images"):
        adapt(model, scene, tmp_path / "a.lovecs", method="lovecs", config=cfg)
    cfg.source_weight = 0.0  # pseudo-labels only: no source data needed
    result = adapt(model, scene, tmp_path / "a.lovecs", method="lovecs", config=cfg)
    assert result.card.adaptation["source_data"] is False


def test_band_mismatch_is_explained(small_setup):
    tmp_path, model, _, _ = small_setup
    two = write_geotiff(tmp_path / "two.tif", np.ones((2, 16, 16), np.uint8))
    with pytest.raises(AdaptError, match="--bands"):
        adapt(model, two, tmp_path / "a.lovecs", method="adabn")


def test_cancel_leaves_no_model_file(small_setup):
    tmp_path, model, scene, pairs = small_setup
    token = CancelToken()
    seen = []

    def callback(event):
        seen.append(event.stage)
        if event.stage == "training":
            token.cancel()

    cfg = make_config(
        "fast",
        iterations=6,
        refresh_every=3,
        crop=32,
        batch_size=2,
        min_confidence=0,
        pl_tile=32,
        device="cpu",
    )
    with pytest.raises(Cancelled):
        adapt(
            model,
            scene,
            tmp_path / "a.lovecs",
            method="lovecs",
            config=cfg,
            source_pairs=pairs,
            reporter=Reporter(callback, token),
        )
    assert "pseudo-labels" in seen
    assert not list(tmp_path.glob("a.lovecs*"))


def test_plain_batchnorm_model_gets_csn(small_setup):
    tmp_path, _, scene, _ = small_setup
    model = tiny_model_file(tmp_path / "plain.lovecs", csn=False)
    cfg = make_config("fast", crop=32, bn_windows=4, batch_size=2, device="cpu")
    result = adapt(model, scene, tmp_path / "b.lovecs", method="adabn", config=cfg)
    assert result.card.architecture["csn"] is True
    _, net = model_from_file(str(result.output))
    assert any(isinstance(m, CrossSensorNorm) for m in net.modules())


def test_unknown_method_and_preset():
    with pytest.raises(AdaptError, match="preset"):
        make_config("turbo")
    with pytest.raises(AdaptError, match="settings"):
        make_config("fast", colour="red")
    with pytest.raises(AdaptError, match="method"):
        adapt("x.lovecs", "y.tif", "z.lovecs", method="dann")


def test_recorded_source_data_is_used_or_reported_missing(small_setup):
    tmp_path, model, scene, pairs = small_setup
    card, net = model_from_file(str(model))
    card.provenance = {"source_images": [str(pairs[0][0])], "source_labels": [str(pairs[0][1])]}
    cfg = make_config(
        "fast",
        iterations=2,
        refresh_every=2,
        crop=32,
        batch_size=2,
        min_confidence=0,
        pl_tile=32,
        device="cpu",
    )
    result = adapt((card, net), scene, tmp_path / "a.lovecs", method="lovecs", config=cfg)
    assert result.card.adaptation["source_data"] is True
    card.provenance["source_images"] = [str(tmp_path / "gone.tif")]
    with pytest.raises(AdaptError, match="missing"):
        adapt((card, net), scene, tmp_path / "b.lovecs", method="lovecs", config=cfg)


def test_only_an_improved_adaptation_is_delivered_by_default(small_setup):
    """Unless the health check says "improved", the user gets the aligned source model and the
    adapted one is kept beside it; the verdict and the figures are in the card either way."""
    tmp_path, model, scene, _ = small_setup
    cfg = make_config("fast", crop=32, bn_windows=4, batch_size=2, device="cpu")
    result = adapt(model, scene, tmp_path / "d.lovecs", method="adabn", config=cfg)
    verdict = result.card.adaptation["health"]["verdict"]
    kept = tmp_path / "d.rejected.lovecs"
    if verdict == "improved":
        assert result.card.default_domain == "target" and not kept.exists()
    else:
        assert result.fell_back and result.rejected == kept and kept.is_file()
        assert result.card.default_domain == "source"
        assert "target" not in result.card.normalization
        assert verdict in result.card.adaptation["result"]
        assert read_card(kept).default_domain == "target"


def test_a_scene_of_the_models_own_sensor_gets_the_safe_result(small_setup, caplog):
    """One of the source images as the target: the alignment changes nothing, so the adaptation
    is at best "uncertain" and the user gets the aligned source model."""
    tmp_path, model, _, pairs = small_setup
    own_sensor = pairs[0][0]
    cfg = four_step_config()
    with caplog.at_level("WARNING"):
        result = adapt(model, own_sensor, tmp_path / "o.lovecs", config=cfg, source_pairs=pairs)
    assert "already in the model's radiometric range" in caplog.text  # said before training
    health = result.card.adaptation["health"]
    assert result.card.adaptation["alignment"]["summary"].startswith("scene already in")
    assert health["verdict"] != "improved" and SAME_SENSOR in health["reasons"]
    assert result.fell_back and result.card.default_domain == "source"
