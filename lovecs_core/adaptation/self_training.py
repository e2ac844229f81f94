"""Rounds of guarded pseudo-labelling and training: the self-training loop of CBST and LoveCS.

Each round maps the scene (multi-scale for LoveCS, in the target CSN slot), selects pseudo-labels
with the guards of :mod:`.pseudolabels` (priors from the aligned source model's map), keeps that
map's most confident pixels labelled (the anchor), then trains on
``source_weight * CE(source) + pseudo_weight * CE(pseudo-labels)`` with source and target batches
forwarded separately. Target windows are drawn at the model's GSD (unless ``native_scale``),
centred on every class alike, and normalised with the CSN target slot's running statistics,
which stay the source's unless ``scene_statistics`` (:mod:`.config`). :mod:`.source_term`
finds the labelled rasters of the source term; :mod:`.scene_maps` maps the scene and selects.
Under torchrun, :mod:`.distributed` splits the maps' tiles and each batch across ranks.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..compute.oom import ChunkedBatch
from ..compute.runtime import autocast, grad_scaler, round_up
from ..model.card import ModelCard
from ..model.csn import csn_domain, held_target_statistics
from ..parallel import distributed
from ..progress import Reporter
from ..rasters.labelled import (
    RasterSource,
)
from ..training.optim import clip_and_step, make_optimizer, masked_cross_entropy, poly_schedule
from ..training.sampling import WindowSampler
from .config import AdaptConfig, AdaptError
from .health import class_shares
from .pseudolabels import SelectionRules, class_balanced_pseudo_labels
from .resume import AdaptCheckpoint, restore_training, training_state
from .scene_maps import RoundReporter, map_scene, round_record, select_labels

log = logging.getLogger(__name__)


@dataclass
class _Loop:
    """What the rounds of one self-training share."""

    net: nn.Module
    cfg: AdaptConfig
    scene: RasterSource
    mean: Sequence[float]
    std: Sequence[float]
    codes: list[int]
    crop: int
    scales: list[float]  # the pseudo-labelling scales
    scale: float  # the factor at which target windows are trained
    target_domain: str
    device: torch.device
    divisor: int
    report: Reporter
    tile_chunks: Optional[ChunkedBatch]
    rules: SelectionRules
    priors: np.ndarray  # class shares of the reference map
    anchor: Optional[np.ndarray]  # the reference map's most confident pixels, kept labelled
    src_sampler: Optional[WindowSampler]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    chunks: ChunkedBatch  # training windows per domain, halved on out-of-memory
    total: int
    n_rounds: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    it: int = 0
    first: int = 1  # the first round to run (after a resumed one)
    ddp: Optional[nn.parallel.DistributedDataParallel] = None  # under torchrun
    t0: float = 0.0  # when this run's steps start, and at which iteration (the ETA's clock)
    it0: int = 0


def self_train(
    net: nn.Module,
    card: ModelCard,
    scene: RasterSource,
    mean: Sequence[float],
    std: Sequence[float],
    sources: Sequence[RasterSource],
    cfg: AdaptConfig,
    scales: list[float],
    scale: float,
    target_domain: str,
    device: torch.device,
    divisor: int,
    report: Reporter,
    ref_pred: np.ndarray,
    ref_conf: np.ndarray,
    checkpoint: Optional[AdaptCheckpoint] = None,
    tile_chunks: Optional[ChunkedBatch] = None,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Rounds of pseudo-labelling and training (CBST and LoveCS): returns the rounds' records and
    the losses. ``scales``: the pseudo-labelling scales; ``scale``: the factor at which target
    windows are trained (times ``cfg.scale_range``). ``ref_pred``/``ref_conf``: the aligned
    source model's map of the scene (priors and the anchor). With ``checkpoint``, the state is
    saved after every round, and a run that resumes starts after the last saved round;
    ``tile_chunks``: see :func:`map_scene`."""
    codes = card.class_codes()
    crop = round_up(cfg.crop, divisor)
    src_sampler = None
    if sources:
        smean, sstd = card.stats("source")
        src_sampler = WindowSampler(
            sources, codes, crop, smean, sstd, scale_range=cfg.scale_range, seed=cfg.seed
        )
    rules = SelectionRules(cfg.portion, cfg.min_share, cfg.min_confidence, cfg.prior_cap)
    priors = class_shares(ref_pred, len(codes))
    anchor = None
    if cfg.anchor_portion > 0:  # the reference map's most confident pixels stay labelled
        anchor, _ = class_balanced_pseudo_labels(
            ref_pred, ref_conf, codes, cfg.anchor_portion, rules, priors
        )
    scene.labels = np.zeros((scene.height, scene.width), dtype=np.uint8)
    optimizer = make_optimizer(net, cfg.lr, cfg.momentum, cfg.weight_decay)
    total = max(1, cfg.iterations)
    loop = _Loop(
        net=net,
        cfg=cfg,
        scene=scene,
        mean=mean,
        std=std,
        codes=codes,
        crop=crop,
        scales=scales,
        scale=scale,
        target_domain=target_domain,
        device=device,
        divisor=divisor,
        report=report,
        tile_chunks=tile_chunks,
        rules=rules,
        priors=priors,
        anchor=anchor,
        src_sampler=src_sampler,
        optimizer=optimizer,
        scheduler=poly_schedule(optimizer, total, cfg.power),
        scaler=grad_scaler(device, cfg.amp),
        chunks=ChunkedBatch(
            cfg.batch_size,
            "training windows per domain",
            "choose a smaller --crop, or run on the CPU (--device cpu)",
        ),
        total=total,
        n_rounds=int(math.ceil(total / max(1, cfg.refresh_every))),
    )
    _run_rounds(loop, checkpoint)
    net.eval()
    scene.labels = None
    return loop.rounds, loop.losses


