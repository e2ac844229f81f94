"""Multi-scale, class-balanced pseudo-labels (LoveCS), with selection rules that cannot
bootstrap a class out of noise.

Per class ``c``, the ``portion`` most confident of the pixels predicted as ``c`` are kept (CBST's
class balance), with three guards:

* **minimum support**: a class predicted on less than ``min_share`` of the scene gets no
  pseudo-labels (scattered noise is not a class of this scene);
* **confidence floor**: no pseudo-label below ``min_confidence``;
* **priors**: the class shares of the aligned source model's map (round 1) bound every later
  round: a class with a prior below ``min_share`` stays unlabelled, and a class's candidates are
  capped at ``max(prior_cap * prior, prior + 0.05)`` of the scene, so a class that starts to flood
  the scene does not get more pseudo-labels for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..compute.oom import ChunkedBatch
from ..compute.runtime import autocast, round_up
from ..progress import Reporter
from ..rasters.labelled import RasterSource

#: Multi-scale span relative to the GSD ratio r: the paper's x2..x3.5 for r ~ 3.
SCALE_SPAN = (2.0 / 3.0, 7.0 / 6.0)
NO_CLASS = 255  # "not predicted" in the per-pixel prediction arrays
CONF_SCALE = 65535  # scene confidences are kept as uint16: round(probability * CONF_SCALE)


@dataclass
class SelectionRules:
    """Guards of the class-balanced selection (see the module docstring)."""

    portion: float = 0.1
    min_share: float = 0.005
    min_confidence: float = 0.5
    prior_cap: float = 2.0


def gsd_scales(
    source_gsd: Optional[float],
    target_gsd: Optional[float],
    n: int = 4,
    span: tuple[float, float] = SCALE_SPAN,
) -> list[float]:
    """Upsampling factors for pseudo-labelling: ``n`` values evenly spanning
    ``[r * span[0], r * span[1]]`` for ``r = target_gsd / source_gsd`` (1 when unknown),
    clipped to >= min(1, r) (never smaller than the source scale, nor than 1 for a coarser
    target) and de-duplicated; ``n = 1`` gives ``[r]``."""
    r = target_gsd / source_gsd if source_gsd and target_gsd else 1.0
    values = [r] if n <= 1 else list(np.linspace(r * span[0], r * span[1], n))
    floor = min(1.0, r)
    out: list[float] = []
    for v in values:
        v = round(max(floor, float(v)), 4)
        if v not in out:
            out.append(v)
    return out


@torch.no_grad()
def multiscale_probabilities(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float], divisor: int = 1
) -> torch.Tensor:
    """Softmax averaged over scales: the batch is resized by each factor (bilinear; sides rounded
    up to a multiple of ``divisor``), forwarded, and the probabilities are brought back to the
    input size (area averaging when shrinking)."""
    h, w = images.shape[-2:]
    total: Optional[torch.Tensor] = None
    for s in scales:
        size = (round_up(max(1, round(h * s)), divisor), round_up(max(1, round(w * s)), divisor))
        x = (
            images
            if size == (h, w)
            else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        )
        probs = torch.softmax(model(x).float(), dim=1)
        if probs.shape[-2:] != (h, w):
            shrink = probs.shape[-2] >= h and probs.shape[-1] >= w
            probs = (
                F.interpolate(probs, size=(h, w), mode="area")
                if shrink
                else F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            )
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(scales)


def tile_chunks(batch: int) -> ChunkedBatch:
    """How many tiles :func:`predict_scene` forwards at a time (halved on out-of-memory)."""
    return ChunkedBatch(
        batch, "pseudo-labelling tiles", "choose a smaller --pl-tile, or run on the CPU"
    )


def predict_scene(
    model: nn.Module,
    scene: RasterSource,
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float],
    *,
    device: torch.device,
    tile: int = 256,
    margin: int = 16,
    batch: int = 4,
    amp: bool = True,
    divisor: int = 1,
    reporter: Optional[Reporter] = None,
    chunks: Optional[ChunkedBatch] = None,
    part: Optional[tuple[int, int]] = None,
    mass: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale prediction over the whole scene in tiles (each with ``margin`` pixels of
    context), ``batch`` tiles at a time (fewer when the GPU runs out of memory: pass the same
    ``chunks`` from :func:`tile_chunks` to every call of a run to keep the smaller size). Returns
    ``(class index uint8[H, W], NO_CLASS where invalid; confidence uint16[H, W] = round(max
    probability * CONF_SCALE), 0 where invalid)``: 3 bytes a pixel. The model's mode and CSN
    domain are the caller's. ``part = (r, n)``: only tiles ``r, r + n, r + 2n ...`` (row-major)
    are mapped, the others left NO_CLASS / 0 (:meth:`.distributed.Session.combine_maps`).
    ``mass`` (float64[classes]): each class's probabilities over the mapped valid pixels are
    added to it (divided by the pixel count: the map's soft class shares, see .health)."""
    report = reporter or Reporter()
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    sd = np.asarray(std, dtype=np.float32)[:, None, None]
    pred = np.full((scene.height, scene.width), NO_CLASS, dtype=np.uint8)
    conf = np.zeros((scene.height, scene.width), dtype=np.uint16)
    origins = [(x, y) for y in range(0, scene.height, tile) for x in range(0, scene.width, tile)]
    if part is not None:
        origins = origins[part[0] :: part[1]]
    side = tile + 2 * margin
    pending: list[tuple[int, int, np.ndarray]] = []

    chunks = chunks or tile_chunks(batch)

    def flush() -> None:
        stacked = torch.from_numpy(np.stack([p[2] for p in pending]))
        parts: list[tuple[np.ndarray, np.ndarray]] = []

        def forward(items: slice, _share: float) -> None:
            x = stacked[items].to(device)
            valid_stack = x[:, -1] > 0
            with autocast(device, amp):
                probs = multiscale_probabilities(model, x[:, :-1], scales, divisor)
            c, k = probs.max(dim=1)
            if mass is not None:
                add_class_mass(mass, probs, valid_stack, margin, tile)
            k = torch.where(valid_stack, k, torch.full_like(k, NO_CLASS))
            c = torch.where(valid_stack, c, torch.zeros_like(c))
            parts.append(
                (
                    torch.round(c * CONF_SCALE).cpu().numpy().astype(np.uint16),
                    k.cpu().numpy().astype(np.uint8),
                )
            )

        chunks.run(len(pending), forward, parts.clear)
        c_np = np.concatenate([c for c, _ in parts])
        k_np = np.concatenate([k for _, k in parts])
        for (x0, y0, _), ci, ki in zip(pending, c_np, k_np):
            th, tw = min(tile, scene.height - y0), min(tile, scene.width - x0)
            pred[y0 : y0 + th, x0 : x0 + tw] = ki[margin : margin + th, margin : margin + tw]
            conf[y0 : y0 + th, x0 : x0 + tw] = ci[margin : margin + th, margin : margin + tw]
        pending.clear()

    for n, (x0, y0) in enumerate(origins):
        data, valid, _ = scene.read_padded(x0 - margin, y0 - margin, side, side)
        if valid.any():
            normed = np.where(valid[None], (data - m) / sd, 0.0).astype(np.float32)
            pending.append((x0, y0, np.concatenate([normed, valid[None].astype(np.float32)])))
        if len(pending) >= batch:
            flush()
        report(
            "pseudo-labels",
            (n + 1) / len(origins),
            f"tile {n + 1}/{len(origins)}",
            tile=n + 1,
            tiles=len(origins),
        )
    if pending:
        flush()
    return pred, conf


