"""Optimisation for training and self-training: the ignore label, masked cross-entropy, SGD
with the paper's poly schedule, gradient clipping."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Target value of pixels without a label (left out of the loss).
IGNORE = -1


def poly_schedule(
    optimizer: torch.optim.Optimizer, total: int, power: float = 0.9
) -> torch.optim.lr_scheduler.PolynomialLR:
    """The paper's poly schedule, ``lr = base * (1 - iteration / total) ** power``."""
    return torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=max(int(total), 1), power=power
    )


def make_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over pixels whose target is not :data:`IGNORE` (0 when there are none)."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if not bool((target != IGNORE).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE)


def batch_to(
    device: torch.device, images: np.ndarray, targets: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images).to(device, non_blocking=True)
    y = torch.from_numpy(targets).to(device, non_blocking=True)
    return x, y


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> None:
    """Zero the gradients, backward one loss, clip and step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    clip_and_step(model, optimizer, scaler, grad_clip)


def clip_and_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> None:
    """Clip the accumulated gradient's norm (paper: 35) and take an optimiser step."""
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    scaler.step(optimizer)
    scaler.update()
