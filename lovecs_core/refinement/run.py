"""``lovecs refine`` without a window: a model refined on a raster's corrections, saved as a
model file whose card records them, and the raster mapped with it."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..compute.device import resolve_device
from ..mapping.predict import predict_raster
from ..model.card import SAMPLE_IMAGES, SAMPLE_LABELS, ModelCard, read_source_sample
from ..model.networks import model_from_file
from ..progress import Reporter
from ..rasters.corrections import Corrections, read_corrections
from .features import Region, open_region, region_features
from .refiner import RefineOutcome, Refiner

log = logging.getLogger(__name__)


def sample_state(sample: Optional[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The model file's source sample as the tensors a saved model carries along."""
    if sample is None:
        return {}
    return {SAMPLE_IMAGES: torch.as_tensor(sample[0]), SAMPLE_LABELS: torch.as_tensor(sample[1])}


@dataclass
class Prepared:
    """A model loaded for refinement on one region, with the region's corrections."""

    card: ModelCard
    refiner: Refiner
    region: Region
    corrections: Corrections
    sample: Optional[tuple[np.ndarray, np.ndarray]]


def prepare(
    model: str | os.PathLike[str],
    raster: str,
    points: str | os.PathLike[str],
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
    bands: Optional[Sequence[int]] = None,
    extent: Optional[Sequence[float]] = None,
    device: str = "auto",
    reporter: Optional[Reporter] = None,
    sample: Optional[tuple[np.ndarray, np.ndarray]] = None,
    tone: str | float = "auto",
) -> Prepared:
    """Load the model, read the corrections on the region's grid and compute its features;
    the anchors' source sample is ``sample``, else the one in the model file; ``tone`` as
    ``lovecs predict --tone`` (a gamma already chosen is not chosen again)."""
    card, net = model_from_file(str(model))
    dev = resolve_device(device)
    sample = sample if sample is not None else read_source_sample(model)
    region = open_region(card, net, raster, bands, extent, tone)
    corrections = read_corrections(points, region.grid, card.class_codes(), class_field, layer)
    for problem in corrections.problems:
        log.warning("%s: %s", points, problem)
    refiner = Refiner(card, net, dev, sample)
    refiner.use_region(region, region_features(card, refiner.split, region, dev, reporter))
    return Prepared(card, refiner, region, corrections, sample)


def describe_accuracy(accuracy: dict[str, Any]) -> str:
    """One line: accuracy of the source and the refined model on held-out corrections."""

    def part(name: str, score: Optional[dict[str, Any]]) -> str:
        if not score or score.get("oa") is None:
            return f"{name}: not measured"
        low, high = score["ci"]
        return (
            f"{name} {100 * score['oa']:.0f} % ({score['correct']}/{score['n']}, "
            f"95 % CI {100 * low:.0f}-{100 * high:.0f} %)"
        )

    text = (
        f"accuracy on corrections not trained on: {part('source model', accuracy.get('source'))}; "
    )
    text += part("refined", accuracy.get("refined"))
    if accuracy.get("folds"):
        text += f" ({accuracy['folds']}-fold cross-validation over {accuracy['n']} corrections)"
    if accuracy.get("note"):
        text += f"; {accuracy['note']}"
    return text


def refine_raster(
    model: str | os.PathLike[str],
    raster: str,
    points: str | os.PathLike[str],
    out: str | os.PathLike[str],
    map_path: Optional[str | os.PathLike[str]] = None,
    *,
    class_field: Optional[str] = None,
    layer: Optional[str] = None,
    bands: Optional[Sequence[int]] = None,
    extent: Optional[Sequence[float]] = None,
    device: str = "auto",
    reporter: Optional[Reporter] = None,
) -> dict[str, Any]:
    """Refine ``model`` on the corrections ``points`` over ``raster`` (or its ``extent``); save
    the refined model to ``out`` and, with ``map_path``, map the raster (or extent) with it."""
    start = time.perf_counter()
    reporter = reporter or Reporter()
    prep = prepare(model, raster, points, class_field, layer, bands, extent, device, reporter)
    outcome: RefineOutcome = prep.refiner.refine(prep.corrections)
    log.info("%s", describe_accuracy(outcome.accuracy))
    saved = prep.refiner.save(outcome.weights, out, outcome, sample_state(prep.sample))
    result: dict[str, Any] = {
        "output": str(saved),
        "corrections": prep.corrections.summary(),
        "problems": prep.corrections.problems,
        "accuracy": outcome.accuracy,
    }
    if map_path is not None:
        pr = predict_raster(
            str(saved),
            raster,
            map_path,
            bands=prep.region.bands,
            extent=None if extent is None else (extent[0], extent[1], extent[2], extent[3]),
            device=device,
            reporter=reporter,
            tone=prep.region.tone if prep.region.tone is not None else "off",
        )
        result["map"] = str(pr.output)
    result["seconds"] = time.perf_counter() - start
    return result
