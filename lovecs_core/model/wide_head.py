"""A classifier that reads, beside the deep features, fixed random ReLU features of them (random
features, Rahimi and Recht, NIPS 2007): more room for a head refitted to a user's clicks, and still
linear in the weights that are fitted, so the refit stays one convex solve.

The random projection is drawn from a fixed seed and saved with the weights; a card whose
architecture has ``head_features`` builds this head in place of the plain 1x1 convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Random ReLU features a widened head adds, and the seed of their projection.
RANDOM_FEATURES, SEED = 256, 0


class WideHead(nn.Module):
    """``linear(x) + extra(relu(projection x + offsets))``; the projection is fixed (buffers)."""

    projection: torch.Tensor
    offsets: torch.Tensor

    def __init__(self, channels: int, classes: int, features: int = RANDOM_FEATURES) -> None:
        super().__init__()
        self.linear = nn.Conv2d(channels, classes, 1)
        self.register_buffer("projection", torch.zeros(features, channels))
        self.register_buffer("offsets", torch.zeros(features))
        self.extra = nn.Conv2d(features, classes, 1, bias=False)
        nn.init.zeros_(self.extra.weight)

    @classmethod
    def around(cls, conv: nn.Conv2d, features: int = RANDOM_FEATURES) -> "WideHead":
        """A widened ``conv`` that maps exactly as it does (zero weight on the new features)."""
        head = cls(conv.in_channels, conv.out_channels, features)
        generator = torch.Generator().manual_seed(SEED)
        channels = conv.in_channels
        with torch.no_grad():
            head.projection.copy_(torch.randn(features, channels, generator=generator))
            head.projection.div_(channels**0.5)
            head.offsets.copy_(0.5 * torch.randn(features, generator=generator))
            head.linear.load_state_dict(conv.state_dict())
        return head.to(conv.weight.device)

    def random_features(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(projection x + offsets)`` of features ``[N, C, H, W]``."""
        weight = self.projection[:, :, None, None].to(x.dtype)
        return torch.relu(F.conv2d(x, weight, self.offsets.to(x.dtype)))

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, H, W]`` and their random features side by side."""
        return torch.cat([x, self.random_features(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.extra(self.random_features(x))
