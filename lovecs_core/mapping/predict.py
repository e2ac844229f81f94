"""Tiled inference: a model classifies a georeferenced raster of any size into a GeoTIFF class map.

This module drives the run: :mod:`.plan` settles it (outputs checked, input and bands, sensor
alignment, tiles, the GSD the model runs at), then the tiles go through :mod:`.pipeline`
(reader, model and blender threads); when the raster's ground sample distance differs from the
model's by more than :data:`~.plan.GSD_TOLERANCE`, :mod:`.resample` runs the model at its own GSD and
brings the result back onto the input grid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from osgeo import gdal
from torch import nn

from ..alignment.radiometry import adapted_transform
from ..compute.device import resolve_device
from ..contract import WRITING
from ..model.card import ModelCard
from ..model.networks import input_divisor, model_from_file
from ..progress import Cancelled, Reporter
from ..rasters.qml import qml_path, write_qml
from ..rasters.reading import (
    gdal_cache_limit,
)
from .pipeline import PieceSink, TileEngine
from .plan import MapPlan, align_plan, check_outputs, choose_gsd, open_bands
from .resample import predict_resampled
from .writer import PredictionWriter

log = logging.getLogger(__name__)

#: GDAL block cache while mapping (input blocks are reused by overlapping tiles) and while
#: building overviews (a single sequential pass).
MAPPING_CACHE_BYTES = 64 * 1024**2
OVERVIEW_CACHE_BYTES = 32 * 1024**2

#: Tiles per forward pass when none is asked for: on a CPU one 512 px tile at a time keeps the
#: activations within the caches (the bundled model ran 2x faster than four at a time, with less
#: memory: bench/RESULTS.md); a GPU wants batches.
CPU_BATCH = 1
GPU_BATCH = 4

ModelArg = str | os.PathLike[str] | tuple[ModelCard, nn.Module]
#: Replaces the in-process engine: ``(engine with the run's settings, input dataset) -> engine``.
EngineHook = Callable[[TileEngine, gdal.Dataset], TileEngine]


def default_batch_size(dev: torch.device) -> int:
    """Tiles per batch when the caller gives none: :data:`CPU_BATCH` or :data:`GPU_BATCH`."""
    return CPU_BATCH if dev.type == "cpu" else GPU_BATCH


@dataclass
class PredictResult:
    """What :func:`predict_raster` produced."""

    output: Path
    confidence: Optional[Path]
    tiles_total: int
    tiles_skipped: int
    seconds: float
    device: str
    probabilities: Optional[Path] = None
    domain: str = "source"
    resampled: bool = False
    tile: int = 0
    overlap: int = 0
    alignment: Optional[dict[str, Any]] = None
    precision: str = "float32"  # the network's arithmetic: float32, bfloat16 (CPU), float16 (CUDA)
    cluster: Optional[dict[str, Any]] = None  # what a distributed run did (ray_map.RunStats)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def load_model(model: ModelArg) -> tuple[ModelCard, nn.Module]:
    """A model file path, or an already built ``(card, module)`` pair."""
    if isinstance(model, tuple):
        card, net = model
        return card, net
    return model_from_file(str(model))


def tile_settings(card: ModelCard, tile: Optional[int], overlap: Optional[int]) -> tuple[int, int]:
    """Tile side (a multiple of the architecture's input divisor) and overlap (at most half a
    tile). A user's overlap that does not fit is an error; the card's default is clamped."""
    div = input_divisor(card.architecture)
    size = int(tile) if tile else card.tile_size
    if size <= 0:
        raise ValueError(f"tile size must be positive, got {size}")
    rounded = max(div, int(round(size / div)) * div)
    if rounded != size:
        log.info("tile size %d rounded to %d (a multiple of %d)", size, rounded, div)
    if overlap is None:
        ov = min(card.overlap, rounded // 2)
    else:
        ov = int(overlap)
        if not 0 <= ov <= rounded // 2:
            raise ValueError(
                f"overlap must be between 0 and half the tile ({rounded // 2} px), got {ov}"
            )
    return rounded, ov


def predict_raster(
    model: ModelArg,
    raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bands: Optional[Sequence[int]] = None,
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    device: str = "auto",
    batch_size: Optional[int] = None,
    domain: Optional[str] = None,
    confidence: Optional[str | os.PathLike[str]] = None,
    extent: Optional[tuple[float, float, float, float]] = None,
    resample: bool = True,
    amp: bool = True,
    reporter: Optional[Reporter] = None,
    confidence_dtype: str = "uint8",
    probabilities: Optional[str | os.PathLike[str]] = None,
    write_style: bool = True,
    align: bool = True,
    cpu_bf16: bool = False,
    make_engine: Optional[EngineHook] = None,
    tone: str | float = "auto",
) -> PredictResult:
    """Classify ``raster`` with ``model`` into the GeoTIFF ``out`` (uint8 class codes, nodata 0)
    plus ``out``'s ``.qml`` style.

    ``bands``: 1-based raster bands fed to the model in order (default: all non-alpha bands).
    ``domain``: ``source`` or ``target`` CSN statistics and normalisation (default: the card's).
    ``confidence``: optional GeoTIFF of the maximum class probability: uint8 percent (1..100) or,
    with ``confidence_dtype="float32"``, 0..1; nodata 0 in both. ``probabilities``: optional
    float32 GeoTIFF with one band per class (nodata -1). ``extent``: ``(xmin, ymin, xmax, ymax)``
    in the raster's CRS; only that window of the input grid is classified and written.
    ``batch_size``: tiles per forward pass (None: :func:`default_batch_size` of the device).
    ``model`` may be a ``(card, module)`` pair: the module is moved to the device and used in
    eval mode (its train/eval mode is restored afterwards).
    ``align``: a model not adapted to this scene sees the scene through the sensor alignment of
    :mod:`.radiometry` (bit depth, out-of-range bands), folded into its normalisation.
    ``tone``: the alignment's tone step (:mod:`.tone`): ``auto`` (the model chooses one for a
    scene of another bit depth), ``off``, or a gamma.
    ``cpu_bf16``: bfloat16 autocast on a CPU that computes it natively (about 1.6x faster for the
    bundled model; 99.8 % of its pixels keep their class, bench/RESULTS.md). Off by default: it
    changes maps, float32 does not. On a CPU the network always runs channels_last (same sums).
    ``make_engine(engine, dataset)``: another engine in place of the in-process one, given its
    settings and the input dataset (:mod:`lovecs_core.mapping.ray.map` maps on a Ray cluster this way).
    """
    with gdal_cache_limit(MAPPING_CACHE_BYTES):
        return _predict_raster(
            model,
            raster,
            out,
            bands=bands,
            tile=tile,
            overlap=overlap,
            device=device,
            batch_size=batch_size,
            domain=domain,
            confidence=confidence,
            extent=extent,
            resample=resample,
            amp=amp,
            reporter=reporter,
            confidence_dtype=confidence_dtype,
            probabilities=probabilities,
            write_style=write_style,
            align=align,
            cpu_bf16=cpu_bf16,
            make_engine=make_engine,
            tone=tone,
        )


def _predict_raster(
    model: ModelArg,
    raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bands: Optional[Sequence[int]],
    tile: Optional[int],
    overlap: Optional[int],
    device: str,
    batch_size: Optional[int],
    domain: Optional[str],
    confidence: Optional[str | os.PathLike[str]],
    extent: Optional[tuple[float, float, float, float]],
    resample: bool,
    amp: bool,
    reporter: Optional[Reporter],
    confidence_dtype: str,
    probabilities: Optional[str | os.PathLike[str]],
    write_style: bool,
    align: bool,
    cpu_bf16: bool,
    make_engine: Optional[EngineHook],
    tone: str | float,
) -> PredictResult:
    start = time.perf_counter()
    reporter = reporter or Reporter()
    plan = _plan(
        model,
        raster,
        out,
        bands=bands,
        tile=tile,
        overlap=overlap,
        device=device,
        batch_size=batch_size,
        domain=domain,
        confidence=confidence,
        probabilities=probabilities,
        extent=extent,
        resample=resample,
        align=align,
        tone=tone,
        reporter=reporter,
    )
    engine = _engine(plan, amp, reporter, cpu_bf16, make_engine)
    writer = _writer(plan, engine.precision, confidence_dtype)
    try:
        total, skipped = _map_tiles(plan, engine, writer)
        _commit(writer, reporter)
        if write_style:
            write_qml(qml_path(plan.out), plan.card.classes)
    except BaseException:
        writer.abort()
        raise
    finally:
        plan.source.close()
    with contextlib.suppress(Cancelled):  # done: a late cancel changes nothing
        reporter(WRITING, 1.0, str(plan.out))
    return PredictResult(
        plan.out,
        plan.conf_path,
        total,
        skipped,
        time.perf_counter() - start,
        str(plan.dev),
        plan.prob_path,
        plan.domain,
        plan.resample_to is not None,
        plan.tile_px,
        plan.overlap_px,
        plan.alignment.to_dict() if plan.alignment else None,
        engine.precision,
    )


def _plan(
    model: ModelArg,
    raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bands: Optional[Sequence[int]],
    tile: Optional[int],
    overlap: Optional[int],
    device: str,
    batch_size: Optional[int],
    domain: Optional[str],
    confidence: Optional[str | os.PathLike[str]],
    probabilities: Optional[str | os.PathLike[str]],
    extent: Optional[tuple[float, float, float, float]],
    resample: bool,
    align: bool,
    tone: str | float,
    reporter: Reporter,
) -> MapPlan:
    """Settle the run: the model and its domain, the device and batch, the outputs (checked),
    the input and its bands, the alignment, the tiles, the GSD the model runs at."""
    card, net = load_model(model)
    domain = domain or card.default_domain
    mean, std = card.stats(domain)
    dev = resolve_device(device)
    batch_size = default_batch_size(dev) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    conf_path = None if confidence is None else Path(confidence)
    prob_path = None if probabilities is None else Path(probabilities)
    check_outputs(raster, [p for p in (Path(out), conf_path, prob_path) if p is not None])
    ds, source = open_bands(card, raster, extent, bands)
    plan = MapPlan(
        card, net, domain, mean, std, dev, batch_size, Path(out), conf_path, prob_path, ds, source
    )
    if align and domain == "source":
        align_plan(plan, tone, reporter)
    plan.tile_px, plan.overlap_px = tile_settings(card, tile, overlap)
    choose_gsd(plan, raster, resample)
    return plan


def _engine(
    plan: MapPlan,
    amp: bool,
    reporter: Reporter,
    cpu_bf16: bool,
    make_engine: Optional[EngineHook],
) -> TileEngine:
    """The in-process tile engine with the plan's settings, or what ``make_engine`` makes of it."""
    engine = TileEngine(
        plan.card,
        plan.net,
        plan.dev,
        plan.domain,
        plan.mean,
        plan.std,
        plan.tile_px,
        plan.overlap_px,
        plan.batch_size,
        amp,
        reporter,
        cpu_bf16,
    )
    engine.transform = plan.transform or adapted_transform(plan.card, plan.domain)
    return engine if make_engine is None else make_engine(engine, plan.ds)


