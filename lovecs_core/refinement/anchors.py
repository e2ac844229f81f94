"""What keeps a refitted head from forgetting the classes nobody clicked: the source model's
confident pixels on the scene (soft targets) and the labelled source sample of the model file."""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch

from ..model.card import ModelCard
from ..model.csn import csn_domain, has_csn
from ..rasters.labelled import code_lookup
from .features import RegionFeatures, SplitNetwork, sample_features
from .head import HeadWeights, Labelled

#: Anchor pixels drawn from the scene, the least confidence they need, and the radius (region
#: pixels) around a correction where none is drawn.
SCENE_ANCHORS, MIN_CONFIDENCE, CLEAR_RADIUS = 4000, 0.7, 8
#: Labelled pixels drawn from the model file's source sample.
SOURCE_PIXELS = 2000


def _balanced_pick(classes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``count`` items, as many of each class as it has, up to an equal share."""
    present = np.unique(classes)
    share = max(1, count // max(1, present.size))
    picks = [rng.permutation(np.flatnonzero(classes == c))[:share] for c in present]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def _away_from(
    rows: np.ndarray, cols: np.ndarray, clicked: Optional[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """True for pixels outside the :data:`CLEAR_RADIUS` blocks around every clicked pixel's."""
    if clicked is None or clicked[0].size == 0:
        return np.ones(rows.size, bool)
    r, stride = CLEAR_RADIUS, 1 << 32
    near = [
        (clicked[0] // r + dy) * stride + (clicked[1] // r + dx)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    return ~np.isin((rows // r) * stride + cols // r, np.concatenate(near))


def scene_anchors(
    feats: RegionFeatures,
    start: HeadWeights,
    clicked: Optional[tuple[np.ndarray, np.ndarray]] = None,
    count: int = SCENE_ANCHORS,
    seed: int = 0,
) -> Labelled:
    """Confident pixels of the source head on the region, drawn alike from each class it maps,
    away from the corrections, with the source head's probabilities as soft targets."""
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(feats.valid.ravel())
    if valid.size == 0:
        return Labelled(
            torch.zeros((0, feats.features.shape[0])), p=torch.zeros((0, start.weight.shape[0]))
        )
    drawn = rng.choice(valid, size=min(valid.size, count * 8), replace=False)
    rows, cols = np.divmod(drawn, feats.valid.shape[1])
    keep = _away_from(rows, cols, clicked)
    rows, cols = rows[keep], cols[keep]
    x = feats.at(rows, cols)
    probs = torch.softmax(start.logits(x), dim=1)
    confidence, predicted = probs.max(dim=1)
    sure = (confidence >= MIN_CONFIDENCE).numpy()
    index = np.flatnonzero(sure)[_balanced_pick(predicted.numpy()[sure], count, rng)]
    return Labelled(x[index], p=probs[index])


def source_sample_pixels(
    card: ModelCard,
    split: SplitNetwork,
    sample: Optional[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    count: int = SOURCE_PIXELS,
    seed: int = 0,
    balanced: bool = True,
) -> Optional[Labelled]:
    """Labelled pixels of the model file's source sample (``images[N, B, H, W]`` raw,
    ``labels[N, H, W]`` codes), drawn alike from each class (else at random: the sample's class
    mix), as features in the source domain."""
    if sample is None:
        return None
    images, labels = sample
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in card.stats("source"))
    x = (torch.as_tensor(images, dtype=torch.float32) - mean) / std
    net = split.net.to(device).eval()
    domain = csn_domain(net, "source") if has_csn(net) else contextlib.nullcontext()
    with domain, torch.inference_mode():
        features = split.body(x.to(device)).float().cpu()
    index = code_lookup(card.class_codes())[np.asarray(labels, np.int64)]  # -1: not a class
    crops, rows, cols = np.nonzero(index >= 0)
    rng = np.random.default_rng(seed)
    if balanced:
        pick = _balanced_pick(index[crops, rows, cols], count, rng)
    else:
        pick = np.sort(rng.choice(crops.size, size=min(count, crops.size), replace=False))
    crops, rows, cols = crops[pick], rows[pick], cols[pick]
    padded = (images.shape[2], images.shape[3])
    xs, ys = [torch.zeros((0, features.shape[1]))], [np.zeros(0, np.int64)]
    for crop in np.unique(crops):
        here = crops == crop
        xs.append(sample_features(features[crop], padded, rows[here], cols[here]))
        ys.append(index[crop, rows[here], cols[here]])
    return Labelled(torch.cat(xs), y=torch.as_tensor(np.concatenate(ys), dtype=torch.long))
