"""The method stage of :func:`.adapt.adapt`: what each method does to the model after the
reference map (none, AdaBN's target statistics, or self-training), recorded in the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..compute.runtime import round_up
from ..model.csn import copy_source_to_target
from ..training.sampling import WindowSampler
from .adabn import recompute_target_statistics
from .pseudolabels import gsd_scales
from .run import AdaptRun
from .scene import source_scale
from .self_training import self_train
from .source_term import source_term


def run_method(
    run: AdaptRun,
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
    source_bands: Optional[Sequence[int]],
) -> None:
    """Adapt ``run.net`` with ``run.method``; the target domain's card entries follow."""
    if run.method == "source-only":
        run.out_card.default_domain = "source"
        run.adaptation["target_gsd"] = run.card.gsd
        return
    record = (
        _adabn(run) if run.method == "adabn" else _self_training(run, source_pairs, source_bands)
    )
    run.out_card.normalization["target"] = run.target_norm
    run.out_card.default_domain = "target"
    run.adaptation["target_gsd"] = run.sc.gsd / run.final_scale if run.sc.gsd else None
    run.adaptation["target_scale"] = run.final_scale
    run.adaptation.update(record)


def _adabn(run: AdaptRun) -> dict[str, Any]:
    """Target-domain CSN statistics from target windows at the source GSD (no training)."""
    sc, cfg = run.sc, run.cfg
    run.final_scale = max(1.0, sc.ratio) if sc.ratio else 1.0
    sampler = WindowSampler(
        [sc.source],
        run.codes,
        round_up(cfg.crop, run.divisor),
        sc.mean,
        sc.std,
        scale_range=(run.final_scale, run.final_scale),
        augment=False,
        weighting="valid",
        seed=cfg.seed,
    )
    recompute_target_statistics(
        run.net, sampler, cfg.bn_windows, cfg.batch_size, run.device, cfg.amp, run.report
    )
    return {}


def _self_training(
    run: AdaptRun,
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
    source_bands: Optional[Sequence[int]],
) -> dict[str, Any]:
    """``cbst`` or ``lovecs``: self-training rounds anchored on the reference map; returns what
    the record adds about them."""
    sc, cfg, card = run.sc, run.cfg, run.card
    sources, source_kind = source_term(
        card, cfg, run.method, source_pairs, source_bands, run.sample, run.report
    )
    use_csn = run.method == "lovecs"
    # where the adapted model learns and maps the scene: at the model's GSD, as the source
    # model maps it (a model taught at 0.5 m does not learn 1.5 m in a few hundred steps),
    # or at the scene's own GSD as in the paper
    run.final_scale = 1.0 if cfg.native_scale else source_scale(sc.ratio)
    scales = (
        [run.final_scale]
        if not use_csn
        else (list(cfg.scales) if cfg.scales else gsd_scales(card.gsd, sc.gsd, cfg.n_scales))
    )
    assert run.ref_pred is not None and run.ref_conf is not None
    run.rounds, run.losses = self_train(
        run.net,
        card,
        sc.source,
        sc.mean,
        sc.std,
        sources,
        cfg,
        scales,
        run.final_scale,
        "target" if use_csn else "source",
        run.device,
        run.divisor,
        run.report,
        run.ref_pred,
        run.ref_conf,
        run.checkpoint,
        run.tiles,
    )
    if not use_csn:  # one set of statistics shared by both domains
        copy_source_to_target(run.net)
    return {
        "scales": scales,
        "csn": use_csn,
        "source_data": source_kind != "none",
        "source_term": source_kind,
        "rounds": run.rounds,
        "final_loss": float(np.mean(run.losses[-20:])) if run.losses else None,
    }
