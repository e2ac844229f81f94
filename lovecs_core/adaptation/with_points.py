"""Adaptation with the user's corrections (``lovecs adapt --points``): the whole scene adapted,
then the corrections settle what is delivered.

1. LoveCS (or the chosen method) adapts the model to the scene, label-free, as without points.
   The corrections stay out of self-training on purpose: a body trained on them could no longer
   be judged by them (every "held-out" correction would have been seen), and a first supervised
   term on them wrecked target_b (bench/RESULTS.md).
2. The head of the aligned source model and the head of the adapted model are each refitted to
   the corrections (:class:`~lovecs_core.refinement.refiner.Refiner`: a supervised term on the
   corrected pixels, anchored on the model's confident pixels and the source sample).
3. The verdict is the corrections' own: the two refitted models' accuracy on corrections they
   did not train on (the same cross-validation folds for both). The adapted one is delivered
   when it gets more of them right; otherwise the refitted source model is, and the adapted one
   is kept beside it, as the label-free check does. With too few corrections to measure, the
   label-free verdict stands, and the card says so.

Both candidates are scored on the same held-out corrections, so the comparison is paired: it
judges the adapted *body* (features) by the user's knowledge of the scene.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..contract import HARMFUL, IMPROVED, UNCERTAIN, points_folder, rejected_path
from ..mapping.predict import predict_raster
from ..model.card import read_card, read_source_sample
from ..progress import Reporter
from ..rasters.corrections import Corrections
from ..refinement.features import Region
from ..refinement.refiner import RefineOutcome, Refiner
from ..refinement.run import Prepared, describe_accuracy, prepare, sample_state
from .adapt import AdaptResult, adapt
from .health import HealthReport

log = logging.getLogger(__name__)

#: Said with every verdict the corrections give (bench/RESULTS.md: on nine scenes the lean grew
#: with the clicks).
LEAN = (
    "corrections placed on a map's errors favour the model whose map was not corrected; to "
    "choose fairly, score both maps on a random sample of points (lovecs evaluate --points)"
)


@dataclass
class Candidate:
    """A model with its head refitted to the corrections on the scene."""

    label: str
    refiner: Refiner
    region: Region
    outcome: RefineOutcome

    @property
    def correct(self) -> Optional[int]:
        """Held-out corrections it gets right (None: too few corrections to measure)."""
        refined = self.outcome.accuracy.get("refined")
        return None if not refined else int(refined["correct"])


def refitted(
    label: str,
    model: str | os.PathLike[str],
    raster: str,
    points: str | os.PathLike[str],
    sample: Optional[tuple[np.ndarray, np.ndarray]],
    *,
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
    bands: Optional[Sequence[int]] = None,
    device: str = "auto",
    reporter: Optional[Reporter] = None,
    tone: str | float = "auto",
) -> Candidate:
    """``model``'s head refitted to the corrections over the whole ``raster``."""
    prep = prepare(
        model, raster, points, class_field, layer, bands, None, device, reporter, sample, tone
    )
    return candidate(label, prep)


def candidate(label: str, prep: Prepared, corrections: Optional[Corrections] = None) -> Candidate:
    """The prepared model with its head refitted to ``corrections`` (default: its own)."""
    chosen = prep.corrections if corrections is None else corrections
    return Candidate(label, prep.refiner, prep.region, prep.refiner.refine(chosen))


def points_verdict(source: Candidate, adapted: Candidate) -> tuple[Optional[str], str]:
    """``(verdict, reason)`` from the two candidates' held-out accuracy on the corrections
    (None: too few corrections to measure)."""
    s, a = source.correct, adapted.correct
    if s is None or a is None:
        return None, str(source.outcome.accuracy.get("note", "too few corrections to measure"))
    n = int(source.outcome.accuracy["refined"]["n"])
    verdict = IMPROVED if a > s else (UNCERTAIN if a == s else HARMFUL)
    return verdict, (
        f"judged on the corrections: {a}/{n} right with the adapted model, {s}/{n} with the "
        f"source model (each head refitted on the other folds, "
        f"{source.outcome.accuracy['folds']}-fold cross-validation)"
    )


