"""Fit the head (the last 1x1 convolution, or a :class:`WideHead`: a linear classifier of the
features) to the user's corrections, anchored so that what they did not click is not forgotten.

The loss, convex in the head's weights, so one L-BFGS solve gives the same head every time:

* ``corrections_weight`` x cross-entropy on the corrections, every corrected pixel alike; the
  refiner gives a few corrections less pull (:func:`corrections_weight`: n / 50 up to 50);
* ``anchor_weight`` x cross-entropy toward the source model's own probabilities on confident
  pixels of the scene, drawn alike from every class the source model maps there;
* ``source_weight`` x cross-entropy on the labelled source sample carried in the model file;
* ``l2`` x the squared distance of the weights to the source head's (the biases are free).

The weights' pull (``l2`` 0.5) and the anchors' weight (0.75), plain rather than class-balanced
cross-entropy on the corrections, the context window, the random features and the corrections'
ramp were chosen with ``bench/interactive.py`` and ``bench/refine_variants.py``
(bench/RESULTS.md): class-balancing let three clicks of a rare class flood the map; the ramp halves
the harm of the first ten clicks; the context window cuts sensor_c's loss of OA at 50 clicks from
1.9 to 0.1 points; the stiffer pull and anchors (from 0.3 and 0.5) turn that into a gain and
lift target_b past +10 mIoU at 50 clicks, at the cost of about 1 mIoU on the other scenes
from 25 clicks on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..model.wide_head import WideHead

#: The weights of the anchoring terms and of the pull toward the source head.
ANCHOR_WEIGHT, SOURCE_WEIGHT, L2_WEIGHT = 0.75, 0.5, 0.5
LBFGS_STEPS = 60
#: Corrections from this many on have their full weight; fewer have a share n / this.
FULL_WEIGHT_AT = 50
#: A bias at or below this marks a class an adaptation switched off (its bias is
#: ``adaptation.absent_classes.OFF_BIAS``, -1e4): it stays off unless a correction names it. Left
#: free, such a bias drags every other one thousands of units with it and wrecks the fit.
OFF_THRESHOLD = -1.0e3


@dataclass
class Labelled:
    """Features ``x[N, C]`` with hard targets ``y[N]`` (class indices) or soft ``p[N, K]``."""

    x: torch.Tensor
    y: Optional[torch.Tensor] = None
    p: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class HeadWeights:
    """A head's weight ``[K, C]`` and bias ``[K]``."""

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, head: nn.Module) -> "HeadWeights":
        """The weights of a 1x1 convolution, or of a :class:`WideHead` over the widened
        features (its linear part's columns, then its random features')."""
        conv = head.linear if isinstance(head, WideHead) else head
        assert isinstance(conv, nn.Conv2d)
        weight = conv.weight.detach()[:, :, 0, 0].float()
        if isinstance(head, WideHead):
            weight = torch.cat([weight, head.extra.weight.detach()[:, :, 0, 0].float()], dim=1)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        return cls(weight.clone(), bias.detach().float().clone())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def install(self, head: nn.Module) -> None:
        """Write these weights into ``head`` (in place)."""
        conv = head.linear if isinstance(head, WideHead) else head
        assert isinstance(conv, nn.Conv2d)
        weight = self.weight.to(conv.weight.dtype)[:, :, None, None]
        with torch.no_grad():
            if isinstance(head, WideHead):
                head.extra.weight.copy_(weight[:, conv.in_channels :])
                weight = weight[:, : conv.in_channels]
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(self.bias.to(conv.bias.dtype))


def corrections_weight(count: int) -> float:
    """The weight of ``count`` corrections' term: a few corrections are little evidence."""
    return min(1.0, count / FULL_WEIGHT_AT)


def soft_cross_entropy(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return -(p * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def cross_entropy(logits: torch.Tensor, targets: Labelled) -> torch.Tensor:
    """Cross-entropy toward ``targets``' soft probabilities, else its class indices."""
    if targets.p is not None:
        return soft_cross_entropy(logits, targets.p)
    assert targets.y is not None
    return F.cross_entropy(logits, targets.y)


def fit_head(
    start: HeadWeights,
    corrections: Labelled,
    anchors: Optional[Labelled] = None,
    source: Optional[Labelled] = None,
    anchor_weight: float = ANCHOR_WEIGHT,
    source_weight: float = SOURCE_WEIGHT,
    l2: float = L2_WEIGHT,
    steps: int = LBFGS_STEPS,
    corrections_weight: float = 1.0,
    bias_l2: float = 0.0,
) -> HeadWeights:
    """The head that fits ``corrections`` (hard targets) next to the anchoring terms. Classes
    switched off (:data:`OFF_THRESHOLD`) stay off; one a correction names is switched back on.
    ``bias_l2`` (a pull of the biases toward the source head's) is for the benchmark's
    variants; the kept fit leaves it at 0."""
    targets = corrections.y
    assert targets is not None
    off, start_bias = switched_off(start, targets)
    kept = _without_classes(source, off)  # labelled pixels of a class kept off would drag the rest
    weight = start.weight.clone().requires_grad_(True)
    bias = start_bias.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def logits(x: torch.Tensor) -> torch.Tensor:
        return (x @ weight.T + bias).masked_fill(off[None, :], float(start.bias.min()))

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        total = corrections_weight * F.cross_entropy(logits(corrections.x), targets)
        for term_weight, term in ((anchor_weight, anchors), (source_weight, kept)):
            if term is not None and len(term):
                total = total + term_weight * cross_entropy(logits(term.x), term)
        total = total + l2 * ((weight - start.weight) ** 2).sum()
        total = total + bias_l2 * ((bias - start_bias) ** 2).sum()
        total.backward()
        return total

    with torch.enable_grad():
        optimiser.step(loss)
    final = bias.detach().clone()
    final[off] = start.bias[off]
    return HeadWeights(weight.detach(), final)


def _without_classes(labelled: Optional[Labelled], off: torch.Tensor) -> Optional[Labelled]:
    """``labelled`` without the pixels whose class is in ``off``."""
    if labelled is None or labelled.y is None or not bool(off.any()):
        return labelled
    keep = ~off[labelled.y]
    return Labelled(labelled.x[keep], y=labelled.y[keep])


def switched_off(start: HeadWeights, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classes that stay off, the biases to start from)``: a switched-off class that the
    corrections name starts from the median of the other biases instead."""
    low = start.bias <= OFF_THRESHOLD
    named = torch.zeros_like(low)
    named[targets.unique()] = True
    bias = start.bias.clone()
    on = bias[~low]
    bias[low & named] = on.median() if on.numel() else 0.0
    return low & ~named, bias
