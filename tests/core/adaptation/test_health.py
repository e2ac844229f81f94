"""The health check's verdicts on crafted maps."""

from __future__ import annotations

import numpy as np
import pytest

from lovecs_core.adaptation.health import SAME_SENSOR, health_check
from lovecs_core.contract import HARMFUL, IMPROVED, UNCERTAIN

NAMES = ["building", "road", "water", "bare land", "vegetation"]
SCALE = 65535


def source_map(n: int = 50_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    pred = rng.choice(5, n, p=[0.02, 0.04, 0.02, 0.02, 0.90]).astype(np.uint8)  # rural scene
    conf = np.round(rng.uniform(0.4, 1.0, n) * SCALE).astype(np.uint16)
    return pred, conf


def test_a_small_confident_refinement_is_improved():
    pred, conf = source_map()
    adapted = pred.copy()
    unsure = conf < 0.5 * SCALE
    adapted[unsure & (np.arange(pred.size) % 10 == 0)] = 3  # relabels a few unsure pixels
    report = health_check(
        pred,
        conf,
        adapted,
        np.minimum(conf.astype(np.int64) + 3000, SCALE).astype(np.uint16),
        NAMES,
    )
    assert report.verdict == IMPROVED, report.summary()
    assert report.agreement_confident == 1.0 and report.class_shift < 0.1


def test_building_flooding_a_rural_scene_is_likely_harmful():
    """The first release's failure: building and water flood the vegetation."""
    pred, conf = source_map()
    adapted = pred.copy()
    flood = np.random.default_rng(1).random(pred.size) < 0.6
    adapted[flood] = 0
    report = health_check(pred, conf, adapted, conf, NAMES)
    assert report.verdict == HARMFUL
    assert report.largest_gain_class == "building" and report.largest_gain > 0.5
    assert any("building grew" in r for r in report.reasons)
    assert "likely harmful" in report.summary()


def test_a_minority_class_halved_is_not_improved_even_when_all_else_looks_fine():
    """Seen on target_b (CBST): agreement on the confident pixels 100 %, confidence up, class
    mix moved 10 %, but building and road lost ~60 % of their area, and mIoU fell 7.6 points."""
    rng = np.random.default_rng(4)
    n = 50_000
    pred = rng.choice(5, n, p=[0.025, 0.053, 0.128, 0.754, 0.04]).astype(np.uint8)
    sure = np.where(np.isin(pred, [0, 1]), 0.7, 1.0)  # the minority classes are less sure
    conf = np.round(rng.uniform(0.4, sure) * SCALE).astype(np.uint16)
    adapted = pred.copy()
    unsure = conf < np.quantile(conf, 0.5)
    minority = unsure & np.isin(pred, [0, 1]) & (rng.random(n) < 0.9)
    adapted[minority] = 2  # unsure building and road pixels become water
    more_sure = np.minimum(conf.astype(np.int64) + 3000, SCALE).astype(np.uint16)
    report = health_check(pred, conf, adapted, more_sure, NAMES)
    assert report.agreement_confident == 1.0 and report.class_shift <= 0.1
    assert report.verdict == UNCERTAIN, report.summary()
    assert any(r.startswith("building went from") for r in report.reasons)
    assert any(r.startswith("road went from") for r in report.reasons)


def test_confident_pixels_relabelled_without_a_share_shift_is_harmful():
    pred, conf = source_map()
    adapted = pred.copy()
    confident = conf >= np.quantile(conf, 0.5)
    swap = confident & (np.random.default_rng(2).random(pred.size) < 0.4)
    adapted[swap] = (pred[swap] + 1) % 5
    report = health_check(pred, conf, adapted, conf, NAMES)
    assert report.verdict == HARMFUL and report.agreement_confident < 0.75


def test_a_moderate_change_is_uncertain():
    pred, conf = source_map()
    adapted = pred.copy()
    change = np.random.default_rng(3).random(pred.size) < 0.14
    adapted[change] = 3
    report = health_check(pred, conf, adapted, conf, NAMES)
    assert report.verdict == UNCERTAIN, report.summary()


def test_invalid_pixels_are_ignored_and_no_overlap_is_an_error():
    pred, conf = source_map(100)
    pred[:10] = 255
    report = health_check(pred, conf, pred, conf, NAMES)
    assert sum(report.shares_before.values()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        health_check(np.full(5, 255, np.uint8), conf[:5], pred[:5], conf[:5], NAMES)


def test_a_change_without_a_confidence_gain_is_not_improved():
    """Seen on the held-out water scene: maps 100 % in agreement, class mix moved 1 %, mean
    confidence 95.9 % -> 96.0 %, and OA fell 1.7 points."""
    pred, conf = source_map()
    adapted = pred.copy()
    adapted[np.random.default_rng(5).random(pred.size) < 0.01] = 3  # confidence as before
    slightly = np.minimum(conf.astype(np.int64) + 100, SCALE).astype(np.uint16)  # +0.15 points
    report = health_check(pred, conf, adapted, slightly, NAMES)
    assert report.verdict == UNCERTAIN, report.summary()
    assert any("did not become surer" in r for r in report.reasons)


def bare_scene(n: int = 50_000, seed: int = 6):
    """A scene the source model maps as mostly bare land, surely; its other classes less so."""
    rng = np.random.default_rng(seed)
    pred = rng.choice(5, n, p=[0.05, 0.05, 0.05, 0.80, 0.05]).astype(np.uint8)
    conf = np.where(pred == 3, rng.uniform(0.6, 1.0, n), rng.uniform(0.4, 0.8, n))
    return pred, conf


def test_confidence_is_averaged_per_class():
    """Seen on target_b: adaptation gave building back the unsure bare-land pixels, every class
    became surer, and the pixel mean stayed flat (81.5 % -> 81.5 %) because the pixels moved
    to a harder class; the map gained 9.7 mIoU points."""
    pred, conf = bare_scene()
    adapted = pred.copy()
    moved = (pred == 3) & (conf < 0.62)  # 4 % of the scene
    adapted[moved] = 0
    after = np.where(moved, 0.7, conf + 0.005)  # sure of the new class, a little surer elsewhere
    report = health_check(
        pred,
        np.round(conf * SCALE).astype(np.uint16),
        adapted,
        np.round(after * SCALE).astype(np.uint16),
        NAMES,
    )
    assert report.confidence_after - report.confidence_before < 0.01  # the pixel mean: no vouch
    assert report.class_confidence_after - report.class_confidence_before >= 0.01
    assert report.verdict == IMPROVED, report.summary()


def test_a_class_may_grow_to_its_soft_share_and_no_further():
    """target_b: building 0.6 % of the source map, 3.3 % of its probability mass, 3.0 % of the
    adapted map (+9.7 mIoU); water_b: vegetation 0.6 % of the map, 1.5 % of the mass, 2.5 %
    adapted (-0.9 OA); sensor_c: vegetation 0.8 % of the map, 5.9 % of the mass, 0.2 % adapted
    (-1.3 mIoU)."""
    pred, conf = bare_scene()
    conf16 = np.round(conf * SCALE).astype(np.uint16)
    grown = pred.copy()
    grown[(pred == 3) & (conf < 0.63)] = 0  # building 5 % -> 11 % of the scene
    surer = np.minimum(conf16.astype(np.int64) + 1000, SCALE).astype(np.uint16)
    mass = np.array([0.12, 0.05, 0.05, 0.73, 0.05])
    alone = health_check(pred, conf16, grown, surer, NAMES)
    assert any(r.startswith("building went from") for r in alone.reasons)
    backed = health_check(pred, conf16, grown, surer, NAMES, soft_shares=mass)
    assert backed.verdict == IMPROVED, backed.summary()
    assert backed.soft_shares_before["building"] == 0.12
    beyond = health_check(pred, conf16, grown, surer, NAMES, soft_shares=mass * [0.75, 1, 1, 1, 1])
    assert beyond.verdict == UNCERTAIN
    assert any(r.startswith("building went from") for r in beyond.reasons)
    shrunk = pred.copy()
    shrunk[(pred == 4) & (np.arange(pred.size) % 3 > 0)] = 3  # vegetation 5 % -> 1.7 %
    report = health_check(pred, conf16, shrunk, surer, NAMES, soft_shares=mass)
    assert report.verdict == UNCERTAIN
    assert any(r.startswith("vegetation went from") for r in report.reasons)


def test_a_scene_of_the_models_own_sensor_is_never_improved():
    """Held-out vegetation scene, seeds 1 and 2: figures like the refinement above (agreement
    100 %, shift 4 %, confidence 79 -> 87 %), and OA fell 1.2 and 1.4 points."""
    pred, conf = source_map()
    adapted = pred.copy()
    unsure = conf < 0.5 * SCALE
    adapted[unsure & (np.arange(pred.size) % 10 == 0)] = 3
    surer = np.minimum(conf.astype(np.int64) + 3000, SCALE).astype(np.uint16)
    assert health_check(pred, conf, adapted, surer, NAMES).verdict == IMPROVED
    report = health_check(pred, conf, adapted, surer, NAMES, same_sensor=True)
    assert report.verdict == UNCERTAIN and report.reasons == [SAME_SENSOR]
    flood = pred.copy()
    flood[: pred.size // 2] = 0
    assert health_check(pred, conf, flood, conf, NAMES, same_sensor=True).verdict == HARMFUL
