"""The refiner: a model's head refitted to the corrections on one region's features, its
accuracy measured on corrections it did not train on, and the region re-mapped."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..evaluation.points import wilson_interval
from ..mapping.writer import PredictionWriter
from ..model.card import ModelCard, save_model
from ..model.card_fields import HEAD_CONTEXT, HEAD_FEATURES
from ..model.networks import widen_classifier
from ..model.wide_head import WideHead
from ..rasters.corrections import Corrections
from ..rasters.labelled import code_lookup
from ..rasters.qml import qml_path, write_qml
from .anchors import scene_anchors, source_sample_pixels
from .features import Region, RegionFeatures, map_region, split_network
from .head import HeadWeights, Labelled, corrections_weight, fit_head

#: Cross-validation folds over the corrections, and the fewest corrections that are measured.
FOLDS, MIN_MEASURED = 5, 10


def _score(correct: int, n: int) -> dict[str, Any]:
    """Share correct with its 95 % Wilson interval."""
    low, high = wilson_interval(correct, n) if n else (0.0, 1.0)
    return {
        "correct": correct,
        "n": n,
        "oa": correct / n if n else None,
        "ci": [float(low), float(high)],
    }


def _feature_votes(predicted: np.ndarray, feature: np.ndarray) -> dict[int, int]:
    """Each feature's majority prediction over its pixels."""
    votes: dict[int, int] = {}
    for fid in np.unique(feature):
        values, counts = np.unique(predicted[feature == fid], return_counts=True)
        votes[int(fid)] = int(values[np.argmax(counts)])
    return votes


@dataclass
class RefineOutcome:
    """A refit: the head, the corrections it used, its accuracy on held-out corrections."""

    weights: HeadWeights
    corrections: Corrections
    accuracy: dict[str, Any]


