"""The health check at the end of every adaptation, without labels.

The adapted model's map of the scene is compared with the aligned source model's map of the same
scene: agreement where the source model was confident, class-share shifts, and the change in
confidence. A self-training run that has run away (a class flooding the scene, the confident
source pixels relabelled) shows up in these figures even though no label is known.

Verdicts:

* ``improved``: the maps agree where the source model was sure, class shares moved little, and the
  adapted model became surer (by at least a point of class-averaged confidence, see below): the
  adapted model is used;
* ``likely harmful``: the adapted map contradicts many of the source model's confident pixels, or
  the class mix moved far (a class gained a large share of the scene);
* ``uncertain``: anything in between, e.g. a model that changed the map but became less sure, a
  scene in the model's own radiometric range (``same_sensor``: no sensor difference to adapt to;
  on the held-out vegetation and water scenes, three seeds each, every adapted model lost 0.9 to
  2.1 OA points, while the figures below looked fine on vegetation), or
  one that halved a class's share of the scene or grew it past the bound below (minority
  classes collapsing or growing is self-training's typical failure, and it can hide behind high
  agreement: the reference map's confident pixels are the anchor self-training learns from, so
  they agree by construction). The reasons say which.

Two figures are read per class, not per pixel, because a sensor change makes the source model
lose close calls to the scene's easy majority class:

* **confidence**: the mean, over the classes on at least ``ratio_min_share`` of both maps, of the
  mean confidence of the pixels predicted as that class. When adaptation gives back the pixels
  of a hard minority class, the pixel mean drops with the class mix alone, even when the model
  became surer of every class (target_b: every class surer, pixel mean flat);
* **a class may grow** to twice its share of the source map or to its soft share, whichever is
  larger: the soft share is the source model's mean probability for the class over the scene
  ("probabilistic classify and count"), and the map's argmax under-counts the classes the model
  is unsure of (target_b: building 0.6 % of the map, 3.3 % of the probabilities, 3.0 % adapted,
  +9.7 mIoU; water_b: vegetation 0.6 % of the map, 1.5 % of the probabilities, 2.5 % adapted,
  -0.9 OA). Shrinking has no such excuse: half the map's share.

Only ``improved`` delivers the adapted model by default: "never worse than not adapting" is the
promise, and bench/RESULTS.md scores the models the check withheld as well as those it passed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..contract import HARMFUL, IMPROVED, UNCERTAIN

#: Why an adaptation to a scene of the model's own sensor is never *improved*.
SAME_SENSOR = (
    "the scene is already in the model's radiometric range (the model's own sensor, as far as "
    "its values show): there is no sensor difference to adapt to, and self-training only moves "
    "the map toward the scene's class mix"
)


@dataclass
class HealthRules:
    """Thresholds of the verdict (fractions of the valid pixels)."""

    confident_quantile: float = 0.5  # "confident" source pixels: the upper half by confidence
    harmful_agreement: float = 0.75  # below: likely harmful
    harmful_shift: float = 0.20  # total-variation distance of class shares above: harmful
    harmful_gain: float = 0.15  # any class gaining more than this share: harmful
    improved_agreement: float = 0.90
    improved_shift: float = 0.10
    improved_confidence_gain: float = 0.01  # the adapted model at least this much surer
    # every class's share within 1/ratio of the reference's .. max(ratio x it, its soft share)
    improved_ratio: float = 2.0
    # ... for classes on at least this share of either map (the share from which pseudo-labelling
    # takes a class as present: .adapt_config.AdaptConfig.min_share)
    ratio_min_share: float = 0.005
    # the verdict abstains from "improved" on fewer valid pixels than this (a 256 px square) ...
    min_judged_pixels: int = 65_536
    # ... or on less than this share of the scene (a scene 96.5 % nodata was judged "improved"
    # while its valid patch lost 12 OA points)
    min_judged_share: float = 0.10


@dataclass
class HealthReport:
    verdict: str
    agreement_confident: float  # adapted == source where the source model was confident
    agreement: float  # adapted == source over all valid pixels
    class_shift: float  # total-variation distance between the class shares
    largest_gain: float  # the largest gain of one class's share
    largest_gain_class: str
    confidence_before: float  # mean max-probability, source model
    confidence_after: float  # mean max-probability, adapted model
    class_confidence_before: float = 0.0  # the same averaged per class (class_confidence)
    class_confidence_after: float = 0.0
    shares_before: dict[str, float] = field(default_factory=dict)
    shares_after: dict[str, float] = field(default_factory=dict)
    soft_shares_before: dict[str, float] = field(default_factory=dict)  # mean probabilities
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs: the verdict and its figures."""
        return (
            f"health check: {self.verdict} — agreement with the source model on its "
            f"confident pixels {100 * self.agreement_confident:.0f} %, class shares moved "
            f"{100 * self.class_shift:.0f} % (largest gain: {self.largest_gain_class} "
            f"{100 * self.largest_gain:+.0f} points), mean confidence "
            f"{100 * self.confidence_before:.0f} % -> {100 * self.confidence_after:.0f} % "
            f"(per class {100 * self.class_confidence_before:.0f} % -> "
            f"{100 * self.class_confidence_after:.0f} %)"
            + (f"; {'; '.join(self.reasons)}" if self.reasons else "")
        )