def _run_rounds(loop: _Loop, checkpoint: Optional[AdaptCheckpoint]) -> None:
    """Every round not done yet (a resumed run starts after its checkpoint's round)."""
    state = distributed.from_main(checkpoint.load) if checkpoint is not None else None
    if state is not None:
        _resume(loop, state, checkpoint)
    session = distributed.current()
    loop.ddp = session.wrap(loop.net, loop.target_domain) if session else None
    loop.t0, loop.it0 = time.monotonic(), loop.it
    # the target slot keeps the statistics it starts from unless asked otherwise
    with held_target_statistics(loop.net, hold=not loop.cfg.scene_statistics):
        for r in range(loop.first, loop.n_rounds + 1):
            labels = _pseudo_labels(loop, r)
            _train_round(loop, r, labels)
            if checkpoint is not None and distributed.is_main():
                _save(loop, r, checkpoint)


def _resume(loop: _Loop, state: dict[str, Any], checkpoint: Optional[AdaptCheckpoint]) -> None:
    """Continue from a checkpoint's state: weights, optimiser, records, the round reached."""
    done = restore_training(
        state, loop.net, loop.optimizer, loop.scheduler, loop.scaler, loop.src_sampler
    )
    loop.rounds, loop.losses = list(done["rounds"]), list(done["losses"])
    loop.it = int(done["iteration"])
    loop.first, loop.chunks.size = int(done["round"]) + 1, int(done["chunk"])
    loop.report(
        "training",
        loop.it / loop.total,
        f"resumed after round {loop.first - 1}/{loop.n_rounds} (iteration {loop.it}/"
        f"{loop.total}) from {checkpoint.path if checkpoint else ''}",
        round=loop.first - 1,
        rounds=loop.n_rounds,
        iteration=loop.it,
        iterations=loop.total,
        resumed=True,
    )


def _pseudo_labels(loop: _Loop, r: int) -> np.ndarray:
    """Round ``r``'s pseudo-labels: the scene mapped, guarded class-balanced selection, the
    anchor added; the round recorded."""
    cfg, codes, rules = loop.cfg, loop.codes, loop.rules
    loop.net.eval()
    pred, conf = map_scene(
        loop.net,
        loop.target_domain,
        loop.scene,
        loop.mean,
        loop.std,
        loop.scales,
        cfg,
        loop.device,
        loop.divisor,
        RoundReporter(loop.report, r, loop.n_rounds),
        loop.tile_chunks,
    )
    labels, thresholds = select_labels(pred, conf, codes, cfg.portion, rules, loop.priors)
    if loop.anchor is not None:
        labels = np.where(labels > 0, labels, loop.anchor)
    loop.rounds.append(round_record(r, loop.it, labels, thresholds, pred, codes))
    del pred, conf
    if not (labels > 0).any():
        raise AdaptError(
            "no pseudo-labels could be selected on the scene: the model is not "
            "confident anywhere (no valid pixels, or a scene unlike anything "
            "the model knows)"
        )
    return labels