class Refiner:
    """Holds a model, its source head, the labelled source pixels, and one region's features."""

    def __init__(
        self,
        card: ModelCard,
        net: nn.Module,
        device: torch.device,
        sample: Optional[tuple[np.ndarray, np.ndarray]] = None,
        widen: bool = True,
    ) -> None:
        """``widen``: give a plain classifier random features (in place; it maps as before)."""
        if widen:
            widen_classifier(net)
        self.card, self.net, self.device = card, net, device
        self.split = split_network(net)
        self.source_head = HeadWeights.of(self.split.head)
        self.source_pixels = source_sample_pixels(card, self.split, sample, device)
        self.lookup = code_lookup(card.class_codes())
        self.codes = np.asarray(card.class_codes(), np.uint8)
        self.region: Optional[Region] = None
        self.feats: Optional[RegionFeatures] = None

    def use_region(self, region: Region, feats: RegionFeatures) -> None:
        self.region, self.feats = region, feats

    def _clicks(self, corrections: Corrections) -> Labelled:
        """The corrections' pixels as features with class indices."""
        assert self.feats is not None
        y = torch.as_tensor(self.lookup[corrections.codes.astype(np.int64)], dtype=torch.long)
        return Labelled(self.feats.at(corrections.rows, corrections.cols), y=y)

    def _anchors(self, corrections: Corrections) -> Labelled:
        assert self.feats is not None
        return scene_anchors(self.feats, self.source_head, (corrections.rows, corrections.cols))

    def _fit(self, clicks: Labelled, anchors: Labelled, count: int) -> HeadWeights:
        """The head fitted to ``clicks``, the pixels of ``count`` corrections."""
        return fit_head(
            self.source_head,
            clicks,
            anchors,
            self.source_pixels,
            corrections_weight=corrections_weight(count),
        )

    def fit(self, corrections: Corrections) -> HeadWeights:
        """The head fitted to the corrections, from the source head."""
        return self._fit(
            self._clicks(corrections), self._anchors(corrections), corrections.features_used
        )

    def _codes(self, weights: HeadWeights, x: torch.Tensor) -> np.ndarray:
        return self.codes[weights.logits(x).argmax(dim=1).numpy()]

    def cross_validate(
        self, corrections: Corrections, clicks: Labelled, anchors: Labelled, folds: int = FOLDS
    ) -> dict[str, Any]:
        """Accuracy on corrections not trained on: folds over the features (a polygon's pixels
        stay together), one vote a feature; the source model is scored on all of them."""
        feature = corrections.feature
        ids = np.unique(feature)
        truth = _feature_votes(corrections.codes, feature)
        source = _feature_votes(self._codes(self.source_head, clicks.x), feature)
        result: dict[str, Any] = {"unit": "feature", "n": int(ids.size)}
        result["source"] = _score(sum(source[f] == truth[f] for f in truth), len(truth))
        if ids.size < MIN_MEASURED:
            result["refined"] = None
            result["note"] = (
                f"{ids.size} correction(s): at least {MIN_MEASURED} are needed to measure"
            )
            return result
        k = min(folds, int(ids.size))
        fold_of = {int(f): i % k for i, f in enumerate(np.random.default_rng(0).permutation(ids))}
        pixel_fold = np.array([fold_of[int(f)] for f in feature])
        correct = 0
        for fold in range(k):
            held = pixel_fold == fold
            assert clicks.y is not None
            trained = Labelled(clicks.x[~held], y=clicks.y[~held])
            weights = self._fit(trained, anchors, int(np.unique(feature[~held]).size))
            votes = _feature_votes(self._codes(weights, clicks.x[held]), feature[held])
            correct += sum(votes[f] == truth[f] for f in votes)
        result["refined"] = _score(correct, int(ids.size))
        result["folds"] = k
        return result

    def refine(self, corrections: Corrections, measure: bool = True) -> RefineOutcome:
        """The head fitted to all corrections and, with ``measure``, its cross-validated
        accuracy (the anchors are drawn once for all folds)."""
        clicks, anchors = self._clicks(corrections), self._anchors(corrections)
        accuracy = self.cross_validate(corrections, clicks, anchors) if measure else {}
        weights = self._fit(clicks, anchors, corrections.features_used)
        return RefineOutcome(weights, corrections, accuracy)

    def map_codes(self, weights: HeadWeights) -> np.ndarray:
        """Class codes ``[H, W]`` of the region under ``weights`` (0: nodata)."""
        assert self.feats is not None
        codes = self.codes[map_region(weights, self.feats)]
        codes[~self.feats.valid] = 0
        return codes

    def write_map(self, weights: HeadWeights, path: str | os.PathLike[str]) -> Path:
        """Write the region's map under ``weights`` (GeoTIFF with the card's colours, + .qml)."""
        assert self.region is not None
        codes = self.map_codes(weights)
        grid = self.region.grid
        writer = PredictionWriter(
            path,
            grid.RasterXSize,
            grid.RasterYSize,
            grid.GetGeoTransform(can_return_null=True),
            grid.GetProjection(),
            self.card.classes,
            metadata={"LOVECS_MODEL": self.card.name, "LOVECS_REFINED": "view"},
        )
        try:
            writer.write(0, codes)
            writer.commit(overviews=False)
        except BaseException:
            writer.abort()
            raise
        write_qml(qml_path(Path(path)), self.card.classes)
        return Path(path)

    def save(
        self,
        weights: HeadWeights,
        out: str | os.PathLike[str],
        outcome: Optional[RefineOutcome],
        sample: Any = None,
    ) -> Path:
        """Save the model with ``weights`` as its head; the card records the corrections used."""
        net = copy.deepcopy(self.net).cpu()
        head = split_network(net).head
        weights.install(head)
        card = copy.deepcopy(self.card)
        if isinstance(head, WideHead):
            card.architecture[HEAD_FEATURES] = int(head.projection.shape[0])
            if head.context:
                card.architecture[HEAD_CONTEXT] = head.context
        if outcome is not None:
            card.provenance = dict(card.provenance)
            card.provenance["refinement"] = {
                "corrections": outcome.corrections.summary(),
                "accuracy": outcome.accuracy,
                "method": "head (with its context window and random ReLU features) refitted to the corrections, anchored on the source model's confident pixels and the model file's source sample",
            }
            card.name = f"{self.card.name} (refined)"
        state = dict(net.state_dict())
        if sample is not None:
            state.update(sample)
        return save_model(out, card, state)
