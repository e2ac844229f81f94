"""Cross-sensor normalisation (CSN): BatchNorm with separate running statistics per domain.

API as in the LoveCS release::

    model = replace_bn_with_csn(model)
    model = change_csn(model, source=False)   # target statistics from now on
    with csn_domain(model, "source"):
        ...

Source statistics live in the usual BatchNorm buffer names (``running_mean`` ...), so checkpoints
with plain BatchNorm load into CSN models; target statistics are ``target_running_mean`` etc. and
are filled from the source slot when a checkpoint lacks them.

Under torchrun (:mod:`.distributed`), layers in training mode normalise with the mean and
variance of the whole batch across all ranks (:func:`sync_statistics`), so the running statistics
of both slots stay identical on every rank and equal one process's on the whole batch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

TARGET_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
#: the process group whose ranks share the batch statistics (None: this process alone)
_SYNC: dict[str, Any] = {"group": None}


def sync_statistics(group: Any) -> None:
    """From now on, every CSN layer in training mode (training steps, AdaBN) normalises with the
    batch mean and variance of all ranks of ``group`` (:func:`.distributed.synced_batch_norm`);
    its running statistics then stay identical on all ranks. ``None``: this process alone."""
    _SYNC["group"] = group


class CrossSensorNorm(nn.Module):
    """A BatchNorm whose running statistics (and optionally affine weights) depend on the domain."""

    # buffers registered in __init__ (declared for type checkers)
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor
    target_running_mean: torch.Tensor
    target_running_var: torch.Tensor
    target_num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        per_domain_affine: bool = False,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.per_domain_affine = per_domain_affine and affine
        self.source = True
        self.hold_target = False  # training: the target slot normalises with its running statistics
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.per_domain_affine:
            self.target_weight = nn.Parameter(torch.ones(num_features))
            self.target_bias = nn.Parameter(torch.zeros(num_features))
        for prefix in ("", "target_"):
            self.register_buffer(prefix + "running_mean", torch.zeros(num_features))
            self.register_buffer(prefix + "running_var", torch.ones(num_features))
            self.register_buffer(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def domain(self) -> str:
        return "source" if self.source else "target"

    def _slot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = "" if self.source else "target_"
        return (
            getattr(self, p + "running_mean"),
            getattr(self, p + "running_var"),
            getattr(self, p + "num_batches_tracked"),
        )

    def _affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.per_domain_affine and not self.source:
            return self.target_weight, self.target_bias
        return self.weight, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var, tracked = self._slot()
        if self.training and self.hold_target and not self.source:
            weight, bias = self._affine()  # as in eval mode: statistics neither used nor updated
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(tracked)
        weight, bias = self._affine()
        if self.training and _SYNC["group"] is not None:  # torchrun: statistics of all ranks
            from .sync_layers import synced_batch_norm

            return synced_batch_norm(x, mean, var, weight, bias, momentum, self.eps, _SYNC["group"])
        return F.batch_norm(x, mean, var, weight, bias, self.training, momentum, self.eps)

    def copy_source_to_target(self) -> None:
        """Start the target slot from the source statistics (and affine weights)."""
        with torch.no_grad():
            for name in TARGET_BUFFERS:
                getattr(self, "target_" + name).copy_(getattr(self, name))
            if self.per_domain_affine:
                self.target_weight.copy_(self.weight)
                self.target_bias.copy_(self.bias)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A plain BatchNorm checkpoint: fill the target slot from the source one.
        for name in TARGET_BUFFERS:
            if prefix + "target_" + name not in state_dict and prefix + name in state_dict:
                state_dict[prefix + "target_" + name] = state_dict[prefix + name]
        if self.per_domain_affine:
            for name in ("weight", "bias"):
                if prefix + "target_" + name not in state_dict and prefix + name in state_dict:
                    state_dict[prefix + "target_" + name] = state_dict[prefix + name]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"domain={self.domain}, per_domain_affine={self.per_domain_affine}"
        )


def replace_bn_with_csn(model: nn.Module, per_domain_affine: bool = False) -> nn.Module:
    """Replace every BatchNorm (1d/2d/3d, SyncBN) in ``model`` by a :class:`CrossSensorNorm`.

    Existing statistics and affine weights are copied into both domain slots. Returns ``model``.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            csn = CrossSensorNorm(
                child.num_features, child.eps, child.momentum, child.affine, per_domain_affine
            )
            csn.load_state_dict(child.state_dict(), strict=False)
            csn.to(next(iter(child.buffers()), torch.zeros(0)).device)
            csn.train(child.training)
            setattr(model, name, csn)
        else:
            replace_bn_with_csn(child, per_domain_affine)
    return model


def csn_layers(model: nn.Module) -> list[CrossSensorNorm]:
    return [m for m in model.modules() if isinstance(m, CrossSensorNorm)]


def has_csn(model: nn.Module) -> bool:
    return bool(csn_layers(model))


def change_csn(model: nn.Module, source: bool = True) -> nn.Module:
    """Switch every CSN layer to the source (``source=True``) or target domain; returns ``model``."""
    for layer in csn_layers(model):
        layer.source = bool(source)
    return model


def copy_source_to_target(model: nn.Module) -> nn.Module:
    """Initialise every CSN target slot from the source slot (start of adaptation)."""
    for layer in csn_layers(model):
        layer.copy_source_to_target()
    return model


@contextlib.contextmanager
def csn_domain(model: nn.Module, domain: str) -> Iterator[nn.Module]:
    """Temporarily switch the CSN domain (``"source"`` or ``"target"``)."""
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', not {domain!r}")
    previous = [layer.source for layer in csn_layers(model)]
    change_csn(model, source=domain == "source")
    try:
        yield model
    finally:
        for layer, was_source in zip(csn_layers(model), previous):
            layer.source = was_source


@contextlib.contextmanager
def held_target_statistics(model: nn.Module, hold: bool = True) -> Iterator[nn.Module]:
    """While active (``hold``), target-domain batches in training mode are normalised with the
    target slot's running statistics, which stay as they are, instead of with the batch's own
    statistics. Self-training uses it so that the target slot keeps the source statistics it
    starts from: after the sensor alignment, a scene's batch statistics mostly describe its class
    mix, which is the first release's failure (bench/RESULTS.md)."""
    layers = csn_layers(model)
    previous = [layer.hold_target for layer in layers]
    for layer in layers:
        layer.hold_target = hold
    try:
        yield model
    finally:
        for layer, was in zip(layers, previous):
            layer.hold_target = was
