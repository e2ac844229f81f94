"""Source training: a land-cover model from labelled rasters (LoveCS' source stage).

SGD with momentum and a poly learning-rate schedule, gradient clipping, cross-entropy with label
0 ignored, random windows weighted toward labelled pixels with random scale, flips and rotations,
per-band normalisation statistics computed from the training images and stored in the model card.
The network gets CSN layers from the start (trained in the source domain), so adaptation can begin
from the file directly. Defaults follow the paper (lr 0.01, momentum 0.9, weight decay 5e-4,
clip 35, batch 8, 512 crops, 10 000 iterations).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..alignment.radiometry import nominal_maximum, reference_from_images
from ..compute.device import resolve_device
from ..compute.runtime import autocast, cpu_bf16_supported, grad_scaler, round_up, seed_everything
from ..model.card import (
    SAMPLE_IMAGES,
    SAMPLE_LABELS,
    ClassInfo,
    ModelCard,
    save_model,
)
from ..model.csn import change_csn
from ..model.networks import architecture, build_model, input_divisor
from ..progress import Reporter
from ..rasters.labelled import (
    BandStats,
    RasterSource,
    band_statistics,
    open_sources,
    warn_unknown_label_codes,
)
from .augment import SensorRandomisation
from .checkpoint import resume_training, save_checkpoint
from .optim import batch_to, make_optimizer, masked_cross_entropy, optimizer_step, poly_schedule
from .sampling import WindowBatches, WindowSampler, draw_source_sample

log = logging.getLogger(__name__)


# -- configuration ---------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Source-training settings (defaults: the paper's)."""

    iterations: int = 10000
    batch_size: int = 8
    crop: int = 512
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    grad_clip: float = 35.0
    scale_range: tuple[float, float] = (0.5, 1.75)
    augment: bool = True
    seed: Optional[int] = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_every: int = 0  # iterations between resumable checkpoints (0: none)
    #: sensor randomisation (see augment.py) as a dict of SensorRandomisation fields; None: off
    randomisation: Optional[dict[str, Any]] = field(
        default_factory=lambda: SensorRandomisation().to_dict()
    )
    workers: int = 0  # DataLoader worker processes preparing windows (0: in-process)
    channels_last: bool = True
    sample_crops: int = 32  # labelled source crops carried in the model file (0: none)
    sample_side: int = 192

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    output: Path
    card: ModelCard
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def band_names(source: RasterSource) -> list[str]:
    """Band names from colour interpretation or descriptions ("band N" otherwise)."""
    from osgeo import gdal

    names = []
    for b in source.bands:
        band = source.reader.ds.GetRasterBand(b)
        interp = gdal.GetColorInterpretationName(band.GetColorInterpretation()) or ""
        desc = band.GetDescription() or ""
        if desc:
            names.append(desc)
        elif interp.lower() not in ("", "gray", "grey", "undefined"):
            names.append(interp.lower())
        else:
            names.append(f"band {b}")
    return names


def band_range(dtype_name: str, stats: BandStats) -> tuple[float, float]:
    if dtype_name == "byte":
        return (0.0, 255.0)
    return (float(min(stats.minimum)), float(max(stats.maximum)))


def source_card(
    sources: Sequence[RasterSource],
    classes: Sequence[ClassInfo],
    stats: BandStats,
    arch: dict[str, Any],
    gsd: Optional[float],
    name: str,
) -> ModelCard:
    """The card of a model about to be trained on ``sources``."""
    from ..rasters.reading import pixel_size_metres

    if gsd is None:
        gsd = pixel_size_metres(sources[0].reader.ds)
    tiny = arch.get("arch") == "tiny"
    return ModelCard(
        architecture=arch,
        classes=list(classes),
        band_names=band_names(sources[0]),
        band_dtype=sources[0].dtype_name.replace("byte", "uint8"),
        band_range=band_range(sources[0].dtype_name, stats),
        normalization={"source": {"mean": stats.mean, "std": stats.std}},
        gsd=gsd,
        tile_size=256 if tiny else 512,
        overlap=16 if tiny else 64,
        default_domain="source",
        name=name,
    )


