"""Adaptation of a source model to one unlabelled target scene (transductive, as in LoveCS).

Methods (one code path):

* ``source-only``: the source model unchanged; maps are made in the source domain.
* ``adabn``: target-domain CSN statistics recomputed from target windows (no training); the
  scene is upsampled to the source GSD, since an untrained model only knows the source scale.
* ``cbst``: class-balanced self-training with single-scale pseudo-labels and one set of
  normalisation statistics shared by both domains (everything forwarded in the source domain).
* ``lovecs``: cross-sensor normalisation (separate source/target statistics; source and target
  batches always forwarded separately) + multi-scale class-balanced self-training.

Self-training: per-band target statistics from the scene itself; rounds of pseudo-labelling in
eval mode (target CSN for ``lovecs``) with softmax averaged over scales derived from the
source/target GSD ratio, class-balanced selection (per class, the ``portion`` most confident of
the pixels predicted as that class; the rest ignored), then training with
``source_weight * CE(source) + pseudo_weight * CE(pseudo-labels)``; pseudo-labels are refreshed
every ``refresh_every`` iterations.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .card import ModelCard, save_model
from .csn import copy_source_to_target, csn_domain, csn_layers, has_csn, replace_bn_with_csn
from .data import IN_MEMORY_PIXELS, RasterSource, WindowSampler, band_statistics, open_sources
from .models import input_divisor
from .presets import PRESETS
from .progress import Reporter
from .raster import pixel_size_metres
from .train import (autocast, clip_and_step, grad_scaler, make_optimizer, masked_cross_entropy,
                    poly_lr, resolve_device, round_up, seed_everything, set_lr)

log = logging.getLogger(__name__)

METHODS = ("source-only", "adabn", "cbst", "lovecs")
#: Multi-scale span relative to the GSD ratio r: the paper's x2..x3.5 for r ~ 3.
SCALE_SPAN = (2.0 / 3.0, 7.0 / 6.0)
NO_CLASS = 255  # "not predicted" in the per-pixel prediction arrays
CONF_SCALE = 65535  # scene confidences are kept as uint16: round(probability * CONF_SCALE)


class AdaptError(ValueError):
    """Adaptation cannot run as asked; the message says why and what to do."""


@dataclass
class AdaptConfig:
    """Adaptation settings; :data:`PRESETS` fills them, every one can be overridden."""

    iterations: int = 5000          # self-training iterations in all
    refresh_every: int = 2000       # pseudo-labels regenerated every K iterations
    batch_size: int = 8             # per domain
    crop: int = 512
    lr: float = 0.01 * (1.0 / 3.0) ** 0.9  # the paper's poly schedule continued from 10k of 15k
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    grad_clip: float = 35.0
    portion: float = 0.1            # class-balanced: top 10 % per predicted class
    source_weight: float = 1.0
    pseudo_weight: float = 0.5
    scales: Optional[list[float]] = None  # None: derived from the GSD ratio
    n_scales: int = 4
    scale_range: tuple[float, float] = (0.5, 1.75)  # training-window scale augmentation
    pl_tile: int = 256              # pseudo-labelling tile side, native target pixels
    pl_margin: int = 16             # context around each tile, native pixels
    pl_batch: int = 4
    bn_windows: int = 64            # adabn: target windows for the statistics
    seed: Optional[int] = 0
    device: str = "auto"
    amp: bool = True
    in_memory_pixels: int = IN_MEMORY_PIXELS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)




def make_config(preset: str = "standard", **overrides: Any) -> AdaptConfig:
    """An :class:`AdaptConfig` from a preset, with ``None`` overrides ignored."""
    if preset not in PRESETS:
        raise AdaptError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(AdaptConfig)}
    if unknown:
        raise AdaptError(f"unknown adaptation settings {sorted(unknown)}")
    return AdaptConfig(**values)


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


# -- multi-scale, class-balanced pseudo-labels -----------------------------------------------------
def gsd_scales(source_gsd: Optional[float], target_gsd: Optional[float], n: int = 4,
               span: tuple[float, float] = SCALE_SPAN) -> list[float]:
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
def multiscale_probabilities(model: nn.Module, images: torch.Tensor, scales: Sequence[float],
                             divisor: int = 1) -> torch.Tensor:
    """Softmax averaged over scales: the batch is resized by each factor (bilinear; sides rounded
    up to a multiple of ``divisor``), forwarded, and the probabilities are brought back to the
    input size (area averaging when shrinking)."""
    h, w = images.shape[-2:]
    total: Optional[torch.Tensor] = None
    for s in scales:
        size = (round_up(max(1, round(h * s)), divisor), round_up(max(1, round(w * s)), divisor))
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear",
                                                        align_corners=False)
        probs = torch.softmax(model(x).float(), dim=1)
        if probs.shape[-2:] != (h, w):
            shrink = probs.shape[-2] >= h and probs.shape[-1] >= w
            probs = F.interpolate(probs, size=(h, w), mode="area") if shrink else \
                F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(scales)


def predict_scene(model: nn.Module, scene: RasterSource, mean: Sequence[float],
                  std: Sequence[float], scales: Sequence[float], *, device: torch.device,
                  tile: int = 256, margin: int = 16, batch: int = 4, amp: bool = True,
                  divisor: int = 1, reporter: Optional[Reporter] = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale prediction over the whole scene in tiles (each with ``margin`` pixels of
    context). Returns ``(class index uint8[H, W], NO_CLASS where invalid; confidence
    uint16[H, W] = round(max probability * CONF_SCALE), 0 where invalid)``: 3 bytes a pixel.
    The model's mode and CSN domain are the caller's."""
    report = reporter or Reporter()
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    sd = np.asarray(std, dtype=np.float32)[:, None, None]
    pred = np.full((scene.height, scene.width), NO_CLASS, dtype=np.uint8)
    conf = np.zeros((scene.height, scene.width), dtype=np.uint16)
    origins = [(x, y) for y in range(0, scene.height, tile) for x in range(0, scene.width, tile)]
    side = tile + 2 * margin
    pending: list[tuple[int, int, np.ndarray]] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack([p[2] for p in pending])).to(device)
        valid_stack = x[:, -1] > 0
        with autocast(device, amp):
            probs = multiscale_probabilities(model, x[:, :-1], scales, divisor)
        c, k = probs.max(dim=1)
        k = torch.where(valid_stack, k, torch.full_like(k, NO_CLASS))
        c = torch.where(valid_stack, c, torch.zeros_like(c))
        c_np = torch.round(c * CONF_SCALE).cpu().numpy().astype(np.uint16)
        k_np = k.cpu().numpy().astype(np.uint8)
        for (x0, y0, _), ci, ki in zip(pending, c_np, k_np):
            th, tw = min(tile, scene.height - y0), min(tile, scene.width - x0)
            pred[y0:y0 + th, x0:x0 + tw] = ki[margin:margin + th, margin:margin + tw]
            conf[y0:y0 + th, x0:x0 + tw] = ci[margin:margin + th, margin:margin + tw]
        pending.clear()

    for n, (x0, y0) in enumerate(origins):
        data, valid, _ = scene.read_padded(x0 - margin, y0 - margin, side, side)
        if valid.any():
            normed = np.where(valid[None], (data - m) / sd, 0.0).astype(np.float32)
            pending.append((x0, y0, np.concatenate([normed, valid[None].astype(np.float32)])))
        if len(pending) >= batch:
            flush()
        report("pseudo-labels", (n + 1) / len(origins), f"tile {n + 1}/{len(origins)}",
               tile=n + 1, tiles=len(origins))
    if pending:
        flush()
    return pred, conf


