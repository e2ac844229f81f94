"""Rounds of guarded pseudo-labelling and training: the self-training loop of CBST and LoveCS.

Each round maps the scene (multi-scale for LoveCS, in the target CSN slot), selects pseudo-labels
with the guards of :mod:`.pseudolabels` (priors from the aligned source model's map), keeps that
map's most confident pixels labelled (the anchor), then trains on
``source_weight * CE(source) + pseudo_weight * CE(pseudo-labels)`` with source and target batches
forwarded separately. Target windows are drawn at the model's GSD (unless ``native_scale``),
centred on every class alike, and normalised with the CSN target slot's running statistics,
which stay the source's unless ``scene_statistics`` (:mod:`.config`). :func:`source_term`
finds the labelled rasters of the source term.
Under torchrun, :mod:`.distributed` splits the maps' tiles and each batch across ranks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..compute.oom import ChunkedBatch
from ..compute.runtime import autocast, grad_scaler, round_up
from ..contract import band_count_problem
from ..model.card import ModelCard
from ..model.csn import csn_domain, held_target_statistics
from ..parallel import distributed
from ..progress import Reporter
from ..rasters.labelled import (
    RasterSource,
    open_sources,
    sample_array_sources,
    warn_unknown_label_codes,
)
from ..training.optim import clip_and_step, make_optimizer, masked_cross_entropy, poly_schedule
from ..training.sampling import WindowSampler
from .config import AdaptConfig, AdaptError
from .health import class_shares
from .pseudolabels import (
    CONF_SCALE,
    NO_CLASS,
    SelectionRules,
    class_balanced_pseudo_labels,
    predict_scene,
)
from .resume import AdaptCheckpoint, restore_training, training_state

log = logging.getLogger(__name__)


def map_scene(
    net: nn.Module,
    domain: str,
    scene: RasterSource,
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float],
    cfg: AdaptConfig,
    device: torch.device,
    divisor: int,
    reporter: Reporter,
    chunks: Optional[ChunkedBatch] = None,
    mass: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_scene` in eval mode with the CSN ``domain`` and the settings of ``cfg``
    (``chunks``: the run's :func:`tile_chunks`; ``mass``: see :func:`predict_scene`). Under
    torchrun each rank maps its share of the tiles and every rank gets the whole map."""
    net.eval()
    session = distributed.current()
    with csn_domain(net, domain):
        pred, conf = predict_scene(
            net,
            scene,
            mean,
            std,
            scales,
            device=device,
            tile=cfg.pl_tile,
            margin=cfg.pl_margin,
            batch=cfg.pl_batch,
            amp=cfg.amp,
            divisor=divisor,
            reporter=reporter,
            chunks=chunks,
            part=session.part if session else None,
            mass=mass,
        )
    if session is not None:
        session.combine_maps(pred, conf)
        if mass is not None:
            mass[:] = session.all_sum(mass.tolist())
    return pred, conf


def source_pairs_from_card(card: ModelCard) -> list[tuple[Path, Path]]:
    """The labelled source data recorded in the card's provenance (files must still exist)."""
    pairs, missing = card.recorded_source_data()
    if missing:
        raise AdaptError(
            f"the source data recorded in the model card is missing "
            f"({len(missing)} file(s), e.g. {missing[0]}); pass the source images and "
            f"labels explicitly (--source-images/--source-labels)"
        )
    return pairs