def fpn_architecture(
    encoder: str = "resnet50", decoder_channels: Sequence[int] = (256, 128)
) -> dict[str, Any]:
    pyramid, segmentation = (int(c) for c in decoder_channels)
    if segmentation <= 0 or segmentation % 32 or pyramid <= 0:
        raise ValueError(
            f"FPN decoder channels {pyramid},{segmentation}: the segmentation "
            "channels must be a positive multiple of 32 (its GroupNorm has 32 groups)"
        )
    return architecture(
        "fpn",
        encoder=encoder,
        csn=True,
        pyramid_channels=pyramid,
        segmentation_channels=segmentation,
    )


# -- checkpoints -----------------------------------------------------------------------------------
def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    return Path(str(out) + ".ckpt")


# -- the loop --------------------------------------------------------------------------------------
def radiometric_reference(
    sources: Sequence[RasterSource], stats: BandStats, per_image: int = 200_000
) -> dict[str, Any]:
    """The card's ``radiometry.reference`` from the training images (see radiometry.py)."""
    rng = np.random.default_rng(0)
    samples = []
    for s in sources:
        values = np.concatenate([d[:, v] for d, v in s.strips(rows=256)], axis=1)
        if values.shape[1] > per_image:
            values = values[:, rng.choice(values.shape[1], per_image, replace=False)]
        samples.append(values)
    vmax, _ = nominal_maximum(np.concatenate(samples, axis=1), sources[0].dtype_name)
    return reference_from_images(samples, vmax).to_dict()


def training_randomisation(cfg: TrainConfig) -> Optional[SensorRandomisation]:
    return None if not cfg.randomisation else SensorRandomisation(**cfg.randomisation)


def train_source(
    pairs: Sequence[tuple[Path, Path]],
    classes: Sequence[ClassInfo],
    out: str | os.PathLike[str],
    *,
    arch: Optional[dict[str, Any]] = None,
    bands: Optional[Sequence[int]] = None,
    gsd: Optional[float] = None,
    config: Optional[TrainConfig] = None,
    name: str = "LoveCS land-cover model",
    resume: bool = False,
    held_out: Sequence[str | os.PathLike[str]] = (),
    reporter: Optional[Reporter] = None,
    vector_labels: Optional[dict[str, Any]] = None,
) -> TrainResult:
    """Train a model on image/label raster pairs and write it to ``out`` (atomically).
    ``held_out`` (image paths kept out of training for evaluation) is recorded in the card, as is
    ``vector_labels`` (the vector file the label rasters were burnt from, which then stand in for
    no recorded label raster: they are temporary)."""
    cfg = config or TrainConfig()
    report = reporter or Reporter()
    arch = arch or fpn_architecture()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    t0 = time.monotonic()

    sources, stats, card = _read_sources(pairs, bands, classes, arch, gsd, name, report)
    crop = round_up(cfg.crop, input_divisor(arch))
    sampler = WindowSampler(
        sources,
        card.class_codes(),
        crop,
        stats.mean,
        stats.std,
        scale_range=cfg.scale_range,
        augment=cfg.augment,
        seed=cfg.seed,
        randomisation=training_randomisation(cfg),
        value_max=card.radiometry["reference"]["value_max"],
    )

    model = build_model(card).to(device)
    change_csn(model, source=True)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    scheduler = poly_schedule(optimizer, cfg.iterations, cfg.power)
    scaler = grad_scaler(device, cfg.amp)
    ckpt = checkpoint_path(out)
    start, losses = 0, list[float]()
    if resume and ckpt.is_file():
        start, losses = resume_training(ckpt, cfg.iterations, model, optimizer, scheduler, sampler)
        report("training", start / cfg.iterations, f"resumed at iteration {start}")

    model.train()
    batches = iter(WindowBatches(sampler, cfg.batch_size, cfg.workers, cfg.seed))
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for it in range(start, cfg.iterations):
        lr = optimizer.param_groups[0]["lr"]
        x, y = batch_to(device, *next(batches))
        with autocast(device, cfg.amp, cpu_bf16=True):
            loss = masked_cross_entropy(model(x.contiguous(memory_format=memory)), y)
        optimizer_step(model, optimizer, loss, scaler, cfg.grad_clip)
        scheduler.step()
        losses.append(float(loss.detach()))
        done = it + 1
        elapsed = time.monotonic() - t0
        report(
            "training",
            done / cfg.iterations,
            f"iteration {done}/{cfg.iterations} loss {np.mean(losses[-20:]):.3f}",
            iteration=done,
            iterations=cfg.iterations,
            loss=losses[-1],
            lr=lr,
            eta_s=elapsed / max(done - start, 1) * (cfg.iterations - done),
        )
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            save_checkpoint(
                ckpt,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                iteration=done,
                losses=losses,
                rng=json.dumps(sampler.rng.bit_generator.state),
            )

    model.eval()
    seconds = time.monotonic() - t0
    card.provenance = _provenance(
        pairs, sources, stats, cfg, crop, device, losses, seconds, held_out, vector_labels
    )
    extra: dict[str, torch.Tensor] = {}
    if cfg.sample_crops > 0:
        images, labels = draw_source_sample(
            sources, card.class_codes(), cfg.sample_crops, cfg.sample_side, seed=cfg.seed or 0
        )
        extra = {SAMPLE_IMAGES: torch.from_numpy(images), SAMPLE_LABELS: torch.from_numpy(labels)}
        card.provenance["source_sample"] = {
            "crops": int(images.shape[0]),
            "side": int(images.shape[-1]),
            "dtype": str(images.dtype),
        }
    path = save_model(out, card, {**model.state_dict(), **extra})
    if ckpt.is_file():
        ckpt.unlink()
    for s in sources:
        s.close()
    return TrainResult(path, card, losses, seconds, str(device))


