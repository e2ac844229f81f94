"""Layers whose training-mode computation spans all torchrun ranks (:mod:`.distributed`), so
that N ranks, each with its share of a batch, compute what one process computes on the whole
batch:

* :func:`synced_batch_norm`: the batch statistics of cross-sensor normalisation over all ranks;
* :func:`share_dropout_masks`: dropout masks drawn for the whole batch on every rank (the
  ranks' random generators are in step), each rank applying its share's rows.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the gradients (every rank's loss
    depends on every rank's contribution)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grads[0].contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def synced_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    momentum: float,
    eps: float,
    group: Any,
) -> torch.Tensor:
    """Training-mode batch normalisation with the batch statistics of all ranks' inputs: the
    mean from the all-reduced sums and counts, then the (biased) variance from the all-reduced
    squared deviations from that mean (two passes, as stable as one process's). The running
    statistics are updated as :func:`torch.nn.functional.batch_norm` does (unbiased variance
    over the global count). A rank may hold no windows (it still takes part)."""
    dims = [0, *range(2, x.dim())]
    xf = x.float()
    channels = x.shape[1]
    count = torch.full((1,), xf.numel() / max(channels, 1), dtype=xf.dtype, device=x.device)
    first = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]), group)
    n = first[-1].detach()
    shape = [1, channels] + [1] * (x.dim() - 2)
    mean = first[:channels] / n.clamp(min=1)
    centred = xf - mean.view(shape)
    var = _AllReduceSum.apply((centred * centred).sum(dims), group) / n.clamp(min=1)
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.float().view(shape)
    if bias is not None:
        out = out + bias.float().view(shape)
    with torch.no_grad():
        factor = torch.where(n > 1, n / (n - 1).clamp(min=1), torch.ones_like(n))
        unbiased = var.detach() * factor
        running_mean.mul_(1 - momentum).add_(momentum * mean.detach().to(running_mean.dtype))
        running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
    return out.to(x.dtype)


# -- dropout masks of the whole batch --------------------------------------------------------------
#: the batch being forwarded: its size on all ranks together and this rank's windows of it
_BATCH: dict[str, Any] = {"n": None, "share": None}


@contextlib.contextmanager
def global_batch(n: int, share: Optional[range]) -> Iterator[None]:
    """While forwarding this rank's ``share`` of a batch of ``n`` windows (None: one process)."""
    previous = dict(_BATCH)
    _BATCH.update(n=n if share is not None else None, share=share)
    try:
        yield
    finally:
        _BATCH.update(previous)


def share_dropout_masks(net: nn.Module) -> None:
    """Make every dropout layer of ``net`` draw, inside :func:`global_batch`, the mask of the
    whole batch (as one process does: ``bernoulli_`` on the same shape from a generator in the
    same state) and apply this rank's rows of it. The ranks thus drop what one process drops,
    and different windows get different masks. Outside :func:`global_batch`, or when the input
    is not this rank's share, the layer is the usual one."""
    for module in net.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            module.forward = types.MethodType(_shared_dropout, module)  # type: ignore[method-assign]


def _shared_dropout(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n, share = _BATCH["n"], _BATCH["share"]
    p = float(self.p)  # type: ignore[arg-type]
    if not self.training or p == 0.0 or n is None or x.dim() < 2 or x.shape[0] != len(share):
        return type(self).forward(self, x)
    if isinstance(self, nn.Dropout):  # element-wise
        noise = x.new_empty((n, *x.shape[1:]))
    else:  # whole channels (Dropout1d/2d/3d): aten's feature-noise shape
        noise = x.new_empty((n, x.shape[1], *([1] * (x.dim() - 2))))
    if p == 1.0:
        noise.zero_()
    else:
        noise.bernoulli_(1 - p).div_(1 - p)
    return x * noise[share.start : share.stop]
