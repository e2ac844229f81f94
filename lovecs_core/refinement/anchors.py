"""What keeps a refitted head from forgetting the classes nobody clicked: the source model's
confident pixels on the scene (soft targets) and the labelled source sample of the model file."""

from __future__ import annotations

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
    """True for pixels at least :data:`CLEAR_RADIUS` from every clicked pixel (Chebyshev)."""
    keep = np.ones(rows.size, bool)
    if clicked is None or clicked[0].size == 0:
        return keep
    r = CLEAR_RADIUS
    blocked = {
        (int(y) // r + dy, int(x) // r + dx)
        for y, x in zip(*clicked)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    }
    for i, (y, x) in enumerate(zip(rows, cols)):
        if (int(y) // r, int(x) // r) in blocked:
            keep[i] = False
    return keep


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
) -> Optional[Labelled]:
    """Labelled pixels of the model file's source sample (``images[N, B, H, W]`` raw,
    ``labels[N, H, W]`` codes), drawn alike from each class, as features in the source domain."""
    if sample is None:
        return None
    images, labels = sample
    mean, std = card.stats("source")
    x = (
        torch.as_tensor(images, dtype=torch.float32) - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    net = split.net.to(device).eval()
    with csn_domain(net, "source") if has_csn(net) else torch.no_grad(), torch.inference_mode():
        features = split.body(x.to(device)).float().cpu()
    lookup = code_lookup(card.class_codes())
    index = lookup[np.asarray(labels, np.int64)]  # -1: no label or not a class
    rng = np.random.default_rng(seed)
    crops, rows, cols = np.nonzero(index >= 0)
    pick = _balanced_pick(index[crops, rows, cols], count, rng)
    crops, rows, cols = crops[pick], rows[pick], cols[pick]
    padded = (images.shape[2], images.shape[3])
    xs = (
        torch.cat(
            [
                sample_features(features[c], padded, rows[crops == c], cols[crops == c])
                for c in np.unique(crops)
            ]
        )
        if crops.size
        else torch.zeros((0, features.shape[1]))
    )
    order = (
        np.concatenate([np.flatnonzero(crops == c) for c in np.unique(crops)])
        if crops.size
        else np.zeros(0, np.int64)
    )
    y = torch.as_tensor(index[crops, rows, cols][order], dtype=torch.long)
    return Labelled(xs, y=y)