def _writer(plan: MapPlan, precision: str, confidence_dtype: str) -> PredictionWriter:
    """The map's writer (with the confidence and probabilities when asked), its metadata
    saying how the map was made."""
    ds, card = plan.ds, plan.card
    metadata = {
        "LOVECS_MODEL": card.name,
        "LOVECS_DOMAIN": plan.domain,
        "LOVECS_TILE": str(plan.tile_px),
        "LOVECS_OVERLAP": str(plan.overlap_px),
        "LOVECS_PRECISION": precision,
    }
    if plan.alignment is not None:  # how the scene was brought to the model's radiometry
        metadata["LOVECS_ALIGNMENT"] = plan.alignment.describe()
    return PredictionWriter(
        plan.out,
        ds.RasterXSize,
        ds.RasterYSize,
        ds.GetGeoTransform(can_return_null=True),
        ds.GetProjection(),
        card.classes,
        confidence=plan.conf_path,
        confidence_dtype=confidence_dtype,
        probabilities=plan.prob_path,
        metadata=metadata,
    )


def _map_tiles(plan: MapPlan, engine: TileEngine, writer: PredictionWriter) -> tuple[int, int]:
    """Every tile through the engine into the writer (at the model's GSD when resampled);
    returns the tiles in all and those skipped."""
    if plan.resample_to is None:
        return engine.run(plan.source, PieceSink(writer, plan.card))
    log.info("resampling from %.4g m to the model's %.4g m", plan.raster_gsd, plan.resample_to)
    return predict_resampled(
        engine, plan.ds, plan.source, writer, plan.out, plan.resample_to, plan.card
    )


def _commit(writer: PredictionWriter, reporter: Reporter) -> None:
    """Build the overviews and move the files into place (a cancel stops the overviews)."""
    reporter(WRITING, 0.0, "overviews")
    cancelled = threading.Event()

    def overview_progress(fraction: float) -> bool:
        try:
            reporter(WRITING, fraction, "overviews")
        except Cancelled:
            cancelled.set()
            return False
        return True

    try:
        with gdal_cache_limit(OVERVIEW_CACHE_BYTES):  # one sequential pass: no reuse
            writer.commit(progress=overview_progress)
    except RuntimeError:
        if cancelled.is_set():
            raise Cancelled("cancelled by the user") from None
        raise
