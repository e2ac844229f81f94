"""Adaptation settings: methods, :class:`AdaptConfig` (filled from the presets) and the error
type of adaptation (no torch here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..contract import DEFAULT_ADAPT_PRESET
from ..presets import PRESETS
from ..rasters.labelled import IN_MEMORY_PIXELS


class AdaptError(ValueError):
    """Adaptation cannot run as asked; the message says why and what to do."""


@dataclass
class AdaptConfig:
    """Adaptation settings; :data:`PRESETS` fills them, every one can be overridden."""

    iterations: int = 5000  # self-training iterations in all
    refresh_every: int = 2000  # pseudo-labels regenerated every K iterations
    batch_size: int = 8  # per domain
    crop: int = 512
    lr: float = 0.01 * (1.0 / 3.0) ** 0.9  # the paper's poly schedule continued from 10k of 15k
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    grad_clip: float = 35.0
    portion: float = 0.1  # class-balanced: top 10 % per predicted class
    min_share: float = 0.005  # classes predicted on less of the scene get no pseudo-labels
    min_confidence: float = 0.5  # no pseudo-label below this probability
    prior_cap: float = 2.0  # a class's candidates: at most ~2x its reference share
    absent_share: float = 0.001  # classes on less of the reference map: left out (.absent_classes)
    balanced_windows: bool = True  # target windows centred on every pseudo-labelled class alike
    anchor_portion: float = 0.2  # reference map's most confident pixels kept labelled (0: off)
    source_weight: float = 1.0
    pseudo_weight: float = 0.5
    scales: Optional[list[float]] = None  # None: derived from the GSD ratio
    n_scales: int = 4
    scale_range: tuple[float, float] = (0.5, 1.75)  # training-window scale augmentation
    # learn and map the scene at its own GSD (the paper); off: at the model's GSD, where the
    # source model maps it
    native_scale: bool = False
    # CSN's target slot learns the scene's batch statistics (the paper); off: it keeps the
    # source statistics (after the alignment, a scene's statistics describe its class mix)
    scene_statistics: bool = False
    pl_tile: int = 256  # pseudo-labelling tile side, native target pixels
    pl_margin: int = 16  # context around each tile, native pixels
    pl_batch: int = 4
    bn_windows: int = 64  # adabn: target windows for the statistics
    seed: Optional[int] = 0
    device: str = "auto"
    amp: bool = True
    in_memory_pixels: int = IN_MEMORY_PIXELS
    tone: str | float = "auto"  # the alignment's tone step (.tone): auto, off or a gamma

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_config(preset: str = DEFAULT_ADAPT_PRESET, **overrides: Any) -> AdaptConfig:
    """An :class:`AdaptConfig` from a preset, with ``None`` overrides ignored."""
    if preset not in PRESETS:
        raise AdaptError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - {f.name for f in dataclasses.fields(AdaptConfig)}
    if unknown:
        raise AdaptError(f"unknown adaptation settings {sorted(unknown)}")
    return AdaptConfig(**values)