def class_thresholds(pred: np.ndarray, conf: np.ndarray, num_classes: int, portion: float,
                     max_samples: int = 20_000_000, seed: int = 0) -> np.ndarray:
    """Per class ``c``: the confidence of the ``max(1, floor(n_c * portion))``-th most confident
    of the ``n_c`` pixels predicted as ``c`` (so keeping ``conf >= threshold`` keeps the top
    ``portion``; ties at the threshold are kept too); ``inf`` for classes never predicted. Very
    large inputs are subsampled evenly to about ``max_samples`` pixels."""
    p, c = pred.ravel(), conf.ravel()
    if p.size > max_samples:
        step = int(math.ceil(p.size / max_samples))
        offset = int(np.random.default_rng(seed).integers(step))
        p, c = p[offset::step], c[offset::step]
    thresholds = np.full(num_classes, np.inf, dtype=np.float64)
    for k in range(num_classes):
        values = c[p == k]
        if values.size == 0:
            continue
        keep = max(1, int(math.floor(values.size * portion)))
        thresholds[k] = float(np.partition(values, values.size - keep)[values.size - keep])
    return thresholds


def select_pseudo_labels(pred: np.ndarray, conf: np.ndarray, thresholds: np.ndarray,
                         codes: Sequence[int]) -> np.ndarray:
    """Class codes (uint8) where the confidence reaches the predicted class's threshold, 0
    (ignored) elsewhere and where nothing was predicted."""
    code_of = np.zeros(256, dtype=np.uint8)
    code_of[:len(codes)] = np.asarray(codes, dtype=np.uint8)
    known = pred < len(codes)
    thr = np.full(pred.shape, np.inf)
    thr[known] = thresholds[pred[known]]
    keep = known & (conf >= thr)
    return np.where(keep, code_of[pred], 0).astype(np.uint8)


