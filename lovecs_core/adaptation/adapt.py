"""Adaptation of a source model to one unlabelled target scene (transductive, as in LoveCS).

Methods (one code path):

* ``source-only``: the source model unchanged; maps are made in the source domain.
* ``adabn``: target-domain CSN statistics recomputed from target windows (no training); the
  scene is upsampled to the source GSD, since an untrained model only knows the source scale.
* ``cbst``: class-balanced self-training with single-scale pseudo-labels and one set of
  normalisation statistics shared by both domains (everything forwarded in the source domain).
* ``lovecs``: cross-sensor normalisation (separate source/target statistics; source and target
  batches always forwarded separately) + multi-scale class-balanced self-training.

Every method first aligns the scene to the source sensor (:mod:`.radiometry`: bit depth and
out-of-range bands, never the scene's own mean/std, which would mix its class content into its
radiometry) and maps it with the aligned source model: the *reference map*. Self-training then
runs rounds of pseudo-labelling in eval mode (target CSN for ``lovecs``) with softmax averaged over
scales derived from the source/target GSD ratio and guarded class-balanced selection
(:mod:`.pseudolabels`: minimum support, confidence floor, class priors from the reference map),
the reference map's most confident pixels staying labelled in every round (the anchor), and trains
with ``source_weight * CE(source) + pseudo_weight * CE(pseudo-labels)``. The source term uses the
labelled source data when given, else the labelled source sample carried in the model file.

Every adaptation ends with a health check (:mod:`.health`) comparing the adapted model's map with
the reference map. Unless the verdict is "improved", the model written to ``out`` is the aligned
source model (the safe result: never worse than not adapting) and the adapted one is kept beside
it (``*.rejected.lovecs``), unless ``keep_adapted`` is set.

Under torchrun (``torchrun --nproc_per_node N -m lovecs_core adapt ...``), the same code runs on
every rank, with the work split and the statistics synchronised by :mod:`.distributed`; only rank
0 writes files and reports progress.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch import nn

from ..compute.device import resolve_device
from ..compute.runtime import round_up, seed_everything
from ..contract import part_path, rejected_path
from ..model.card import ModelCard, read_source_sample, save_model
from ..model.csn import copy_source_to_target, has_csn, replace_bn_with_csn
from ..model.networks import input_divisor
from ..model.sync_layers import share_dropout_masks
from ..parallel import distributed
from ..presets import PRESETS  # noqa: F401
from ..progress import Reporter
from ..rasters.qml import qml_path
from ..training.sampling import WindowSampler
from .absent_classes import absent_classes, switch_off
from .adabn import recompute_target_statistics
from .config import METHODS, AdaptConfig, AdaptError, make_config  # noqa: F401
from .health import IMPROVED, HealthReport, class_shares, health_check
from .pseudolabels import CONF_SCALE, NO_CLASS, gsd_scales, tile_chunks
from .resume import AdaptCheckpoint, run_identity
from .scene import StageReporter, open_scene, source_scale
from .self_training import map_scene, self_train, source_term

log = logging.getLogger(__name__)


@dataclass
class AdaptResult:
    output: Path
    card: ModelCard
    method: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    map: Optional[Path] = None
    confidence: Optional[Path] = None
    health: Optional[HealthReport] = None
    rejected: Optional[Path] = None  # the adapted model kept aside (verdict not "improved")

    @property
    def fell_back(self) -> bool:
        return self.rejected is not None


# -- the adaptation driver -------------------------------------------------------------------------
def _load(
    model: str | os.PathLike[str] | tuple[ModelCard, nn.Module],
) -> tuple[ModelCard, nn.Module]:
    if isinstance(model, tuple):
        card, net = model
        return card.copy(), net
    from ..model.networks import model_from_file

    return model_from_file(str(model))


def adapt(
    model: str | os.PathLike[str] | tuple[ModelCard, nn.Module],
    target: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "lovecs",
    config: Optional[AdaptConfig] = None,
    bands: Optional[Sequence[int]] = None,
    source_pairs: Optional[Sequence[tuple[Path, Path]]] = None,
    source_bands: Optional[Sequence[int]] = None,
    map_path: Optional[str | os.PathLike[str]] = None,
    confidence_path: Optional[str | os.PathLike[str]] = None,
    keep_adapted: bool = False,
    resume: bool = False,
    reporter: Optional[Reporter] = None,
) -> AdaptResult:
    """Adapt ``model`` (a model file or ``(card, module)``) to the ``target`` scene with
    ``method`` and write the result to ``out``: the adapted model when the health check finds
    it improved, else the aligned source model (then the adapted one goes to
    :func:`rejected_path`; ``keep_adapted`` writes it to ``out`` anyway). Optionally map the
    scene with the result. The model files and the map appear together, only when all are
    done. Self-training saves a checkpoint after each round (:mod:`.resume`); ``resume``
    continues from it."""
    if method not in METHODS:
        raise AdaptError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cfg = config or make_config()
    report = reporter or Reporter()
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
    model_id = net if isinstance(model, tuple) else model
    sample = None if isinstance(model, tuple) else read_source_sample(model)
    if not has_csn(net):  # a plain-BN model: give it CSN layers (both slots = its statistics)
        replace_bn_with_csn(net, per_domain_affine=bool(card.architecture.get("per_domain_affine")))
        card.architecture = {**card.architecture, "csn": True}
    net.to(device)
    copy_source_to_target(net)
    if session is not None:  # dropout masks as one process draws them (see .sync_layers)
        share_dropout_masks(net)
    source_state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    sc = open_scene(card, net, target, bands, cfg, report)
    scene = sc.source
    if method != "source-only" and sc.alignment.in_source_range:
        log.warning(
            "the scene is already in the model's radiometric range: the adapted model will be "
            "kept aside unless you keep it explicitly (health check: at best 'uncertain')"
        )
    checkpoint = None
    if method in ("cbst", "lovecs"):  # the methods that train
        identity = run_identity(model_id, target, method, cfg, scene.bands, source_pairs)
        checkpoint = AdaptCheckpoint(out, identity, resume)
    codes = card.class_codes()
    names = [c.name for c in card.classes]
    divisor = input_divisor(card.architecture)
    adaptation: dict[str, Any] = {
        "method": method,
        "scene": str(Path(target).resolve()),
        "bands": list(scene.bands),
        "scene_gsd": sc.gsd,
        "source_gsd": card.gsd,
        "alignment": sc.alignment.to_dict(),
        "settings": cfg.to_dict(),
    }
    out_card = card.copy()
    out_card.radiometry = {**card.radiometry, "alignment": sc.alignment.to_dict()}
    target_norm = {"mean": sc.mean, "std": sc.std}
    rounds: list[dict[str, Any]] = []
    losses: list[float] = []

    ref_pred = ref_conf = None
    ref_mass = np.zeros(len(codes))  # the source model's class probabilities, summed
    tiles = tile_chunks(cfg.pl_batch)  # one size for the run's maps, halved on out-of-memory
    if method != "source-only":  # the reference: the aligned source model's map of the scene
        ref_pred, ref_conf = map_scene(
            net,
            "source",
            scene,
            sc.mean,
            sc.std,
            [source_scale(sc.ratio)],
            cfg,
            device,
            divisor,
            StageReporter(report, "statistics", "source model's map"),
            tiles,
            ref_mass,
        )
        ref_shares = class_shares(ref_pred, len(codes))
        adaptation["reference_shares"] = {n: round(float(v), 4) for n, v in zip(names, ref_shares)}

    final_scale = 1.0
    if method == "source-only":
        out_card.default_domain = "source"
        adaptation["target_gsd"] = card.gsd
    elif method == "adabn":
        final_scale = max(1.0, sc.ratio) if sc.ratio else 1.0
        sampler = WindowSampler(
            [scene],
            codes,
            round_up(cfg.crop, divisor),
            sc.mean,
            sc.std,
            scale_range=(final_scale, final_scale),
            augment=False,
            weighting="valid",
            seed=cfg.seed,
        )
        recompute_target_statistics(
            net, sampler, cfg.bn_windows, cfg.batch_size, device, cfg.amp, report
        )
        out_card.normalization["target"] = target_norm
        out_card.default_domain = "target"
        adaptation["target_gsd"] = sc.gsd / final_scale if sc.gsd else None
        adaptation["target_scale"] = final_scale
    else:
        src_sampler_sources, source_kind = source_term(
            card, cfg, method, source_pairs, source_bands, sample, report
        )
        use_csn = method == "lovecs"
        # where the adapted model learns and maps the scene: at the model's GSD, as the source
        # model maps it (a model taught at 0.5 m does not learn 1.5 m in a few hundred steps),
        # or at the scene's own GSD as in the paper
        final_scale = 1.0 if cfg.native_scale else source_scale(sc.ratio)
        scales = (
            [final_scale]
            if not use_csn
            else (list(cfg.scales) if cfg.scales else gsd_scales(card.gsd, sc.gsd, cfg.n_scales))
        )
        assert ref_pred is not None and ref_conf is not None
        rounds, losses = self_train(
            net,
            card,
            scene,
            sc.mean,
            sc.std,
            src_sampler_sources,
            cfg,
            scales,
            final_scale,
            "target" if use_csn else "source",
            device,
            divisor,
            report,
            ref_pred,
            ref_conf,
            checkpoint,
            tiles,
        )
        if not use_csn:  # one set of statistics shared by both domains
            copy_source_to_target(net)
        out_card.normalization["target"] = target_norm
        out_card.default_domain = "target"
        adaptation["target_gsd"] = sc.gsd / final_scale if sc.gsd else None
        adaptation["target_scale"] = final_scale
        adaptation["scales"] = scales
        adaptation["csn"] = use_csn
        adaptation["source_data"] = source_kind != "none"
        adaptation["source_term"] = source_kind
        adaptation["rounds"] = rounds
        adaptation["final_loss"] = float(np.mean(losses[-20:])) if losses else None

    health = None
    if ref_pred is not None and ref_conf is not None:
        off = absent_classes(ref_shares, cfg.absent_share)
        switch_off(net, off, len(codes))
        adaptation["classes_off"] = [names[i] for i in off]
        if off:
            log.info(
                "left out of the adapted model (under %.1f %% of the source model's map): %s",
                100 * cfg.absent_share,
                ", ".join(adaptation["classes_off"]),
            )
        pred, conf = map_scene(
            net,
            out_card.default_domain,
            scene,
            sc.mean,
            sc.std,
            [final_scale],
            cfg,
            device,
            divisor,
            StageReporter(report, "statistics", "health check"),
            tiles,
        )
        health = health_check(
            ref_pred,
            ref_conf,
            pred,
            conf,
            names,
            NO_CLASS,
            CONF_SCALE,
            same_sensor=sc.alignment.in_source_range,
            soft_shares=ref_mass / max(1, int((ref_pred != NO_CLASS).sum())),
        )
        del pred, conf
        adaptation["health"] = health.to_dict()
        log.info("%s", health.summary())
        report("statistics", 1.0, health.summary(), health=health.to_dict())
    del ref_pred, ref_conf

    net.eval()
    seconds = time.monotonic() - t0
    adaptation.update(
        device=str(device),
        seconds=round(seconds, 1),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    rejected = None
    pending: list[tuple[Path, Path]] = []  # (complete file under a temporary name, final name)
    if health is not None and health.verdict != IMPROVED and not keep_adapted:
        rejected = rejected_path(out)
        adapted_card = out_card.copy()
        adapted_card.adaptation = {**adaptation, "result": "adapted model, rejected"}
        adapted_card.name = f"{card.name} (adapted: {method}, judged {health.verdict})"
        pending.append((part_path(rejected), rejected))
        if distributed.is_main():
            save_model(pending[-1][0], adapted_card, net.state_dict())
        net.load_state_dict(source_state)
        out_card = card.copy()
        out_card.default_domain = "source"
        out_card.normalization.pop("target", None)
        out_card.radiometry = {**card.radiometry, "alignment": sc.alignment.to_dict()}
        adaptation["result"] = f"aligned source model (adaptation judged {health.verdict})"
        adaptation["rejected_model"] = str(rejected)
        adaptation["target_gsd"] = card.gsd
        out_card.name = f"{card.name} (aligned to {Path(target).name}; adaptation rejected)"
    else:
        adaptation["result"] = "adapted model" if method != "source-only" else "source model"
        out_card.name = f"{card.name} (adapted: {method})"
    out_card.adaptation = adaptation
    scene.close()
    result = AdaptResult(
        Path(out),
        out_card,
        method,
        rounds,
        losses,
        seconds,
        str(device),
        health=health,
        rejected=rejected,
    )
    if not distributed.is_main():  # rank 0 writes the files
        return result
    try:
        pending.append((part_path(Path(out)), Path(out)))
        save_model(pending[-1][0], out_card, net.state_dict())
        if map_path is not None:
            from ..mapping.predict import predict_raster

            pr = predict_raster(
                (out_card, net),
                target,
                map_path,
                bands=list(scene.bands),
                device=str(device),
                confidence=confidence_path,
                amp=cfg.amp,
                reporter=report,
                tone=sc.alignment.gamma,  # chosen when the scene was opened: not chosen again
            )
            result.map = Path(pr.output)
            result.confidence = Path(pr.confidence) if pr.confidence else None
        for tmp, final in pending:
            os.replace(tmp, final)
    except BaseException:  # cancelled or failed: no model file without its map, nor the reverse
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        for written in (result.map, result.confidence):  # a map done before the failure
            if written is not None:
                written.unlink(missing_ok=True)
        if result.map is not None:
            qml_path(result.map).unlink(missing_ok=True)
        raise
    if checkpoint is not None:
        checkpoint.remove()
    return result