def class_shares(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among the predicted pixels (class indices below ``num_classes``;
    anything else, such as the "not predicted" code, is left out)."""
    counts = np.bincount(pred.ravel(), minlength=256)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def class_confidence(pred: np.ndarray, conf: np.ndarray, classes: Sequence[int]) -> float:
    """The mean, over ``classes``, of the mean confidence of the pixels predicted as each
    (classes without a pixel are left out; 0 when none has one)."""
    means = [float(conf[pred == c].mean()) for c in classes if (pred == c).any()]
    return float(np.mean(means)) if means else 0.0


def health_check(
    source_pred: np.ndarray,
    source_conf: np.ndarray,
    adapted_pred: np.ndarray,
    adapted_conf: np.ndarray,
    names: Sequence[str],
    no_class: int = 255,
    conf_scale: float = 65535.0,
    rules: HealthRules | None = None,
    same_sensor: bool = False,
    soft_shares: Optional[np.ndarray] = None,
    scene_pixels: Optional[int] = None,
) -> HealthReport:
    """Compare two maps of the same scene (class indices, ``no_class`` where invalid; integer
    confidences scaled by ``conf_scale``) and give a verdict. ``same_sensor``: the alignment
    found the scene already in the model's radiometric range, so at best *uncertain*.
    ``soft_shares``: the source model's mean class probabilities over the scene (None: its
    map's shares). ``scene_pixels``: the maps' pixels in all; given, a valid area too small to
    judge (:class:`HealthRules`) is at best *uncertain*."""
    r = rules or HealthRules()
    valid = (source_pred != no_class) & (adapted_pred != no_class)
    if not valid.any():
        raise ValueError("the maps have no valid pixel in common")
    k = len(names)
    sc = source_conf[valid].astype(np.float64) / conf_scale
    ac = adapted_conf[valid].astype(np.float64) / conf_scale
    sp, ap = source_pred[valid], adapted_pred[valid]
    confident = sc >= np.quantile(sc, r.confident_quantile)
    agree_conf = float((sp[confident] == ap[confident]).mean()) if confident.any() else 1.0
    agree = float((sp == ap).mean())
    before, after = class_shares(sp, k), class_shares(ap, k)
    soft = before if soft_shares is None else np.asarray(soft_shares, dtype=np.float64)
    both = [c for c in range(k) if min(before[c], after[c]) >= r.ratio_min_share]
    class_conf = (class_confidence(sp, sc, both), class_confidence(ap, ac, both))
    shift = float(0.5 * np.abs(after - before).sum())
    gains = after - before
    top = int(np.argmax(gains))
    reasons = []
    if agree_conf < r.harmful_agreement:
        reasons.append("only " + agreement_note(agree_conf, r.harmful_agreement))
    if shift > r.harmful_shift:
        reasons.append(shift_note(shift, r.harmful_shift))
    if gains[top] > r.harmful_gain:
        reasons.append(
            f"{names[top]} grew from {100 * before[top]:.0f} % to "
            f"{100 * after[top]:.0f} % of the scene"
        )
    if reasons:
        verdict = HARMFUL
    else:
        reasons = doubts(r, names, agree_conf, shift, before, after, soft, *class_conf)
        if same_sensor:
            reasons.append(SAME_SENSOR)
        small = too_small_note(r, int(valid.sum()), scene_pixels)
        if small:
            reasons.append(small)
        verdict = UNCERTAIN if reasons else IMPROVED
    return HealthReport(
        verdict=verdict,
        agreement_confident=round(agree_conf, 4),
        agreement=round(agree, 4),
        class_shift=round(shift, 4),
        largest_gain=round(float(gains[top]), 4),
        largest_gain_class=str(names[top]),
        confidence_before=round(float(sc.mean()), 4),
        confidence_after=round(float(ac.mean()), 4),
        class_confidence_before=round(class_conf[0], 4),
        class_confidence_after=round(class_conf[1], 4),
        shares_before={n: round(float(v), 4) for n, v in zip(names, before)},
        shares_after={n: round(float(v), 4) for n, v in zip(names, after)},
        soft_shares_before={n: round(float(v), 4) for n, v in zip(names, soft)},
        reasons=reasons,
    )


def doubts(
    r: HealthRules,
    names: Sequence[str],
    agree_conf: float,
    shift: float,
    before: np.ndarray,
    after: np.ndarray,
    soft: np.ndarray,
    conf_before: float,
    conf_after: float,
) -> list[str]:
    """Why a run that is not likely harmful is not judged improved either (empty: improved).
    ``before``/``after``: the maps' class shares; ``soft``: the source model's soft shares;
    ``conf_*``: class-averaged confidences."""
    found = []
    if agree_conf < r.improved_agreement:
        found.append(agreement_note(agree_conf, r.improved_agreement))
    if shift > r.improved_shift:
        found.append(shift_note(shift, r.improved_shift))
    if conf_after < conf_before:
        found.append(
            f"the model became less sure ({100 * conf_before:.0f} % -> "
            f"{100 * conf_after:.0f} %, averaged per class)"
        )
    elif conf_after < conf_before + r.improved_confidence_gain:
        found.append(
            f"the model did not become surer ({100 * conf_before:.1f} % -> "
            f"{100 * conf_after:.1f} % averaged per class, less than "
            f"{100 * r.improved_confidence_gain:.0f} point gained): nothing vouches for its changes"
        )
    for name, b, a, s in zip(names, before, after, soft):
        if max(a, b) >= r.ratio_min_share and not (
            b / r.improved_ratio <= a <= max(b * r.improved_ratio, s)
        ):
            found.append(
                f"{name} went from {100 * b:.1f} % to {100 * a:.1f} % of the scene"
                + (f" (source model's probabilities: {100 * s:.1f} %)" if s != b else "")
            )
    return found


def too_small_note(r: HealthRules, valid: int, scene_pixels: Optional[int]) -> str:
    """Why the valid area is too small to judge (empty: it is not, or ``scene_pixels`` is
    unknown)."""
    if not scene_pixels:
        return ""
    share = valid / scene_pixels
    if valid >= r.min_judged_pixels and share >= r.min_judged_share:
        return ""
    return (
        f"the valid area is too small to judge: {valid:,} pixels, {100 * share:.1f} % of the "
        f"scene (at least {r.min_judged_pixels:,} pixels and {100 * r.min_judged_share:.0f} % "
        "are needed)"
    )


def agreement_note(agreement: float, limit: float) -> str:
    return (
        f"{100 * agreement:.0f} % of the source model's confident pixels keep their class "
        f"(< {100 * limit:.0f} %)"
    )


def shift_note(shift: float, limit: float) -> str:
    return f"the class mix moved by {100 * shift:.0f} % (> {100 * limit:.0f} %)"