def source_term(
    card: ModelCard,
    cfg: AdaptConfig,
    method: str,
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
    source_bands: Optional[Sequence[int]],
    sample: Optional[tuple[np.ndarray, np.ndarray]],
    report: Reporter,
) -> tuple[list[RasterSource], str]:
    """The labelled source rasters of the source CE term and where they come from: the given
    pairs, else the sample carried in the model file, else the card's recorded files."""
    if cfg.source_weight <= 0:
        return [], "none"
    if source_pairs:
        pairs, kind = list(source_pairs), "source data"
    elif sample is not None:
        report(
            "reading",
            0.0,
            f"source term: the model file's labelled sample ({sample[0].shape[0]} crops)",
        )
        return sample_array_sources(*sample), "model file sample"
    else:
        pairs, kind = source_pairs_from_card(card), "recorded source data"
    if not pairs:
        raise AdaptError(
            f"{method} trains with a source cross-entropy term and needs the labelled source "
            "data, but the model card records none; pass --source-images and "
            "--source-labels, or --source-weight 0 to train on pseudo-labels only"
        )
    report("reading", 0.0, f"source data: {len(pairs)} image/label pair(s)")
    bands = source_bands if source_bands else card.provenance.get("bands")
    sources = open_sources(pairs, bands)
    warn_unknown_label_codes(sources, card.class_codes(), "the source labels")
    problem = band_count_problem(
        card.band_names, sources[0].band_count, "the source images", "--source-bands"
    )
    if problem:
        raise AdaptError(problem)
    return sources, kind


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
    scheduler = poly_schedule(optimizer, total, cfg.power)
    scaler = grad_scaler(device, cfg.amp)
    n_rounds = int(math.ceil(total / max(1, cfg.refresh_every)))
    rounds: list[dict[str, Any]] = []
    losses: list[float] = []
    it, first = 0, 1
    chunks = ChunkedBatch(
        cfg.batch_size,
        "training windows per domain",
        "choose a smaller --crop, or run on the CPU (--device cpu)",
    )
    state = distributed.from_main(checkpoint.load) if checkpoint is not None else None
    if state is not None:
        done = restore_training(state, net, optimizer, scheduler, scaler, src_sampler)
        rounds, losses, it = list(done["rounds"]), list(done["losses"]), int(done["iteration"])
        first, chunks.size = int(done["round"]) + 1, int(done["chunk"])
        report(
            "training",
            it / total,
            f"resumed after round {first - 1}/{n_rounds} (iteration {it}/{total}) from "
            f"{checkpoint.path if checkpoint else ''}",
            round=first - 1,
            rounds=n_rounds,
            iteration=it,
            iterations=total,
            resumed=True,
        )
    session = distributed.current()
    ddp = session.wrap(net, target_domain) if session else None
    t0, it0 = time.monotonic(), it
    # the target slot keeps the statistics it starts from unless asked otherwise
    with held_target_statistics(net, hold=not cfg.scene_statistics):
        for r in range(first, n_rounds + 1):
            net.eval()
            pred, conf = map_scene(
                net,
                target_domain,
                scene,
                mean,
                std,
                scales,
                cfg,
                device,
                divisor,
                _RoundReporter(report, r, n_rounds),
                tile_chunks,
            )
            labels, thresholds = class_balanced_pseudo_labels(
                pred, conf, codes, cfg.portion, rules, priors
            )
            if not (labels > 0).any() and rules.min_confidence > 0:
                log.warning(
                    "no pixel reaches the confidence floor %.2f: selecting without it (the "
                    "health check will judge the result)",
                    rules.min_confidence,
                )
                loose = dataclasses.replace(rules, min_confidence=0.0)
                labels, thresholds = class_balanced_pseudo_labels(
                    pred, conf, codes, cfg.portion, loose, priors
                )
            if anchor is not None:
                labels = np.where(labels > 0, labels, anchor)
            valid = int((pred != NO_CLASS).sum())
            counts = np.bincount(labels.ravel(), minlength=256)[list(codes)]
            rounds.append(
                {
                    "round": r,
                    "iteration": it,
                    "thresholds": [
                        None if not np.isfinite(t) else round(t / CONF_SCALE, 4) for t in thresholds
                    ],
                    "labelled_fraction": round(float((labels > 0).sum()) / max(valid, 1), 4),
                    "class_pixels": counts.tolist(),
                }
            )
            del pred, conf
            if not (labels > 0).any():
                raise AdaptError(
                    "no pseudo-labels could be selected on the scene: the model is not "
                    "confident anywhere (no valid pixels, or a scene unlike anything "
                    "the model knows)"
                )
            scene.labels = labels
            tgt_sampler = WindowSampler(
                [scene],
                codes,
                crop,
                mean,
                std,
                scale_range=(scale * cfg.scale_range[0], scale * cfg.scale_range[1]),
                weighting="classes" if cfg.balanced_windows else "labels",
                seed=None if cfg.seed is None else cfg.seed + r,
            )
            net.train()
            steps = min(cfg.refresh_every, total - it)
            for _ in range(steps):
                lr = optimizer.param_groups[0]["lr"]
                source, share = None, distributed.share(cfg.batch_size)  # share: None, all
                if src_sampler is not None and cfg.source_weight > 0:
                    source = src_sampler.sample(cfg.batch_size, share)
                target = tgt_sampler.sample(cfg.batch_size, share)
                if session is not None and ddp is not None:
                    source_loss, pseudo_loss = session.train_step(
                        ddp, optimizer, scaler, cfg, source, target
                    )
                else:
                    source_loss, pseudo_loss = _train_step(
                        net, optimizer, scaler, cfg, source, target, target_domain, device, chunks
                    )
                scheduler.step()
                it += 1
                loss = cfg.source_weight * source_loss + cfg.pseudo_weight * pseudo_loss
                losses.append(loss)
                elapsed = time.monotonic() - t0
                report(
                    "training",
                    it / total,
                    f"round {r}/{n_rounds} iteration {it}/{total} loss {np.mean(losses[-20:]):.3f}",
                    round=r,
                    rounds=n_rounds,
                    iteration=it,
                    iterations=total,
                    loss=loss,
                    source_loss=source_loss,
                    pseudo_loss=pseudo_loss,
                    lr=lr,
                    eta_s=elapsed / (it - it0) * (total - it),
                )
            if checkpoint is not None and distributed.is_main():
                checkpoint.save(
                    **training_state(
                        net,
                        optimizer,
                        scheduler,
                        scaler,
                        src_sampler,
                        round=r,
                        iteration=it,
                        rounds=rounds,
                        losses=losses,
                        chunk=chunks.size,
                    )
                )
    net.eval()
    scene.labels = None
    return rounds, losses


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


class _RoundReporter(Reporter):
    """Adds the round to pseudo-labelling progress events."""

    def __init__(self, parent: Reporter, round_: int, rounds: int) -> None:
        super().__init__(parent.callback, parent.cancel)
        self.round, self.rounds = round_, rounds

    def __call__(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        super().__call__(
            stage,
            fraction,
            f"round {self.round}/{self.rounds}: {message}",
            round=self.round,
            rounds=self.rounds,
            **extra,
        )