def _read_sources(
    pairs: Sequence[tuple[Path, Path]],
    bands: Optional[Sequence[int]],
    classes: Sequence[ClassInfo],
    arch: dict[str, Any],
    gsd: Optional[float],
    name: str,
    report: Reporter,
) -> tuple[list[RasterSource], BandStats, ModelCard]:
    """The labelled rasters opened, their band statistics and the model's card."""
    report("reading", 0.0, f"opening {len(pairs)} image/label pair(s)")
    sources = open_sources(pairs, bands)
    report("reading", 0.5, "band statistics")
    stats = band_statistics(sources)
    card = source_card(sources, classes, stats, arch, gsd, name)
    warn_unknown_label_codes(sources, card.class_codes(), "the training labels")
    card.radiometry = {"reference": radiometric_reference(sources, stats)}
    pixels = sum(s.pixels for s in sources)
    report("reading", 1.0, f"{pixels / 1e6:.1f} MPix, {card.band_count} band(s)")
    return sources, stats, card


def _provenance(
    pairs: Sequence[tuple[Path, Path]],
    sources: Sequence[RasterSource],
    stats: BandStats,
    cfg: TrainConfig,
    crop: int,
    device: torch.device,
    losses: list[float],
    seconds: float,
    held_out: Sequence[str | os.PathLike[str]],
    vector_labels: Optional[dict[str, Any]],
) -> dict[str, Any]:
    """What the card records of the training run."""
    return {
        "source_images": [str(Path(p[0]).resolve()) for p in pairs],
        "source_labels": [] if vector_labels else [str(Path(p[1]).resolve()) for p in pairs],
        **({"vector_labels": vector_labels} if vector_labels else {}),
        "held_out_images": [str(Path(p).resolve()) for p in held_out],
        "bands": list(sources[0].bands),
        "training": {
            **cfg.to_dict(),
            "crop": crop,
            "cpu_bf16": bool(cfg.amp and device.type == "cpu" and cpu_bf16_supported()),
        },
        "training_pixels": stats.pixels,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "device": str(device),
        "seconds": round(seconds, 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