def final_verdict(points: Optional[str], health: Optional[HealthReport]) -> str:
    """The corrections' verdict; with too few corrections, the label-free check's."""
    return points or (health.verdict if health is not None else IMPROVED)


def adapt_with_points(
    model: str | os.PathLike[str],
    target: str,
    out: str | os.PathLike[str],
    points: str | os.PathLike[str],
    *,
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
    bands: Optional[Sequence[int]] = None,
    map_path: Optional[str | os.PathLike[str]] = None,
    confidence_path: Optional[str | os.PathLike[str]] = None,
    keep_adapted: bool = False,
    device: str = "auto",
    reporter: Optional[Reporter] = None,
    **adapt_options: Any,
) -> AdaptResult:
    """Adapt ``model`` to ``target``, refit both models to the corrections ``points`` and
    deliver the one the corrections judge better (``keep_adapted``: the adapted one)."""
    reporter = reporter or Reporter()
    sample = read_source_sample(model)
    folder = points_folder(Path(out).absolute())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        result = adapt(
            model, target, folder / "adapted.lovecs", bands=bands, keep_adapted=True,
            reporter=reporter, **adapt_options,
        )  # fmt: skip
        gamma = result.card.adaptation.get("alignment", {}).get("gamma", "auto")
        options: dict[str, Any] = dict(  # the tone the adaptation chose is not chosen again
            class_field=class_field, layer=layer, bands=bands, device=device, reporter=reporter,
            tone=gamma,
        )  # fmt: skip
        source = refitted("source model", model, target, points, sample, **options)
        adapted = refitted("adapted model", result.output, target, points, sample, **options)
        chosen = _deliver(result, source, adapted, out, keep_adapted, sample)
        if map_path is None:
            return chosen
        tone = source.region.tone if chosen.card.default_domain == "source" else None
        mapped = predict_raster(
            str(chosen.output), target, map_path, bands=source.region.bands, device=device,
            confidence=confidence_path, tone="off" if tone is None else tone,
        )  # fmt: skip
        confidence = Path(mapped.confidence) if mapped.confidence else None
        return dataclasses.replace(chosen, map=Path(mapped.output), confidence=confidence)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _deliver(
    result: AdaptResult,
    source: Candidate,
    adapted: Candidate,
    out: str | os.PathLike[str],
    keep_adapted: bool,
    sample: Optional[tuple[np.ndarray, np.ndarray]],
) -> AdaptResult:
    """Save the chosen refitted model to ``out`` (the adapted one aside when it is not chosen)
    and return the result with the corrections' verdict in its card and health."""
    verdict, reason = points_verdict(source, adapted)
    chosen_verdict = final_verdict(verdict, result.health)
    use_adapted = keep_adapted or chosen_verdict == IMPROVED
    chosen = adapted if use_adapted else source
    record = {
        "verdict": verdict,
        "reason": reason,
        "source": source.outcome.accuracy,
        "adapted": adapted.outcome.accuracy,
        "delivered": chosen.label,
        "caution": LEAN if verdict else None,
    }
    log.info("%s; %s", reason, describe_accuracy(chosen.outcome.accuracy))
    for candidate in (source, adapted):
        kept = "" if candidate is chosen else "; not delivered"
        candidate.refiner.card.adaptation = {
            **result.card.adaptation,
            "corrections": record,
            "result": f"{candidate.label}, its head refitted to the corrections{kept}",
        }
    state = sample_state(sample)
    saved = chosen.refiner.save(chosen.outcome.weights, out, chosen.outcome, state)
    rejected = None
    if not use_adapted:
        rejected = rejected_path(Path(out))
        adapted.refiner.save(adapted.outcome.weights, rejected, adapted.outcome, state)
    health = result.health
    if health is not None:
        said = f"the label-free check said {health.verdict}" + (
            f" ({'; '.join(health.reasons)})" if health.reasons else ""
        )
        reasons = [reason, LEAN, said] if verdict else [reason, said]
        health = dataclasses.replace(health, verdict=chosen_verdict, reasons=reasons)
    return dataclasses.replace(
        result, output=Path(saved), card=read_card(saved), health=health, rejected=rejected
    )
