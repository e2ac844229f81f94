"""Adaptation on several processes: ``torchrun --nproc_per_node N -m lovecs_core adapt ...``.

Under torchrun (``WORLD_SIZE`` > 1, with ``RANK`` and ``LOCAL_RANK``), ``python -m lovecs_core``
joins a process group (NCCL for CUDA tensors and gloo for the rest on GPUs, gloo alone on a
CPU) and each process, a *rank*, works on its own device (``cuda:LOCAL_RANK`` or the CPU). The
code path is the one of a single process, with these differences:

* **Training windows.** Every rank draws the same random windows as one process would (same
  seed, same stream) but reads and trains only its contiguous share of each batch
  (:meth:`Session.share`, :meth:`.WindowSampler.sample` with ``keep``): the global batch stays
  the user's ``--batch-size``, split across ranks, and each rank sees different windows.
* **Training steps** go through :class:`~torch.nn.parallel.DistributedDataParallel` around both
  domains' forward passes (one forward and one backward per step; ``broadcast_buffers`` off, as
  the CSN statistics are already identical on all ranks). Each rank's loss is its summed
  cross-entropy divided by the *global* number of labelled pixels (times the world size, which
  DDP's gradient averaging divides out), so the gradient is the one-process gradient.
* **CSN statistics.** In training mode every :class:`~.csn.CrossSensorNorm` computes the batch
  mean and variance over all ranks' windows (:func:`.sync_layers.synced_batch_norm`: two
  all-reduces per layer and forward, differentiable, like :class:`torch.nn.SyncBatchNorm` but
  also on a CPU), so the running statistics of both domain slots stay identical on all ranks
  and equal those of one process on the whole batch. AdaBN
  (:func:`~lovecs_core.adaptation.adabn.recompute_target_statistics`) goes through the same path. Eval-mode passes use
  the running statistics and need no communication.
* **Dropout.** The ranks' torch generators stay in step (same seed, same draws); each dropout
  layer draws the mask of the whole batch and applies its share's rows
  (:func:`.sync_layers.share_dropout_masks`), so the ranks drop what one process drops.
* **Pseudo-labelling** (the reference map, each round's map, the health check's map): rank ``r``
  maps tiles ``r, r + N, r + 2N, ...`` (:func:`~.pseudolabels.predict_scene` ``part``) and the
  maps are combined on every rank (:meth:`Session.combine_maps`), so class-balanced thresholds
  and the health check are computed by every rank on the same full map.
* **Only rank 0** writes (model files, the card, the map, checkpoints), prints and reports
  progress; the others log errors only. A checkpoint to resume from is read by rank 0 and sent to
  the others. Errors found before adaptation starts are shared (:meth:`Session.agree`), so every
  rank stops with the same message; a rank that fails later exits non-zero, torchrun then stops
  the others (gloo reports the lost peer at once; any collective gives up after
  ``LOVECS_DIST_TIMEOUT_S`` seconds, default 1800). The final ``--map`` is made by rank 0 alone.

Results match one process within floating-point reduction order (see the README).
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_ENV = "LOVECS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800
#: pixels per all-reduce when combining pseudo-label maps (bounds the temporary memory)
MAP_CHUNK_PIXELS = 1 << 24


def launched_world() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    if "RANK" not in os.environ:
        return 1
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


# -- the session -------------------------------------------------------------------------------
@dataclass
class Session:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    csn_group: Any
    owns_group: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """``(rank, world)``: which tiles of a scene this rank maps."""
        return self.rank, self.world

    def share(self, n: int) -> range:
        """This rank's contiguous share of a batch of ``n`` windows (sizes differ by at most 1;
        in rank order, the shares make up the whole batch)."""
        return range(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over ranks (float64, on the CPU)."""
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def combine_maps(self, pred: np.ndarray, conf: np.ndarray) -> None:
        """Fill, in place, the tiles other ranks mapped: every rank leaves the tiles it did not
        map at "no class" (255) and confidence 0, so an all-reduce MIN of the classes and MAX
        of the confidence bytes gives each tile its mapper's values, bit for bit."""
        rows = max(1, MAP_CHUNK_PIXELS // max(1, pred.shape[1]))
        conf_bytes = conf.view(np.uint8)  # uint16 -> 2 bytes a pixel (gloo has no 16-bit ints)
        for y in range(0, pred.shape[0], rows):
            for array, op in ((pred, dist.ReduceOp.MIN), (conf_bytes, dist.ReduceOp.MAX)):
                block = torch.from_numpy(np.ascontiguousarray(array[y : y + rows]))
                dist.all_reduce(block, op=op)
                array[y : y + rows] = block.numpy()

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, its result (or its error) sent to every rank."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (fn(), None)
            except Exception as exc:  # raised on every rank below
                box[0] = (None, exc)
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def agree(self, error: Optional[BaseException]) -> None:
        """A collective check: when any rank failed (``error``), every rank raises the first
        failing rank's error (so no rank waits for another that has stopped)."""
        gathered: list[Any] = [None] * self.world
        mine = None if error is None else (type(error), str(error))
        dist.all_gather_object(gathered, mine)
        for rank, item in enumerate(gathered):
            if item is not None:
                if rank == self.rank and error is not None:
                    raise error
                kind, message = item
                try:
                    exc = kind(f"rank {rank}: {message}")
                except Exception:
                    exc = RuntimeError(f"rank {rank}: {message}")
                raise exc

    def wrap(self, net: nn.Module, target_domain: str) -> nn.parallel.DistributedDataParallel:
        """The network as DDP sees it: both domains' forward passes in one call."""
        from ..model.csn import csn_layers

        ddp = nn.parallel.DistributedDataParallel
        # no buffer broadcast before each forward: the CSN statistics are synchronised in it
        # (torch >= 2.14 names the option forward_sync_buffers; the same buffers at start)
        no_sync: dict[str, Any] = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
            else {"broadcast_buffers": False}
        )
        return ddp(
            _BothDomains(net, target_domain),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # with per-domain affine weights, one domain's weights sit out a step
            find_unused_parameters=any(layer.per_domain_affine for layer in csn_layers(net)),
            **no_sync,
        )

    def train_step(
        self,
        ddp: nn.parallel.DistributedDataParallel,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        cfg: Any,
        source: Optional[tuple[np.ndarray, np.ndarray]],
        target: tuple[np.ndarray, np.ndarray],
    ) -> tuple[float, float]:
        """One optimiser step on this rank's share of the source and target batches; returns
        the global source and pseudo-label losses (means over all ranks' labelled pixels), as
        :func:`.rounds._train_step` does for one process."""
        from ..compute.oom import OutOfGpuMemory
        from ..compute.runtime import autocast
        from ..model.sync_layers import global_batch
        from ..training.optim import IGNORE, clip_and_step

        batches = [source, target]
        weights = [cfg.source_weight, cfg.pseudo_weight]
        local_counts = [0 if b is None else int((b[1] != IGNORE).sum()) for b in batches]
        counts = [max(c, 1.0) for c in self.all_sum(local_counts)]
        sums = [0.0, 0.0]
        ddp.train()
        optimizer.zero_grad(set_to_none=True)
        try:
            xs = [None if b is None else torch.from_numpy(b[0]).to(self.device) for b in batches]
            total: Optional[torch.Tensor] = None
            whole = global_batch(cfg.batch_size, self.share(cfg.batch_size))
            with whole, autocast(self.device, cfg.amp, cpu_bf16=True):
                outs = ddp(*xs)
                for k, (batch, logits) in enumerate(zip(batches, outs)):
                    if batch is None or logits is None:
                        continue
                    y = torch.from_numpy(batch[1]).to(self.device)
                    summed = summed_cross_entropy(logits, y)
                    term = weights[k] * summed * (self.world / counts[k])
                    total = term if total is None else total + term
                    sums[k] = float(summed.detach())
            assert total is not None
            scaler.scale(total).backward()
        except torch.cuda.OutOfMemoryError:
            raise OutOfGpuMemory(
                f"out of GPU memory with {len(target[0])} training windows per process and "
                f"domain: choose a smaller --crop or --batch-size, or run more processes"
            ) from None
        clip_and_step(ddp.module.net, optimizer, scaler, cfg.grad_clip)
        totals = self.all_sum(sums)
        return totals[0] / counts[0], totals[1] / counts[1]


