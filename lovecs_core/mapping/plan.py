"""The plan of one mapping run (:func:`.predict.predict_raster`) and the steps that settle it
before the tiles go: the outputs checked, the input opened with its bands, the sensor
alignment, the GSD the model runs at."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from osgeo import gdal
from torch import nn

from ..alignment.radiometry import Alignment, scene_alignment
from ..alignment.tone import choose_tone
from ..contract import READING, band_count_problem, format_bands
from ..model.card import ModelCard
from ..progress import Reporter
from ..rasters.reading import (
    GSD_TOLERANCE,
    RasterError,
    RasterReader,
    open_dataset,
    pixel_size_metres,
    subset,
    window_from_extent,
)

log = logging.getLogger(__name__)

#: Upsampling beyond this linear factor is refused (a model for much finer pixels than the
#: raster's: almost certainly the wrong model, and the warped raster would be huge).
MAX_UPSAMPLING = 4.0


@dataclass
class MapPlan:
    """What one mapping run is settled to before its tiles go: the model and its domain's
    normalisation, the device, the outputs, the input (opened, bands chosen), the alignment,
    the tiles and the GSD the model runs at."""

    card: ModelCard
    net: nn.Module
    domain: str
    mean: list[float]
    std: list[float]
    dev: torch.device
    batch_size: int
    out: Path
    conf_path: Optional[Path]
    prob_path: Optional[Path]
    ds: gdal.Dataset
    source: RasterReader
    alignment: Optional[Alignment] = None
    transform: Optional[Alignment] = None  # the pixel transform of the alignment
    tile_px: int = 0
    overlap_px: int = 0
    raster_gsd: Optional[float] = None
    resample_to: Optional[float] = None  # the model's GSD, when the raster is resampled to it


def check_outputs(raster: str | os.PathLike[str], outputs: list[Path]) -> None:
    """The outputs differ from each other and from the input."""
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise ValueError("output, confidence and probability files must differ")
    if Path(str(raster)).exists() and Path(str(raster)).resolve() in {p.resolve() for p in outputs}:
        raise ValueError(f"an output would overwrite the input raster {raster}")


def open_bands(
    card: ModelCard,
    raster: str | os.PathLike[str],
    extent: Optional[tuple[float, float, float, float]],
    bands: Optional[Sequence[int]],
) -> tuple[gdal.Dataset, RasterReader]:
    """The input (its ``extent`` only, when given) and a reader of ``bands``, as many as the
    model takes."""
    ds = _open_input(raster)
    if extent is not None:
        ds = subset(ds, window_from_extent(ds, extent))
    source = RasterReader(ds, bands)
    problem = band_count_problem(
        card.band_names, source.band_count, f"{raster} (bands {format_bands(source.bands)})"
    )
    if problem:
        raise RasterError(problem)
    return ds, source


def align_plan(plan: MapPlan, tone: str | float, reporter: Reporter) -> None:
    """A model not adapted to this scene sees it through the sensor alignment, folded into
    its normalisation."""
    card, ds, bands = plan.card, plan.ds, plan.source.bands
    alignment = choose_tone(card, plan.net, ds, bands, scene_alignment(card, ds, bands), tone)
    plan.mean, plan.std = (list(v) for v in alignment.normalization(plan.mean, plan.std).values())
    plan.alignment, plan.transform = alignment, alignment.pixel_transform()
    reporter(READING, 0.0, f"sensor alignment: {alignment.describe()}")
    log.info("sensor alignment: %s", alignment.describe())


def choose_gsd(plan: MapPlan, raster: str | os.PathLike[str], resample: bool) -> None:
    """Resample to the model's GSD when the raster's differs by more than the tolerance;
    refuse upsampling beyond :data:`MAX_UPSAMPLING`."""
    ds = plan.ds
    model_gsd, raster_gsd = plan.card.domain_gsd(plan.domain), pixel_size_metres(ds)
    plan.raster_gsd = raster_gsd
    if resample and model_gsd and raster_gsd and abs(raster_gsd / model_gsd - 1.0) > GSD_TOLERANCE:
        plan.resample_to = model_gsd
    if model_gsd and raster_gsd is None:
        log.warning("%s has no georeference: its GSD is unknown, no resampling", raster)
    resample_to = plan.resample_to
    if resample_to and raster_gsd and raster_gsd / resample_to > MAX_UPSAMPLING:
        factor = raster_gsd / resample_to
        raise RasterError(
            f"the raster's pixels ({raster_gsd:.3g} m) are {factor:.1f} times coarser than the "
            f"model's ({resample_to:.3g} m): resampling would turn {ds.RasterXSize}x"
            f"{ds.RasterYSize} pixels into about {round(ds.RasterXSize * factor)}x"
            f"{round(ds.RasterYSize * factor)}. Use a model made for this resolution, or "
            f"--no-resample to run on the raster's own pixels"
        )


def _open_input(raster: str | os.PathLike[str]) -> gdal.Dataset:
    text = str(raster)
    if not text.startswith("/vsi") and not os.path.exists(text) and ":" not in text[2:]:
        raise RasterError(f"raster not found: {text}")
    return open_dataset(text)
