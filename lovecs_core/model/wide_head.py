"""A classifier that reads, beside the deep features, their mean over a window around each
pixel (context) and fixed random ReLU features of both (random features, Rahimi and Recht, NIPS
2007): more room for a head refitted to a user's clicks, and still linear in the weights that are
fitted, so the refit stays one convex solve.

The random projection is drawn from a fixed seed and saved with the weights; a card whose
architecture has ``head_features`` (and ``head_context``, the window in feature cells) builds
this head in place of the plain 1x1 convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Random ReLU features a widened head adds, and the seed of their projection.
RANDOM_FEATURES, SEED = 256, 0
#: The context window (cells of the deep features, odd; 0: none). 33 cells of a stride-4 network
#: are 132 input pixels: the widest window inside the default tiling's 64-pixel margin, and the
#: best of those measured (bench/RESULTS.md).
CONTEXT = 33


def window_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of ``x[N, C, H, W]`` over the ``window`` x ``window`` cells around each cell (only
    the cells inside the map count); separable, so it costs 2 ``window`` per cell."""
    pad = window // 2
    rows = F.avg_pool2d(x, (window, 1), 1, (pad, 0), count_include_pad=False)
    return F.avg_pool2d(rows, (1, window), 1, (0, pad), count_include_pad=False)


class WideHead(nn.Module):
    """``linear(base x) + extra(relu(projection base x + offsets))``, where ``base x`` is the
    features and, with a ``context`` window, their window mean; the projection is fixed."""

    projection: torch.Tensor
    offsets: torch.Tensor

    def __init__(
        self, channels: int, classes: int, features: int = RANDOM_FEATURES, context: int = 0
    ) -> None:
        super().__init__()
        self.context = context
        base = channels * (2 if context else 1)
        self.linear = nn.Conv2d(base, classes, 1)
        self.register_buffer("projection", torch.zeros(features, base))
        self.register_buffer("offsets", torch.zeros(features))
        self.extra = nn.Conv2d(features, classes, 1, bias=False)
        nn.init.zeros_(self.extra.weight)

    @classmethod
    def around(
        cls, conv: nn.Conv2d, features: int = RANDOM_FEATURES, context: int = CONTEXT
    ) -> "WideHead":
        """A widened ``conv`` that maps exactly as it does (zero weight on the new features)."""
        head = cls(conv.in_channels, conv.out_channels, features, context)
        generator = torch.Generator().manual_seed(SEED)
        base = head.linear.in_channels
        with torch.no_grad():
            head.projection.copy_(torch.randn(features, base, generator=generator))
            head.projection.div_(base**0.5)
            head.offsets.copy_(0.5 * torch.randn(features, generator=generator))
            weight = torch.zeros_like(head.linear.weight)
            weight[:, : conv.in_channels] = conv.weight
            bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
            head.linear.load_state_dict({"weight": weight, "bias": bias})
        return head.to(conv.weight.device)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """The features ``[N, C, H, W]`` and, with a context window, their window mean."""
        return torch.cat([x, window_mean(x, self.context)], dim=1) if self.context else x

    def random_features(self, base: torch.Tensor) -> torch.Tensor:
        """``relu(projection base + offsets)`` of :meth:`base` features."""
        weight = self.projection[:, :, None, None].to(base.dtype)
        return torch.relu(F.conv2d(base, weight, self.offsets.to(base.dtype)))

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """Every feature the head is linear in: :meth:`base` and its random features."""
        base = self.base(x)
        return torch.cat([base, self.random_features(base)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base(x)
        return self.linear(base) + self.extra(self.random_features(base))
