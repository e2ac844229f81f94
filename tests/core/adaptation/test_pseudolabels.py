"""Guarded class-balanced selection on crafted prediction maps."""

from __future__ import annotations

import numpy as np

from lovecs_core.adaptation.health import class_shares
from lovecs_core.adaptation.pseudolabels import (
    CONF_SCALE,
    NO_CLASS,
    SelectionRules,
    class_balanced_pseudo_labels,
)

CODES = [1, 2, 3, 4]


def crafted(n: int = 100_000, shares=(0.6, 0.3, 0.099, 0.001), seed: int = 0):
    """Prediction indices with the given class shares and uniform confidences 0.3..1."""
    rng = np.random.default_rng(seed)
    pred = rng.choice(len(shares), n, p=np.asarray(shares) / sum(shares)).astype(np.uint8)
    conf = np.round(rng.uniform(0.3, 1.0, n) * CONF_SCALE).astype(np.uint16)
    return pred, conf


def test_noise_class_gets_no_pseudo_labels_with_minimum_support():
    pred, conf = crafted()
    plain, _ = class_balanced_pseudo_labels(pred, conf, CODES, 0.1)
    assert (plain == 4).sum() > 0  # plain CBST: the 0.1 % class gets its top 10 % like any other
    guarded, thresholds = class_balanced_pseudo_labels(
        pred, conf, CODES, 0.1, SelectionRules(min_share=0.005)
    )
    assert (guarded == 4).sum() == 0 and np.isinf(thresholds[3])
    for code in (1, 2, 3):
        assert (guarded == code).sum() > 0


def test_confidence_floor():
    pred, conf = crafted()
    conf = np.minimum(conf, np.uint16(0.45 * CONF_SCALE))  # nothing reaches 0.5
    labels, _ = class_balanced_pseudo_labels(pred, conf, CODES, 0.1, SelectionRules())
    assert not (labels > 0).any()
    labels, _ = class_balanced_pseudo_labels(
        pred, conf, CODES, 0.1, SelectionRules(min_confidence=0.4)
    )
    assert (labels > 0).any() and conf[labels > 0].min() >= 0.4 * CONF_SCALE


def test_priors_cap_a_flooding_class_and_block_a_class_born_of_noise():
    """Round 1 (the aligned source model) saw class 1 on 5 % of the scene and class 4 on 0.1 %;
    in a later round class 1 floods 60 % and class 4 grows to 10 %."""
    priors = np.array([0.05, 0.6, 0.349, 0.001])
    pred, conf = crafted(shares=(0.6, 0.2, 0.1, 0.1))
    rules = SelectionRules(portion=0.1, min_share=0.005, min_confidence=0.0, prior_cap=2.0)
    labels, _ = class_balanced_pseudo_labels(pred, conf, CODES, 0.1, rules, priors)
    valid = pred.size
    # class 1 may keep 10 % of at most max(2 x 5 %, 5 % + 5 %) = 10 % of the scene, not of 60 %
    assert abs(int((labels == 1).sum()) - 0.1 * 0.10 * valid) <= 10  # (ties at the threshold)
    assert (labels == 4).sum() == 0  # its prior is below the minimum support
    # class 2 is below its prior: its top 10 % as usual
    assert abs(int((labels == 2).sum()) - 0.1 * (pred == 1).sum()) <= 10
    # the most confident pixels of class 1 are the ones kept
    kept = conf[labels == 1]
    assert kept.min() >= np.quantile(conf[pred == 0], 1 - 0.1 * 0.10 / 0.6 - 1e-3)


def test_shares_ignore_invalid_pixels():
    pred = np.array([0, 0, 1, NO_CLASS, NO_CLASS], dtype=np.uint8)
    np.testing.assert_allclose(class_shares(pred, 3), [2 / 3, 1 / 3, 0])