class _BothDomains(nn.Module):
    """The source batch in the source CSN slot, then the target batch in ``target_domain``."""

    def __init__(self, net: nn.Module, target_domain: str) -> None:
        super().__init__()
        self.net = net
        self.target_domain = target_domain

    def forward(
        self, source: Optional[torch.Tensor], target: Optional[torch.Tensor]
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        from ..model.csn import csn_domain

        outs: list[Optional[torch.Tensor]] = []
        for domain, x in (("source", source), (self.target_domain, target)):
            if x is None:
                outs.append(None)
                continue
            with csn_domain(self.net, domain):
                outs.append(self.net(x))
        return outs[0], outs[1]


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`.train.masked_cross_entropy` summed instead of averaged (0 without labels)."""
    from ..training.optim import IGNORE

    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")


# -- the process-wide session ----------------------------------------------------------------
_SESSION: Optional[Session] = None


def current() -> Optional[Session]:
    """The running session (None in a single process)."""
    return _SESSION


def is_main() -> bool:
    return _SESSION is None or _SESSION.is_main


def share(n: int) -> Optional[range]:
    """This rank's share of a batch of ``n`` windows (None: all of them, one process)."""
    return None if _SESSION is None else _SESSION.share(n)


def from_main(fn: Callable[[], T]) -> T:
    return fn() if _SESSION is None else _SESSION.from_main(fn)


def agree(error: Optional[BaseException]) -> None:
    """See :meth:`Session.agree`; in one process, raises ``error`` if any."""
    if _SESSION is not None:
        _SESSION.agree(error)
    elif error is not None:
        raise error


def start(device_spec: str = "auto") -> Optional[Session]:
    """Join torchrun's process group (once per process); None outside torchrun."""
    global _SESSION
    if _SESSION is not None or launched_world() <= 1:
        return _SESSION
    from ..compute.device import resolve_device
    from ..model.csn import sync_statistics

    rank, world = int(os.environ["RANK"]), launched_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend, timeout=timeout)
    _SESSION = Session(rank, world, local_rank, device, dist.new_group(), owns)
    sync_statistics(_SESSION.csn_group)
    log.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    return _SESSION


def finish() -> None:
    """Leave the process group (if this module joined it)."""
    global _SESSION
    from ..model.csn import sync_statistics

    session, _SESSION = _SESSION, None
    sync_statistics(None)
    if session is not None and session.owns_group and dist.is_initialized():
        dist.destroy_process_group()
