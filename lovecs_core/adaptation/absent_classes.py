"""Classes the aligned source model does not find on a scene stay out of the adapted model.

Self-training can only learn a class from pseudo-labels, and a class on less than
:attr:`~.adapt_config.AdaptConfig.absent_share` of the source model's map gets none. Whatever
the adapted model then predicts of it comes from noise (a few windows of the source term, a
resampled edge): on the held-out vegetation scene, a few dozen "road" pixels turned road's IoU
from "not applicable" into 0 and the scene's mIoU from 58 % to 48 % (bench/RESULTS.md). The
classifier's bias of such a class is set to :data:`OFF_BIAS`, so every consumer of the model
file (mapping, Ray workers, the health check) leaves it out, and the card lists it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

#: A logit offset no input overcomes: the class's probability is 0 after the softmax.
OFF_BIAS = -1.0e4


def absent_classes(shares: np.ndarray, absent_share: float) -> list[int]:
    """Indices of the classes on less than ``absent_share`` of the reference map."""
    return [int(i) for i in np.flatnonzero(np.asarray(shares) < absent_share)]


def classifier(net: nn.Module, num_classes: int) -> nn.Conv2d:
    """The network's last convolution with one output and a bias per class (its classifier;
    in a widened head, the convolution over the deep features)."""
    found = [
        m
        for m in net.modules()
        if isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.bias is not None
    ]
    if not found:
        raise ValueError("the network has no final convolution with a bias per class")
    return found[-1]


@torch.no_grad()
def switch_off(net: nn.Module, indices: Sequence[int], num_classes: int) -> None:
    """Make the classes at ``indices`` impossible to predict (their bias set to ``OFF_BIAS``)."""
    if not indices:
        return
    bias = classifier(net, num_classes).bias
    assert bias is not None
    bias[list(indices)] = OFF_BIAS
