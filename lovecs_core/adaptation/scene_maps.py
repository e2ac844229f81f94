"""The scene as adaptation maps it (the reference map, every round, the health check) and what
a round makes of the map: guarded class-balanced pseudo-labels and the round's record."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..compute.oom import ChunkedBatch
from ..model.csn import csn_domain
from ..parallel import distributed
from ..progress import Reporter
from ..rasters.labelled import RasterSource
from .config import AdaptConfig
from .pseudolabels import (
    CONF_SCALE,
    NO_CLASS,
    SelectionRules,
    class_balanced_pseudo_labels,
    predict_scene,
)

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


def select_labels(
    pred: np.ndarray,
    conf: np.ndarray,
    codes: Sequence[int],
    portion: float,
    rules: SelectionRules,
    priors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced pseudo-labels under ``rules``, selected again without the confidence floor
    when no pixel reaches it; the labels and the classes' thresholds."""
    labels, thresholds = class_balanced_pseudo_labels(pred, conf, codes, portion, rules, priors)
    if not (labels > 0).any() and rules.min_confidence > 0:
        log.warning(
            "no pixel reaches the confidence floor %.2f: selecting without it (the "
            "health check will judge the result)",
            rules.min_confidence,
        )
        loose = dataclasses.replace(rules, min_confidence=0.0)
        labels, thresholds = class_balanced_pseudo_labels(pred, conf, codes, portion, loose, priors)
    return labels, thresholds


def round_record(
    r: int,
    it: int,
    labels: np.ndarray,
    thresholds: np.ndarray,
    pred: np.ndarray,
    codes: list[int],
) -> dict[str, Any]:
    """What the adaptation's record says of a round's pseudo-labels."""
    valid = int((pred != NO_CLASS).sum())
    counts = np.bincount(labels.ravel(), minlength=256)[list(codes)]
    return {
        "round": r,
        "iteration": it,
        "thresholds": [
            None if not np.isfinite(t) else round(t / CONF_SCALE, 4) for t in thresholds
        ],
        "labelled_fraction": round(float((labels > 0).sum()) / max(valid, 1), 4),
        "class_pixels": counts.tolist(),
    }


class RoundReporter(Reporter):
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
