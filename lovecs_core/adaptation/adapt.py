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

The stages: :func:`.run.prepare` (the model with CSN layers, the scene aligned) → the reference
map → :func:`.methods.run_method` → the verdict (the health check) → the commit (the files
written together).

Every adaptation ends with a health check (:mod:`.health`) comparing the adapted model's map with
the aligned source model's, both as the user gets them (:mod:`.delivered`). Unless the verdict is "improved", the model written to ``out`` is the aligned
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

from ..contract import IMPROVED, METHODS, part_path, rejected_path
from ..model.card import ModelCard, save_model
from ..parallel import distributed
from ..progress import Reporter
from ..rasters.qml import qml_path
from .absent_classes import absent_classes, switch_off
from .config import AdaptConfig, AdaptError, make_config
from .delivered import judge_delivered, safe_card
from .health import HealthReport, class_shares
from .methods import run_method
from .pseudolabels import NO_CLASS
from .run import AdaptRun, ModelArg, prepare
from .scene import StageReporter, source_scale
from .scene_maps import map_scene

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


def adapt(
    model: ModelArg,
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
    run = prepare(
        model, target, out, method, cfg, bands, source_pairs, resume, reporter or Reporter()
    )
    if method != "source-only":
        reference_map(run)
    run_method(run, source_pairs, source_bands)
    if run.ref_pred is not None:
        verdict(run)
    return commit(run, map_path, confidence_path, keep_adapted)


# -- the stages after prepare and the method ------------------------------------------------------
def reference_map(run: AdaptRun) -> None:
    """The aligned source model's map of the scene: what the adapted model is judged against."""
    sc = run.sc
    run.ref_pred, run.ref_conf = map_scene(
        run.net,
        "source",
        sc.source,
        sc.mean,
        sc.std,
        [source_scale(sc.ratio)],
        run.cfg,
        run.device,
        run.divisor,
        StageReporter(run.report, "statistics", "source model's map"),
        run.tiles,
        run.ref_mass,
    )
    run.ref_shares = class_shares(run.ref_pred, len(run.codes))
    run.adaptation["reference_shares"] = {
        n: round(float(v), 4) for n, v in zip(run.names, run.ref_shares)
    }


def verdict(run: AdaptRun) -> None:
    """Leave out the classes absent from the reference map and judge the adapted model's map
    against the aligned source model's, both as the user gets them (:mod:`.delivered`,
    :mod:`.health`)."""
    assert run.ref_pred is not None and run.ref_shares is not None
    _switch_off_absent(run, run.ref_shares)
    soft_shares = run.ref_mass / max(1, int((run.ref_pred != NO_CLASS).sum()))
    run.ref_pred = run.ref_conf = None
    run.health = health = judge_delivered(run, soft_shares)
    run.adaptation["health"] = health.to_dict()
    log.info("%s", health.summary())
    run.report("statistics", 1.0, health.summary(), health=health.to_dict())


def _switch_off_absent(run: AdaptRun, ref_shares: np.ndarray) -> None:
    off = absent_classes(ref_shares, run.cfg.absent_share)
    switch_off(run.net, off, len(run.codes))
    run.adaptation["classes_off"] = [run.names[i] for i in off]
    if off:
        log.info(
            "left out of the adapted model (under %.1f %% of the source model's map): %s",
            100 * run.cfg.absent_share,
            ", ".join(run.adaptation["classes_off"]),
        )


def commit(
    run: AdaptRun,
    map_path: Optional[str | os.PathLike[str]],
    confidence_path: Optional[str | os.PathLike[str]],
    keep_adapted: bool,
) -> AdaptResult:
    """Settle which model goes to ``out`` and write the model files and the map together."""
    run.ref_pred = run.ref_conf = None
    run.net.eval()
    seconds = time.monotonic() - run.t0
    run.adaptation.update(
        device=str(run.device),
        seconds=round(seconds, 1),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    pending: list[tuple[Path, Path]] = []  # (complete file under a temporary name, final name)
    rejected = _settle(run, keep_adapted, pending)
    run.sc.source.close()
    result = AdaptResult(
        Path(run.out),
        run.out_card,
        run.method,
        run.rounds,
        run.losses,
        seconds,
        str(run.device),
        health=run.health,
        rejected=rejected,
    )
    if not distributed.is_main():  # rank 0 writes the files
        return result
    _write(run, result, pending, map_path, confidence_path)
    if run.checkpoint is not None:
        run.checkpoint.remove()
    return result


def _settle(run: AdaptRun, keep_adapted: bool, pending: list[tuple[Path, Path]]) -> Optional[Path]:
    """Name the result; unless the verdict is "improved" (or ``keep_adapted``), save the adapted
    model aside (to ``pending``), fall back to the aligned source model and return its path."""
    health, card, method, adaptation = run.health, run.card, run.method, run.adaptation
    if health is None or health.verdict == IMPROVED or keep_adapted:
        adaptation["result"] = "adapted model" if method != "source-only" else "source model"
        run.out_card.name = f"{card.name} (adapted: {method})"
        run.out_card.adaptation = adaptation
        return None
    rejected = rejected_path(run.out)
    adapted_card = run.out_card.copy()
    adapted_card.adaptation = {**adaptation, "result": "adapted model, rejected"}
    adapted_card.name = f"{card.name} (adapted: {method}, judged {health.verdict})"
    pending.append((part_path(rejected), rejected))
    if distributed.is_main():
        save_model(pending[-1][0], adapted_card, run.net.state_dict())
    run.net.load_state_dict(run.source_state)
    out_card = run.out_card = safe_card(run)
    adaptation["result"] = f"aligned source model (adaptation judged {health.verdict})"
    adaptation["rejected_model"] = str(rejected)
    adaptation["target_gsd"] = card.gsd
    out_card.name = f"{card.name} (aligned to {Path(run.target).name}; adaptation rejected)"
    out_card.adaptation = adaptation
    return rejected


def _write(
    run: AdaptRun,
    result: AdaptResult,
    pending: list[tuple[Path, Path]],
    map_path: Optional[str | os.PathLike[str]],
    confidence_path: Optional[str | os.PathLike[str]],
) -> None:
    """Save the model to ``out`` and map the scene with it; the files appear together (renamed
    from their temporary names), or none of them on failure or cancellation."""
    try:
        pending.append((part_path(Path(run.out)), Path(run.out)))
        save_model(pending[-1][0], run.out_card, run.net.state_dict())
        if map_path is not None:
            _map(run, result, map_path, confidence_path)
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


def _map(
    run: AdaptRun,
    result: AdaptResult,
    map_path: str | os.PathLike[str],
    confidence_path: Optional[str | os.PathLike[str]],
) -> None:
    """Map the scene with the model written (the tone chosen when the scene was opened)."""
    from ..mapping.predict import predict_raster

    pr = predict_raster(
        (run.out_card, run.net),
        run.target,
        map_path,
        bands=list(run.sc.source.bands),
        device=str(run.device),
        confidence=confidence_path,
        amp=run.cfg.amp,
        reporter=run.report,
        tone=run.sc.alignment.gamma,  # chosen when the scene was opened: not chosen again
    )
    result.map = Path(pr.output)
    result.confidence = Path(pr.confidence) if pr.confidence else None
