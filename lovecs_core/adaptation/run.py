"""One adaptation run's state, carried from stage to stage of :func:`.adapt.adapt`, and its first
stage (:func:`prepare`): the processes started, the model loaded with CSN layers, the scene
opened and aligned, the checkpoint and the record of the adaptation begun."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..compute.device import resolve_device
from ..compute.oom import ChunkedBatch
from ..compute.runtime import seed_everything
from ..model.card import ModelCard, read_source_sample
from ..model.csn import copy_source_to_target, has_csn, replace_bn_with_csn
from ..model.networks import input_divisor
from ..model.sync_layers import share_dropout_masks
from ..parallel import distributed
from ..progress import Reporter
from .config import AdaptConfig, AdaptError
from .health import HealthReport
from .pseudolabels import tile_chunks
from .resume import AdaptCheckpoint, run_identity
from .scene import Scene, open_scene

log = logging.getLogger(__name__)

#: A model to adapt: a model file, or a card with its network.
ModelArg = str | os.PathLike[str] | tuple[ModelCard, nn.Module]


@dataclass
class AdaptRun:
    """What the stages of one adaptation share."""

    method: str
    cfg: AdaptConfig
    report: Reporter
    device: torch.device
    target: str | os.PathLike[str]
    out: str | os.PathLike[str]
    card: ModelCard  # the source model's card
    net: nn.Module  # the model being adapted
    source_state: dict[str, torch.Tensor]  # the aligned source model, for the fall-back
    sample: Optional[tuple[np.ndarray, np.ndarray]]  # the source sample in the model file
    sc: Scene
    checkpoint: Optional[AdaptCheckpoint]
    divisor: int
    adaptation: dict[str, Any]  # the record written to the model card
    out_card: ModelCard  # the card of the model written to ``out``
    tiles: ChunkedBatch  # one size for the run's maps, halved on out-of-memory
    t0: float
    ref_pred: Optional[np.ndarray] = None  # the reference map (the aligned source model's)
    ref_conf: Optional[np.ndarray] = None
    ref_mass: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ref_shares: Optional[np.ndarray] = None
    final_scale: float = 1.0  # where the result maps the scene (scene pixels per model pixel)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    health: Optional[HealthReport] = None

    @property
    def codes(self) -> list[int]:
        return self.card.class_codes()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.card.classes]

    @property
    def target_norm(self) -> dict[str, list[float]]:
        return {"mean": self.sc.mean, "std": self.sc.std}


def prepare(
    model: ModelArg,
    target: str | os.PathLike[str],
    out: str | os.PathLike[str],
    method: str,
    cfg: AdaptConfig,
    bands: Optional[Sequence[int]],
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
    resume: bool,
    report: Reporter,
) -> AdaptRun:
    """Start the run: processes, seed, the model with CSN layers on its device, the scene."""
    session = distributed.start(cfg.device)  # None: one process
    device = session.device if session else resolve_device(cfg.device)
    if session is not None:
        if not session.is_main:  # progress and messages come from rank 0
            report = Reporter(None, report.cancel)
        if method != "source-only" and cfg.batch_size < session.world:
            raise AdaptError(
                f"--batch-size {cfg.batch_size} is smaller than the {session.world} processes: "
                "each process needs at least one window of every batch"
            )
    seed_everything(cfg.seed)
    t0 = time.monotonic()
    card, net = _load(model)
    sample = None if isinstance(model, tuple) else read_source_sample(model)
    source_state = _with_csn(card, net, device, session is not None)
    sc = open_scene(card, net, target, bands, cfg, report)
    if method != "source-only" and sc.alignment.in_source_range:
        log.warning(
            "the scene is already in the model's radiometric range: the adapted model will be "
            "kept aside unless you keep it explicitly (health check: at best 'uncertain')"
        )
    checkpoint = None
    if method in ("cbst", "lovecs"):  # the methods that train
        model_id = net if isinstance(model, tuple) else model
        identity = run_identity(model_id, target, method, cfg, sc.source.bands, source_pairs)
        checkpoint = AdaptCheckpoint(out, identity, resume)
    out_card = card.copy()
    out_card.radiometry = {**card.radiometry, "alignment": sc.alignment.to_dict()}
    run = AdaptRun(
        method=method,
        cfg=cfg,
        report=report,
        device=device,
        target=target,
        out=out,
        card=card,
        net=net,
        source_state=source_state,
        sample=sample,
        sc=sc,
        checkpoint=checkpoint,
        divisor=input_divisor(card.architecture),
        adaptation=_record(method, target, card, sc, cfg),
        out_card=out_card,
        tiles=tile_chunks(cfg.pl_batch),
        t0=t0,
    )
    run.ref_mass = np.zeros(len(run.codes))  # the source model's class probabilities, summed
    return run


def _load(model: ModelArg) -> tuple[ModelCard, nn.Module]:
    if isinstance(model, tuple):
        card, net = model
        return card.copy(), net
    from ..model.networks import model_from_file

    return model_from_file(str(model))


def _with_csn(
    card: ModelCard, net: nn.Module, device: torch.device, parallel: bool
) -> dict[str, torch.Tensor]:
    """Give ``net`` CSN layers (both slots: its statistics), move it to ``device``; return its
    weights as they are now (the aligned source model)."""
    if not has_csn(net):  # a plain-BN model: give it CSN layers (both slots = its statistics)
        replace_bn_with_csn(net, per_domain_affine=bool(card.architecture.get("per_domain_affine")))
        card.architecture = {**card.architecture, "csn": True}
    net.to(device)
    copy_source_to_target(net)
    if parallel:  # dropout masks as one process draws them (see .sync_layers)
        share_dropout_masks(net)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _record(
    method: str, target: str | os.PathLike[str], card: ModelCard, sc: Scene, cfg: AdaptConfig
) -> dict[str, Any]:
    """The adaptation's record as it starts (the stages add to it)."""
    return {
        "method": method,
        "scene": str(Path(target).resolve()),
        "bands": list(sc.source.bands),
        "scene_gsd": sc.gsd,
        "source_gsd": card.gsd,
        "alignment": sc.alignment.to_dict(),
        "settings": cfg.to_dict(),
    }