def _train_round(loop: _Loop, r: int, labels: np.ndarray) -> None:
    """Round ``r``'s training steps on target windows drawn from ``labels``."""
    cfg, scale = loop.cfg, loop.scale
    loop.scene.labels = labels
    tgt_sampler = WindowSampler(
        [loop.scene],
        loop.codes,
        loop.crop,
        loop.mean,
        loop.std,
        scale_range=(scale * cfg.scale_range[0], scale * cfg.scale_range[1]),
        weighting="classes" if cfg.balanced_windows else "labels",
        seed=None if cfg.seed is None else cfg.seed + r,
    )
    loop.net.train()
    for _ in range(min(cfg.refresh_every, loop.total - loop.it)):
        _step(loop, r, tgt_sampler)


def _step(
    loop: _Loop,
    r: int,
    tgt_sampler: WindowSampler,
) -> None:
    """One training step (on every rank under torchrun), its loss recorded and reported."""
    cfg = loop.cfg
    lr = loop.optimizer.param_groups[0]["lr"]
    source, share = None, distributed.share(cfg.batch_size)  # share: None, all
    if loop.src_sampler is not None and cfg.source_weight > 0:
        source = loop.src_sampler.sample(cfg.batch_size, share)
    target = tgt_sampler.sample(cfg.batch_size, share)
    session = distributed.current()
    if session is not None and loop.ddp is not None:
        source_loss, pseudo_loss = session.train_step(
            loop.ddp, loop.optimizer, loop.scaler, cfg, source, target
        )
    else:
        source_loss, pseudo_loss = _train_step(
            loop.net,
            loop.optimizer,
            loop.scaler,
            cfg,
            source,
            target,
            loop.target_domain,
            loop.device,
            loop.chunks,
        )
    loop.scheduler.step()
    loop.it += 1
    it, total, losses = loop.it, loop.total, loop.losses
    loss = cfg.source_weight * source_loss + cfg.pseudo_weight * pseudo_loss
    losses.append(loss)
    elapsed = time.monotonic() - loop.t0
    loop.report(
        "training",
        it / total,
        f"round {r}/{loop.n_rounds} iteration {it}/{total} loss {np.mean(losses[-20:]):.3f}",
        round=r,
        rounds=loop.n_rounds,
        iteration=it,
        iterations=total,
        loss=loss,
        source_loss=source_loss,
        pseudo_loss=pseudo_loss,
        lr=lr,
        eta_s=elapsed / (it - loop.it0) * (total - it),
    )


def _save(loop: _Loop, r: int, checkpoint: AdaptCheckpoint) -> None:
    """Save the state after round ``r`` (rank 0)."""
    checkpoint.save(
        **training_state(
            loop.net,
            loop.optimizer,
            loop.scheduler,
            loop.scaler,
            loop.src_sampler,
            round=r,
            iteration=loop.it,
            rounds=loop.rounds,
            losses=loop.losses,
            chunk=loop.chunks.size,
        )
    )


def _train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: AdaptConfig,
    source: Optional[tuple[np.ndarray, np.ndarray]],
    target: tuple[np.ndarray, np.ndarray],
    target_domain: str,
    device: torch.device,
    chunks: ChunkedBatch,
) -> tuple[float, float]:
    """One optimiser step on a source and a target batch (forwarded separately, each in its CSN
    domain); returns the source and pseudo-label losses. The batches go through in chunks of
    ``chunks.size`` windows with their gradients accumulated, so a step still sees the whole
    batch when the GPU ran out of memory and the chunks were made smaller (only the CSN/BN
    batch statistics are then computed over fewer windows)."""
    losses = [0.0, 0.0]
    parts = [
        (0, "source", cfg.source_weight, source),
        (1, target_domain, cfg.pseudo_weight, target),
    ]

    def forward_backward(items: slice, share: float) -> None:
        for index, domain, weight, batch in parts:
            if batch is None:
                continue
            x, y = (torch.from_numpy(a[items]).to(device) for a in batch)
            with csn_domain(net, domain), autocast(device, cfg.amp, cpu_bf16=True):
                loss = masked_cross_entropy(net(x), y)
            scaler.scale(weight * share * loss).backward()
            losses[index] += share * float(loss.detach())
            del x, y, loss

    def undo() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses[:] = [0.0, 0.0]

    optimizer.zero_grad(set_to_none=True)
    chunks.run(target[0].shape[0], forward_backward, undo, "gradients accumulated over them")
    clip_and_step(net, optimizer, scaler, cfg.grad_clip)
    return losses[0], losses[1]