def class_balanced_pseudo_labels(pred: np.ndarray, conf: np.ndarray, codes: Sequence[int],
                                 portion: float) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudo-label codes uint8, thresholds)``: :func:`class_thresholds` then
    :func:`select_pseudo_labels`."""
    thresholds = class_thresholds(pred, conf, len(codes), portion)
    return select_pseudo_labels(pred, conf, thresholds, codes), thresholds


# -- AdaBN -----------------------------------------------------------------------------------------
@torch.no_grad()
def recompute_target_statistics(model: nn.Module, sampler: WindowSampler, windows: int,
                                batch: int, device: torch.device, amp: bool = True,
                                reporter: Optional[Reporter] = None) -> None:
    """AdaBN: reset the target CSN statistics and re-estimate them (cumulative average) by
    forwarding ``windows`` target windows in train mode, without gradients."""
    report = reporter or Reporter()
    layers = csn_layers(model)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = None
        layer.target_running_mean.zero_()
        layer.target_running_var.fill_(1.0)
        layer.target_num_batches_tracked.zero_()
    was_training = model.training
    model.train()
    done = 0
    try:
        with csn_domain(model, "target"):
            while done < windows:
                n = min(batch, windows - done)
                images, _ = sampler.sample(n)
                with autocast(device, amp):
                    model(torch.from_numpy(images).to(device))
                done += n
                report("statistics", done / windows, f"target windows {done}/{windows}")
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)


# -- the adaptation driver -------------------------------------------------------------------------
def source_pairs_from_card(card: ModelCard) -> list[tuple[Path, Path]]:
    """The labelled source data recorded in the card's provenance (files must still exist)."""
    images = card.provenance.get("source_images") or []
    labels = card.provenance.get("source_labels") or []
    if not images or len(images) != len(labels):
        return []
    pairs = [(Path(i), Path(l)) for i, l in zip(images, labels)]
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise AdaptError(f"the source data recorded in the model card is missing "
                         f"({len(missing)} file(s), e.g. {missing[0]}); pass the source images and "
                         f"labels explicitly (--source-images/--source-labels)")
    return pairs


def _load(model: str | os.PathLike[str] | tuple[ModelCard, nn.Module]
          ) -> tuple[ModelCard, nn.Module]:
    if isinstance(model, tuple):
        card, net = model
        return card.copy(), net
    from .models import model_from_file

    return model_from_file(str(model))


