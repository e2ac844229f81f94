"""AdaBN (Li et al.): the target CSN statistics re-estimated from target windows, no training."""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..compute.oom import ChunkedBatch
from ..compute.runtime import autocast
from ..model.csn import TARGET_BUFFERS, CrossSensorNorm, csn_domain, csn_layers
from ..model.sync_layers import global_batch
from ..parallel.distributed import current, share
from ..progress import Reporter
from ..training.sampling import WindowSampler


@torch.no_grad()
def recompute_target_statistics(
    model: nn.Module,
    sampler: WindowSampler,
    windows: int,
    batch: int,
    device: torch.device,
    amp: bool = True,
    reporter: Optional[Reporter] = None,
) -> None:
    """AdaBN: reset the target CSN statistics and re-estimate them (cumulative average) by
    forwarding ``windows`` target windows in train mode, without gradients. When the GPU runs
    out of memory, the windows go through in halved batches (logged; the statistics touched by
    the failed pass are restored first). Under torchrun, each rank forwards its share of every
    batch and the statistics are those of the whole batch (:func:`sync_statistics`); there is
    no halving then, as every rank must make the same passes."""

    report = reporter or Reporter()
    layers = csn_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = None
        layer.target_running_mean.zero_()
        layer.target_running_var.fill_(1.0)
        layer.target_num_batches_tracked.zero_()
    was_training = model.training
    model.train()
    done = 0
    chunks = ChunkedBatch(
        batch,
        "statistics windows",
        "choose a smaller --crop, or run on the CPU (--device cpu)",
    )
    try:
        with csn_domain(model, "target"):
            while done < windows:
                n = min(batch, windows - done)
                images, _ = sampler.sample(n, share(n))  # under torchrun: this rank's share
                saved = [_target_statistics(layer) for layer in layers]

                def forward(items: slice, _share: float, images: np.ndarray = images) -> None:
                    with autocast(device, amp):
                        model(torch.from_numpy(images[items]).to(device))

                if current() is not None:  # one pass per rank: the same all-reduces on every rank
                    with global_batch(n, share(n)):
                        forward(slice(None), 1.0)
                else:
                    chunks.run(n, forward, functools.partial(_restore, layers, saved))
                done += n
                report("statistics", done / windows, f"target windows {done}/{windows}")
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)


def _target_statistics(layer: CrossSensorNorm) -> list[torch.Tensor]:
    """Copies of a layer's target running statistics (to undo a failed forward pass)."""
    return [getattr(layer, f"target_{name}").clone() for name in TARGET_BUFFERS]


def _restore(layers: list[CrossSensorNorm], saved: list[list[torch.Tensor]]) -> None:
    """Put the copies of :func:`_target_statistics` back."""
    for layer, values in zip(layers, saved):
        for name, value in zip(TARGET_BUFFERS, values):
            getattr(layer, f"target_{name}").copy_(value)