def add_class_mass(
    mass: np.ndarray, probs: torch.Tensor, valid: torch.Tensor, margin: int, tile: int
) -> None:
    """Add each class's probabilities over the valid pixels of the tiles' interiors (the pixels
    :func:`predict_scene` writes; what lies outside the scene is not valid) to ``mass``."""
    core = slice(margin, margin + tile)
    p = probs[:, :, core, core].float() * valid[:, None, core, core]
    mass += p.sum(dim=(0, 2, 3)).double().cpu().numpy()


def class_thresholds(
    pred: np.ndarray,
    conf: np.ndarray,
    num_classes: int,
    portion: float,
    max_samples: int = 20_000_000,
    seed: int = 0,
    rules: Optional[SelectionRules] = None,
    priors: Optional[Sequence[float] | np.ndarray] = None,
) -> np.ndarray:
    """Per class ``c``: the confidence of the ``max(1, floor(n_c * portion))``-th most confident
    of the ``n_c`` pixels predicted as ``c`` (so keeping ``conf >= threshold`` keeps the top
    ``portion``; ties at the threshold are kept too); ``inf`` for classes never predicted. With
    ``rules`` (and ``priors``), the guards of the module docstring apply. Very large inputs are
    subsampled evenly to about ``max_samples`` pixels."""
    p, c = pred.ravel(), conf.ravel()
    if p.size > max_samples:
        step = int(math.ceil(p.size / max_samples))
        offset = int(np.random.default_rng(seed).integers(step))
        p, c = p[offset::step], c[offset::step]
    valid = int((p < num_classes).sum())
    thresholds = np.full(num_classes, np.inf, dtype=np.float64)
    for k in range(num_classes):
        values = c[p == k]
        if values.size == 0:
            continue
        allowed = values.size
        if rules is not None:
            if values.size < rules.min_share * valid:
                continue
            if priors is not None:
                if priors[k] < rules.min_share:
                    continue
                cap = max(rules.prior_cap * priors[k], priors[k] + 0.05) * valid
                allowed = min(allowed, int(cap))
        keep = max(1, int(math.floor(allowed * portion)))
        thresholds[k] = float(np.partition(values, values.size - keep)[values.size - keep])
        if rules is not None:
            thresholds[k] = max(thresholds[k], rules.min_confidence * CONF_SCALE)
    return thresholds


def select_pseudo_labels(
    pred: np.ndarray, conf: np.ndarray, thresholds: np.ndarray, codes: Sequence[int]
) -> np.ndarray:
    """Class codes (uint8) where the confidence reaches the predicted class's threshold, 0
    (ignored) elsewhere and where nothing was predicted."""
    code_of = np.zeros(256, dtype=np.uint8)
    code_of[: len(codes)] = np.asarray(codes, dtype=np.uint8)
    known = pred < len(codes)
    thr = np.full(pred.shape, np.inf)
    thr[known] = thresholds[pred[known]]
    keep = known & (conf >= thr)
    return np.where(keep, code_of[pred], 0).astype(np.uint8)


def class_balanced_pseudo_labels(
    pred: np.ndarray,
    conf: np.ndarray,
    codes: Sequence[int],
    portion: float,
    rules: Optional[SelectionRules] = None,
    priors: Optional[Sequence[float] | np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudo-label codes uint8, thresholds)``: :func:`class_thresholds` then
    :func:`select_pseudo_labels`."""
    thresholds = class_thresholds(pred, conf, len(codes), portion, rules=rules, priors=priors)
    return select_pseudo_labels(pred, conf, thresholds, codes), thresholds