def adapt(model: str | os.PathLike[str] | tuple[ModelCard, nn.Module],
          target: str | os.PathLike[str], out: str | os.PathLike[str], *,
          method: str = "lovecs", config: Optional[AdaptConfig] = None,
          bands: Optional[Sequence[int]] = None,
          source_pairs: Optional[Sequence[tuple[Path, Path]]] = None,
          source_bands: Optional[Sequence[int]] = None,
          map_path: Optional[str | os.PathLike[str]] = None,
          confidence_path: Optional[str | os.PathLike[str]] = None,
          reporter: Optional[Reporter] = None) -> AdaptResult:
    """Adapt ``model`` (a model file or ``(card, module)``) to the ``target`` scene with
    ``method`` and write the adapted model to ``out`` (atomically, only when done); optionally
    map the scene with it."""
    if method not in METHODS:
        raise AdaptError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    cfg = config or make_config("standard")
    report = reporter or Reporter()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    t0 = time.monotonic()

    card, net = _load(model)
    if not has_csn(net):  # a plain-BN model: give it CSN layers (both slots = its statistics)
        replace_bn_with_csn(net, per_domain_affine=bool(card.architecture.get("per_domain_affine")))
        card.architecture = {**card.architecture, "csn": True}
    net.to(device)
    copy_source_to_target(net)

    report("reading", 0.0, f"opening {Path(target).name}")
    scene = RasterSource(target, bands, in_memory=False)
    if scene.band_count != card.band_count:
        raise AdaptError(f"the model expects {card.band_count} band(s) "
                         f"({', '.join(card.band_names)}) but {Path(target).name} gives "
                         f"{scene.band_count}; choose bands with --bands")
    if scene.pixels <= cfg.in_memory_pixels:  # small scenes are read once; else window by window
        scene.load()
    scene_gsd = pixel_size_metres(scene.reader.ds)
    source_gsd = card.gsd
    ratio = scene_gsd / source_gsd if scene_gsd and source_gsd else None
    if ratio is None:
        log.warning("GSD of the model or the scene unknown: multi-scale factors assume equal GSD")
    stats = band_statistics([scene])
    report("reading", 1.0, f"{scene.width}x{scene.height} px, "
                           f"GSD {scene_gsd if scene_gsd else 'unknown'} m")

    codes = card.class_codes()
    divisor = input_divisor(card.architecture)
    adaptation: dict[str, Any] = {
        "method": method, "scene": str(Path(target).resolve()),
        "bands": list(scene.bands), "scene_gsd": scene_gsd, "source_gsd": source_gsd,
        "settings": cfg.to_dict(),
    }
    rounds: list[dict[str, Any]] = []
    losses: list[float] = []
    out_card = card.copy()
    target_norm = {"mean": stats.mean, "std": stats.std}

    if method == "source-only":
        out_card.default_domain = "source"
        adaptation["target_gsd"] = source_gsd
    elif method == "adabn":
        scale = max(1.0, ratio) if ratio else 1.0
        sampler = WindowSampler([scene], codes, round_up(cfg.crop, divisor), stats.mean,
                                stats.std, scale_range=(scale, scale), augment=False,
                                weighting="valid", seed=cfg.seed)
        recompute_target_statistics(net, sampler, cfg.bn_windows, cfg.batch_size, device,
                                    cfg.amp, report)
        out_card.normalization["target"] = target_norm
        out_card.default_domain = "target"
        adaptation["target_gsd"] = scene_gsd / scale if scene_gsd else None
        adaptation["target_scale"] = scale
    else:
        pairs: list[tuple[Path, Path]] = []
        if cfg.source_weight > 0:
            pairs = list(source_pairs) if source_pairs else source_pairs_from_card(card)
        if cfg.source_weight > 0 and not pairs:
            raise AdaptError(
                f"{method} trains with a source cross-entropy term and needs the labelled source "
                "data, but the model card records none; pass --source-images and "
                "--source-labels, or --source-weight 0 to train on pseudo-labels only")
        use_csn = method == "lovecs"
        scales = ([1.0] if not use_csn else
                  (list(cfg.scales) if cfg.scales else gsd_scales(source_gsd, scene_gsd,
                                                                   cfg.n_scales)))
        rounds, losses = _self_train(
            net, card, scene, stats.mean, stats.std, pairs, source_bands if source_bands else card.provenance.get("bands"), cfg, scales,
            "target" if use_csn else "source", device, divisor, report)
        if not use_csn:  # one set of statistics shared by both domains
            copy_source_to_target(net)
        out_card.normalization["target"] = target_norm
        out_card.default_domain = "target"
        adaptation["target_gsd"] = scene_gsd
        adaptation["scales"] = scales
        adaptation["csn"] = use_csn
        adaptation["source_data"] = bool(pairs)
        adaptation["rounds"] = rounds
        adaptation["final_loss"] = float(np.mean(losses[-20:])) if losses else None

    net.eval()
    seconds = time.monotonic() - t0
    adaptation.update(device=str(device), seconds=round(seconds, 1),
                      date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    out_card.adaptation = adaptation
    out_card.name = f"{card.name} (adapted: {method})"
    path = save_model(out, out_card, net.state_dict())
    scene.close()
    result = AdaptResult(path, out_card, method, rounds, losses, seconds, str(device))
    if map_path is not None:
        from .predict import predict_raster

        pr = predict_raster((out_card, net), target, map_path, bands=list(scene.bands),
                            device=str(device), confidence=confidence_path, amp=cfg.amp,
                            reporter=report)
        result.map = Path(pr.output)
        result.confidence = Path(pr.confidence) if pr.confidence else None
    return result


def _self_train(net: nn.Module, card: ModelCard, scene: RasterSource, mean: Sequence[float],
                std: Sequence[float], pairs: Sequence[tuple[Path, Path]],
                source_bands: Optional[Sequence[int]], cfg: AdaptConfig, scales: list[float],
                target_domain: str, device: torch.device, divisor: int, report: Reporter
                ) -> tuple[list[dict[str, Any]], list[float]]:
    """Rounds of pseudo-labelling and training (CBST and LoveCS)."""
    codes = card.class_codes()
    crop = round_up(cfg.crop, divisor)
    src_sampler = None
    if pairs:
        report("reading", 0.0, f"source data: {len(pairs)} image/label pair(s)")
        sources = open_sources(pairs, source_bands)
        if sources[0].band_count != card.band_count:
            raise AdaptError(f"the source images give {sources[0].band_count} band(s), the model "
                             f"expects {card.band_count}")
        smean, sstd = card.stats("source")
        src_sampler = WindowSampler(sources, codes, crop, smean, sstd,
                                    scale_range=cfg.scale_range, seed=cfg.seed)
    scene.labels = np.zeros((scene.height, scene.width), dtype=np.uint8)
    optimizer = make_optimizer(net, cfg.lr, cfg.momentum, cfg.weight_decay)
    scaler = grad_scaler(device, cfg.amp)
    total = max(1, cfg.iterations)
    n_rounds = int(math.ceil(total / max(1, cfg.refresh_every)))
    rounds: list[dict[str, Any]] = []
    losses: list[float] = []
    it = 0
    t0 = time.monotonic()
    for r in range(1, n_rounds + 1):
        net.eval()
        with csn_domain(net, target_domain):
            pred, conf = predict_scene(net, scene, mean, std, scales, device=device,
                                       tile=cfg.pl_tile, margin=cfg.pl_margin,
                                       batch=cfg.pl_batch, amp=cfg.amp, divisor=divisor,
                                       reporter=_RoundReporter(report, r, n_rounds))
        labels, thresholds = class_balanced_pseudo_labels(pred, conf, codes, cfg.portion)
        valid = int((pred != NO_CLASS).sum())
        counts = np.bincount(labels.ravel(), minlength=256)[list(codes)]
        rounds.append({"round": r, "iteration": it,
                       "thresholds": [None if not np.isfinite(t) else round(t / CONF_SCALE, 4)
                                      for t in thresholds],
                       "labelled_fraction": round(float((labels > 0).sum()) / max(valid, 1), 4),
                       "class_pixels": counts.tolist()})
        del pred, conf
        if not (labels > 0).any():
            raise AdaptError("no pseudo-labels could be selected on the scene (no valid pixels?)")
        scene.labels = labels
        tgt_sampler = WindowSampler([scene], codes, crop, mean, std,
                                    scale_range=cfg.scale_range, seed=None if cfg.seed is None
                                    else cfg.seed + r)
        net.train()
        steps = min(cfg.refresh_every, total - it)
        for _ in range(steps):
            lr = poly_lr(cfg.lr, it, total, cfg.power)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            source_loss = 0.0
            if src_sampler is not None and cfg.source_weight > 0:
                xs, ys = (torch.from_numpy(a).to(device)
                          for a in src_sampler.sample(cfg.batch_size))
                with csn_domain(net, "source"), autocast(device, cfg.amp):
                    ls = masked_cross_entropy(net(xs), ys)
                scaler.scale(cfg.source_weight * ls).backward()
                source_loss = float(ls.detach())
                del xs, ys, ls
            xt, yt = (torch.from_numpy(a).to(device) for a in tgt_sampler.sample(cfg.batch_size))
            with csn_domain(net, target_domain), autocast(device, cfg.amp):
                lt = masked_cross_entropy(net(xt), yt)
            scaler.scale(cfg.pseudo_weight * lt).backward()
            pseudo_loss = float(lt.detach())
            del xt, yt, lt
            clip_and_step(net, optimizer, scaler, cfg.grad_clip)
            it += 1
            loss = cfg.source_weight * source_loss + cfg.pseudo_weight * pseudo_loss
            losses.append(loss)
            elapsed = time.monotonic() - t0
            report("training", it / total,
                   f"round {r}/{n_rounds} iteration {it}/{total} loss {np.mean(losses[-20:]):.3f}",
                   round=r, rounds=n_rounds, iteration=it, iterations=total, loss=loss,
                   source_loss=source_loss, pseudo_loss=pseudo_loss, lr=lr,
                   eta_s=elapsed / it * (total - it))
    net.eval()
    scene.labels = None
    return rounds, losses


class _RoundReporter(Reporter):
    """Adds the round to pseudo-labelling progress events."""

    def __init__(self, parent: Reporter, round_: int, rounds: int) -> None:
        super().__init__(parent.callback, parent.cancel)
        self.round, self.rounds = round_, rounds

    def __call__(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        super().__call__(stage, fraction, f"round {self.round}/{self.rounds}: {message}",
                         round=self.round, rounds=self.rounds, **extra)

