"""The target scene as adaptation sees it: opened, its bands checked, aligned to the source
sensor (:mod:`.radiometry`), with its GSD and the ratio to the model's; and the reporter that
files a sub-task's progress under another stage."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import nn

from ..alignment.radiometry import Alignment, scene_alignment
from ..alignment.tone import choose_tone
from ..contract import band_count_problem
from ..model.card import ModelCard
from ..progress import Reporter
from ..rasters.labelled import RasterSource
from ..rasters.reading import GSD_TOLERANCE, pixel_size_metres
from .config import AdaptConfig, AdaptError

log = logging.getLogger(__name__)


@dataclass
class Scene:
    """The target scene as adaptation sees it."""

    source: RasterSource
    alignment: Alignment
    mean: list[float]
    std: list[float]
    gsd: Optional[float]
    ratio: Optional[float]


def open_scene(
    card: ModelCard,
    net: nn.Module,
    target: str | os.PathLike[str],
    bands: Optional[Sequence[int]],
    cfg: AdaptConfig,
    report: Reporter,
) -> Scene:
    """Open ``target`` with ``bands`` (in memory when small), check its band count against the
    card, and align it to the source sensor (``net`` chooses the tone, :mod:`.tone`)."""
    report("reading", 0.0, f"opening {Path(target).name}")
    scene = RasterSource(target, bands, in_memory=False)
    problem = band_count_problem(card.band_names, scene.band_count, Path(target).name)
    if problem:
        raise AdaptError(problem)
    if scene.pixels <= cfg.in_memory_pixels:  # small scenes are read once; else window by window
        scene.load()
    gsd = pixel_size_metres(scene.reader.ds)
    ratio = gsd / card.gsd if gsd and card.gsd else None
    if ratio is None:
        log.warning("GSD of the model or the scene unknown: multi-scale factors assume equal GSD")
    try:
        alignment = scene_alignment(card, scene.reader.ds, scene.bands)
        alignment = choose_tone(card, net, scene.reader.ds, scene.bands, alignment, cfg.tone)
    except ValueError as exc:
        raise AdaptError(f"{Path(target).name}: {exc}") from exc
    norm = alignment.normalization(*card.stats("source"))
    scene.transform = alignment.pixel_transform()
    report(
        "reading",
        1.0,
        f"{scene.width}x{scene.height} px, GSD "
        f"{gsd if gsd else 'unknown'} m; sensor alignment: "
        f"{alignment.describe()}",
    )
    return Scene(scene, alignment, norm["mean"], norm["std"], gsd, ratio)


def source_scale(ratio: Optional[float]) -> float:
    """The factor that brings scene pixels to the source GSD, as mapping an unadapted model does
    (no resampling within 10 %)."""
    return ratio if ratio and abs(ratio - 1.0) > GSD_TOLERANCE else 1.0


class StageReporter(Reporter):
    """Reports a sub-task under another stage name, prefixing its messages."""

    def __init__(self, parent: Reporter, stage: str, what: str) -> None:
        super().__init__(parent.callback, parent.cancel)
        self.stage, self.what = stage, what

    def __call__(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        super().__call__(self.stage, fraction, f"{self.what}: {message}", **extra)
