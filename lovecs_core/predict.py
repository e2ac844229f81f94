"""Tiled inference: a model classifies a georeferenced raster of any size into a GeoTIFF class map.

Three stages overlap: a reader thread reads windows with GDAL, normalises them with the card's
statistics of the chosen domain and stacks batches into a bounded queue; the calling thread runs
the model on the chosen device (mixed precision on CUDA); a blender thread merges the overlapping
tiles with smooth weights into row strips and writes them (class map, confidence, probabilities).
Memory is ``O(classes x tile x width)``, whatever the raster's height.

When the raster's ground sample distance differs from the model's by more than
:data:`GSD_TOLERANCE`, the model runs on a GDAL warped VRT at its own GSD; the result is warped
back (nearest neighbour) onto the input grid, and the input mask is applied again.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from osgeo import gdal
from torch import nn

from .card import ModelCard
from .csn import csn_domain
from .radiometry import scene_alignment
from .device import resolve_device
from .models import input_divisor, model_from_file
from .progress import Cancelled, Reporter
from .qml import qml_path, write_qml
from .raster import (RasterError, RasterReader, Window, gdal_cache_limit, open_dataset,
                     pixel_size_metres, subset, warp_to_gsd, window_from_extent)
from .tiling import Strip, StripAccumulator, Tile, TileGrid, make_grid
from .writer import (BLOCK, CLASS_NODATA, CONFIDENCE_NODATA, PROBABILITY_NODATA,
                     PredictionWriter, remove_raster, temporary_path)

log = logging.getLogger(__name__)

#: Relative GSD difference above which the raster is resampled to the model's GSD.
GSD_TOLERANCE = 0.10
#: Upsampling beyond this linear factor is refused (a model for much finer pixels than the
#: raster's: almost certainly the wrong model, and the warped raster would be huge).
MAX_UPSAMPLING = 4.0
#: Batches waiting between the stages (reader -> model -> blender).
PREFETCH = 3
#: GDAL block cache while mapping (input blocks are reused by overlapping tiles) and while
#: building overviews (a single sequential pass).
MAPPING_CACHE_BYTES = 128 * 1024 ** 2
OVERVIEW_CACHE_BYTES = 32 * 1024 ** 2
#: Rows converted to output arrays at a time.
SINK_ROWS = 64
#: At most this many tiles (computed or skipped) per batch, so progress keeps flowing.
MAX_TILES_PER_BATCH = 256

ModelArg = str | os.PathLike[str] | tuple[ModelCard, nn.Module]


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

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def normalize(data: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-band ``(x - mean) / std`` of ``data[C, ...]`` as float32."""
    data = np.asarray(data)
    if data.shape[0] != len(mean) or len(mean) != len(std):
        raise ValueError(f"{data.shape[0]} bands but {len(mean)} means and {len(std)} stds")
    shape = (-1,) + (1,) * (data.ndim - 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((data.astype(np.float32, copy=False) - m) / s).astype(np.float32, copy=False)


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
            raise ValueError(f"overlap must be between 0 and half the tile ({rounded // 2} px), "
                             f"got {ov}")
    return rounded, ov


def _open_input(raster: str | os.PathLike[str]) -> gdal.Dataset:
    text = str(raster)
    if not text.startswith("/vsi") and not os.path.exists(text) and ":" not in text[2:]:
        raise RasterError(f"raster not found: {text}")
    return open_dataset(text)


def predict_raster(model: ModelArg, raster: str | os.PathLike[str], out: str | os.PathLike[str],
                   *, bands: Optional[Sequence[int]] = None, tile: Optional[int] = None,
                   overlap: Optional[int] = None, device: str = "auto", batch_size: int = 4,
                   domain: Optional[str] = None,
                   confidence: Optional[str | os.PathLike[str]] = None,
                   extent: Optional[tuple[float, float, float, float]] = None,
                   resample: bool = True, amp: bool = True, reporter: Optional[Reporter] = None,
                   confidence_dtype: str = "uint8",
                   probabilities: Optional[str | os.PathLike[str]] = None,
                   write_style: bool = True, align: bool = True) -> PredictResult:
    """Classify ``raster`` with ``model`` into the GeoTIFF ``out`` (uint8 class codes, nodata 0)
    plus ``out``'s ``.qml`` style.

    ``bands``: 1-based raster bands fed to the model in order (default: all non-alpha bands).
    ``domain``: ``source`` or ``target`` CSN statistics and normalisation (default: the card's).
    ``confidence``: optional GeoTIFF of the maximum class probability: uint8 percent (1..100) or,
    with ``confidence_dtype="float32"``, 0..1; nodata 0 in both. ``probabilities``: optional
    float32 GeoTIFF with one band per class (nodata -1). ``extent``: ``(xmin, ymin, xmax, ymax)``
    in the raster's CRS; only that window of the input grid is classified and written.
    ``model`` may be a ``(card, module)`` pair: the module is moved to the device and used in
    eval mode (its train/eval mode is restored afterwards).
    ``align``: a model not adapted to this scene sees the scene through the sensor alignment of
    :mod:`.radiometry` (bit depth, out-of-range bands), folded into its normalisation.
    """
    with gdal_cache_limit(MAPPING_CACHE_BYTES):
        return _predict_raster(model, raster, out, bands=bands, tile=tile, overlap=overlap,
                               device=device, batch_size=batch_size, domain=domain,
                               confidence=confidence, extent=extent, resample=resample, amp=amp,
                               reporter=reporter, confidence_dtype=confidence_dtype,
                               probabilities=probabilities, write_style=write_style,
                               align=align)


def _predict_raster(model: ModelArg, raster: str | os.PathLike[str], out: str | os.PathLike[str],
                    *, bands: Optional[Sequence[int]], tile: Optional[int],
                    overlap: Optional[int], device: str, batch_size: int, domain: Optional[str],
                    confidence: Optional[str | os.PathLike[str]],
                    extent: Optional[tuple[float, float, float, float]], resample: bool,
                    amp: bool, reporter: Optional[Reporter], confidence_dtype: str,
                    probabilities: Optional[str | os.PathLike[str]],
                    write_style: bool, align: bool) -> PredictResult:
    start = time.perf_counter()
    reporter = reporter or Reporter()
    card, net = load_model(model)
    domain = domain or card.default_domain
    mean, std = card.stats(domain)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    out = Path(out)
    conf_path = None if confidence is None else Path(confidence)
    prob_path = None if probabilities is None else Path(probabilities)
    outputs_list = [p for p in (out, conf_path, prob_path) if p is not None]
    if len({p.resolve() for p in outputs_list}) != len(outputs_list):
        raise ValueError("output, confidence and probability files must differ")
    if Path(str(raster)).exists() and Path(str(raster)).resolve() in {
            p.resolve() for p in outputs_list}:
        raise ValueError(f"an output would overwrite the input raster {raster}")

    ds = _open_input(raster)
    if extent is not None:
        ds = subset(ds, window_from_extent(ds, extent))
    source = RasterReader(ds, bands)
    if source.band_count != card.band_count:
        raise RasterError(
            f"the model expects {card.band_count} band(s) ({', '.join(card.band_names)}) but "
            f"{source.band_count} band(s) were selected from {raster} (bands "
            f"{','.join(map(str, source.bands))}); choose {card.band_count} bands with --bands, "
            f"e.g. --bands {','.join(str(b) for b in range(1, card.band_count + 1))}")
    alignment = None
    if align and domain == "source":
        alignment = scene_alignment(card, ds, source.bands)
        mean, std = (list(v) for v in alignment.normalization(mean, std).values())
        reporter("reading", 0.0, f"sensor alignment: {alignment.describe()}")
        log.info("sensor alignment: %s", alignment.describe())
    tile_px, overlap_px = tile_settings(card, tile, overlap)
    model_gsd, raster_gsd = card.domain_gsd(domain), pixel_size_metres(ds)
    resampled = bool(resample and model_gsd and raster_gsd
                     and abs(raster_gsd / model_gsd - 1.0) > GSD_TOLERANCE)
    if model_gsd and raster_gsd is None:
        log.warning("%s has no georeference: its GSD is unknown, no resampling", raster)
    if resampled and raster_gsd / model_gsd > MAX_UPSAMPLING:
        factor = raster_gsd / model_gsd
        raise RasterError(
            f"the raster's pixels ({raster_gsd:.3g} m) are {factor:.1f} times coarser than the "
            f"model's ({model_gsd:.3g} m): resampling would turn {ds.RasterXSize}x"
            f"{ds.RasterYSize} pixels into about {round(ds.RasterXSize * factor)}x"
            f"{round(ds.RasterYSize * factor)}. Use a model made for this resolution, or "
            f"--no-resample to run on the raster's own pixels")

    engine = _Engine(card, net, dev, domain, mean, std, tile_px, overlap_px, batch_size, amp,
                     reporter)
    gt = ds.GetGeoTransform(can_return_null=True)
    metadata = {"LOVECS_MODEL": card.name, "LOVECS_DOMAIN": domain,
                "LOVECS_TILE": str(tile_px), "LOVECS_OVERLAP": str(overlap_px)}
    writer = PredictionWriter(out, ds.RasterXSize, ds.RasterYSize, gt, ds.GetProjection(),
                              card.classes, confidence=conf_path,
                              confidence_dtype=confidence_dtype, probabilities=prob_path,
                              metadata=metadata)
    try:
        if not resampled:
            total, skipped = engine.run(source, _strip_sink(writer, card))
        else:
            log.info("resampling from %.4g m to the model's %.4g m", raster_gsd, model_gsd)
            total, skipped = _predict_resampled(engine, ds, source, writer, out, model_gsd,
                                                card)
        reporter("writing", 0.0, "overviews")
        cancelled = threading.Event()

        def overview_progress(fraction: float) -> bool:
            try:
                reporter("writing", fraction, "overviews")
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
        if write_style:
            write_qml(qml_path(out), card.classes)
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
    with contextlib.suppress(Cancelled):  # done: a late cancel changes nothing
        reporter("writing", 1.0, str(out))
    return PredictResult(out, conf_path, total, skipped, time.perf_counter() - start, str(dev),
                         prob_path, domain, resampled, tile_px, overlap_px,
                         alignment.to_dict() if alignment else None)


# -- strips to output arrays ------------------------------------------------------------------

def _strip_sink(writer: PredictionWriter, card: ModelCard) -> Callable[[Strip], None]:
    codes = np.asarray(card.class_codes(), dtype=np.uint8)
    want_conf = writer.conf is not None
    want_probs = writer.probs is not None
    as_percent = writer.confidence_dtype == "uint8"

    def write_rows(row_off: int, probs: np.ndarray, ok: np.ndarray) -> None:
        h, w = ok.shape
        if not ok.any():
            classes = np.zeros((h, w), np.uint8)
            conf = np.full((h, w), CONFIDENCE_NODATA, writer.confidence_dtype) if want_conf \
                else None
            probs_out = np.full((len(codes), h, w), PROBABILITY_NODATA, np.float32) \
                if want_probs else None
            writer.write(row_off, classes, conf, probs_out)
            return
        classes = np.where(ok, codes[probs.argmax(axis=0)], CLASS_NODATA).astype(np.uint8)
        conf = probs_out = None
        if want_conf:
            pmax = probs.max(axis=0)
            if as_percent:
                pmax = np.clip(np.rint(pmax * 100.0), 1, 100)
            conf = np.where(ok, pmax, CONFIDENCE_NODATA).astype(writer.confidence_dtype)
        if want_probs:
            probs_out = np.where(ok[None], probs, PROBABILITY_NODATA).astype(np.float32)
        writer.write(row_off, classes, conf, probs_out)

    def sink(strip: Strip) -> None:
        ok = strip.valid & strip.covered
        for r in range(0, strip.rows, SINK_ROWS):  # bounded temporaries on very wide rasters
            rows = slice(r, r + SINK_ROWS)
            write_rows(strip.row_off + r, strip.probs[:, rows], ok[rows])

    return sink


# -- the three-stage pipeline -----------------------------------------------------------------

_END = object()


@dataclass
class _Batch:
    tiles: list[Tile] = field(default_factory=list)
    valid: list[Optional[np.ndarray]] = field(default_factory=list)
    compute: list[int] = field(default_factory=list)  # positions in ``tiles`` to run the model on
    arrays: list[np.ndarray] = field(default_factory=list)
    stacked: Optional[torch.Tensor] = None
    probs: Optional[np.ndarray] = None

    @property
    def skipped(self) -> int:
        return len(self.tiles) - len(self.compute)


@dataclass
class _Failure:
    error: BaseException


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _pad(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad ``[C, h, w]`` at the bottom/right to ``height x width`` by reflection."""
    _, h, w = array.shape
    if h == height and w == width:
        return array
    mode = "reflect" if h > 1 and w > 1 else "edge"
    return np.pad(array, ((0, 0), (0, height - h), (0, width - w)), mode=mode)


class _Engine:
    """Runs one model over one :class:`RasterReader`, feeding finished strips to a sink."""

    def __init__(self, card: ModelCard, net: nn.Module, dev: torch.device, domain: str,
                 mean: Sequence[float], std: Sequence[float], tile: int, overlap: int,
                 batch_size: int, amp: bool, reporter: Reporter) -> None:
        self.card, self.net, self.dev, self.domain = card, net, dev, domain
        self.mean, self.std = list(mean), list(std)
        self.tile, self.overlap = tile, overlap
        self.batch_size = batch_size
        self.amp = bool(amp and dev.type == "cuda")
        self.reporter = reporter
        self.divisor = input_divisor(card.architecture)

    def run(self, reader: RasterReader, sink: Callable[[Strip], None]) -> tuple[int, int]:
        """Predict every tile of ``reader``; returns ``(tiles_total, tiles_skipped)``."""
        grid = make_grid(reader.width, reader.height, self.tile, self.overlap)
        div = self.divisor
        pad_h = math.ceil(grid.tile_h / div) * div
        pad_w = math.ceil(grid.tile_w / div) * div
        accumulator = StripAccumulator(grid, self.card.num_classes)
        stop = threading.Event()
        to_model: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        to_blend: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        blend_errors: list[BaseException] = []
        pin = self.dev.type == "cuda"

        def read_tiles() -> None:
            try:
                batch = _Batch()
                for t in grid.tiles():
                    if stop.is_set():
                        return
                    if reader.is_empty(t.window):
                        batch.tiles.append(t)
                        batch.valid.append(None)
                    else:
                        data, valid = reader.read(t.window)
                        batch.tiles.append(t)
                        if valid.any():
                            x = normalize(data, self.mean, self.std)
                            x[:, ~valid] = 0.0
                            batch.valid.append(valid)
                            batch.compute.append(len(batch.tiles) - 1)
                            batch.arrays.append(_pad(x, pad_h, pad_w))
                        else:
                            batch.valid.append(None)
                    if (len(batch.compute) >= self.batch_size
                            or len(batch.tiles) >= MAX_TILES_PER_BATCH):
                        self._stack(batch, pin)
                        if not _put(to_model, batch, stop):
                            return
                        batch = _Batch()
                if batch.tiles:
                    self._stack(batch, pin)
                    _put(to_model, batch, stop)
            except BaseException as exc:  # handed to the model thread, which raises it
                _put(to_model, _Failure(exc), stop)
            finally:
                _put(to_model, _END, stop)

        def blend() -> None:
            try:
                while not stop.is_set():
                    try:
                        item = to_blend.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if item is _END:
                        return
                    k = 0
                    for i, (t, valid) in enumerate(zip(item.tiles, item.valid)):
                        probs = None
                        if k < len(item.compute) and item.compute[k] == i:
                            probs = item.probs[k]
                            k += 1
                        for strip in accumulator.add(t, probs, valid):
                            sink(strip)
            except BaseException as exc:
                blend_errors.append(exc)
                stop.set()

        reader_thread = threading.Thread(target=read_tiles, name="lovecs-read", daemon=True)
        blend_thread = threading.Thread(target=blend, name="lovecs-blend", daemon=True)
        total, done, skipped = len(grid), 0, 0
        was_training = self.net.training
        self.net.eval()
        self.net.to(self.dev)
        reader_thread.start()
        blend_thread.start()
        try:
            self.reporter("mapping", 0.0, f"0/{total} tiles")
            with csn_domain(self.net, self.domain):
                while True:
                    try:
                        item = to_model.get(timeout=0.05)
                    except queue.Empty:
                        self._check(blend_errors)
                        continue
                    if item is _END:
                        break
                    if isinstance(item, _Failure):
                        raise item.error
                    if item.compute:
                        item.probs = self._forward(item.stacked, grid)
                    item.stacked = None
                    if not _put(to_blend, item, stop):
                        self._check(blend_errors)
                    done += len(item.tiles)
                    skipped += item.skipped
                    self.reporter("mapping", done / total, f"{done}/{total} tiles")
                    self._check(blend_errors)
            _put(to_blend, _END, stop)
            blend_thread.join()
            self._check(blend_errors)
        finally:
            stop.set()
            while True:  # unblock the reader
                try:
                    to_model.get_nowait()
                except queue.Empty:
                    break
            reader_thread.join()
            blend_thread.join()
            self.net.train(was_training)
        return total, skipped

    def _check(self, errors: list[BaseException]) -> None:
        if errors:
            raise errors[0]
        self.reporter.check()

    def _stack(self, batch: _Batch, pin: bool) -> None:
        if batch.arrays:
            stacked = torch.from_numpy(np.stack(batch.arrays))
            batch.stacked = stacked.pin_memory() if pin else stacked
            batch.arrays = []

    def _forward(self, x: torch.Tensor, grid: TileGrid) -> np.ndarray:
        """Class probabilities of a batch. When the GPU runs out of memory, the batch is split
        in halves (then quarters ...) and the smaller size is kept for the rest of the run; the
        log says so. Only a single tile that does not fit is an error."""
        n = x.shape[0]
        chunk = min(n, getattr(self, "max_forward", None) or n)
        while True:
            try:
                parts = [self._forward_once(x[i:i + chunk], grid) for i in range(0, n, chunk)]
                return parts[0] if len(parts) == 1 else np.concatenate(parts)
            except torch.cuda.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if chunk == 1:
                    raise RuntimeError(
                        f"out of GPU memory even for a single tile of {self.tile} px: choose a "
                        f"smaller tile size (--tile), or run on the CPU (--device cpu)") from None
                smaller = max(1, chunk // 2)
                log.warning("out of GPU memory with %d tiles per batch: going on with %d", chunk,
                            smaller)
                chunk = self.max_forward = smaller

    def _forward_once(self, x: torch.Tensor, grid: TileGrid) -> np.ndarray:
        x = x.to(self.dev, non_blocking=True)
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16,
                                                    enabled=self.amp):
            logits = self.net(x)
        if logits.shape[-2:] != x.shape[-2:]:
            raise RuntimeError(f"the model returned {tuple(logits.shape[-2:])} pixels for an "
                               f"input of {tuple(x.shape[-2:])}")
        probs = torch.softmax(logits.float(), dim=1)[:, :, :grid.tile_h, :grid.tile_w]
        return probs.cpu().numpy()


# -- running at the model's GSD ---------------------------------------------------------------

def _predict_resampled(engine: _Engine, ds: gdal.Dataset, source: RasterReader,
                       writer: PredictionWriter, out: Path, model_gsd: float,
                       card: ModelCard) -> tuple[int, int]:
    """Predict on a warped VRT at ``model_gsd``, warp the result back onto the input grid and
    stream it, masked by the input's validity, into ``writer``."""
    warped = warp_to_gsd(ds, model_gsd)
    model_reader = RasterReader(warped, source.bands)
    tmp_out = temporary_path(out, "model-grid")
    temps: list[Path] = []
    stage = PredictionWriter(
        tmp_out, warped.RasterXSize, warped.RasterYSize, warped.GetGeoTransform(),
        warped.GetProjection(), card.classes,
        confidence=None if writer.conf is None else temporary_path(out, "model-grid-conf"),
        confidence_dtype=writer.confidence_dtype,
        probabilities=None if writer.probs is None else temporary_path(out, "model-grid-prob"),
        styled=False)
    try:
        total, skipped = engine.run(model_reader, _strip_sink(stage, card))
        model_reader.close()
        temps += stage.commit(overviews=False)
        nodata = [CLASS_NODATA]
        if writer.conf is not None:
            nodata.append(CONFIDENCE_NODATA)
        if writer.probs is not None:
            nodata.append(PROBABILITY_NODATA)
        back = []
        for i, (path, nd) in enumerate(zip(list(temps), nodata)):
            back_path = temporary_path(out, "input-grid")
            temps.append(back_path)
            _warp_onto(path, ds, back_path, nd, engine.reporter, i, len(nodata))
            back.append(back_path)
        _copy_masked(back, source, writer, engine.reporter)
    finally:
        stage.abort()
        for p in temps:
            remove_raster(p)
    return total, skipped


def _warp_onto(src: Path, like: gdal.Dataset, dst: Path, nodata: float, reporter: Reporter,
               index: int, count: int) -> None:
    """Warp ``src`` (nearest neighbour) onto the grid of ``like`` into the GeoTIFF ``dst``."""
    src_ds = gdal.Open(str(src))
    band = src_ds.GetRasterBand(1)
    dtype, bands = band.DataType, src_ds.RasterCount
    band = None
    out = gdal.GetDriverByName("GTiff").Create(
        str(dst), like.RasterXSize, like.RasterYSize, bands, dtype,
        ["TILED=YES", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE", "BIGTIFF=IF_SAFER"])
    try:
        out.SetGeoTransform(like.GetGeoTransform())
        out.SetProjection(like.GetProjection())
        for b in range(1, bands + 1):
            out.GetRasterBand(b).SetNoDataValue(float(nodata))
        cancelled = threading.Event()

        def callback(fraction: float, *_: object) -> int:
            try:
                reporter("resampling", (index + fraction) / count, "back to the input grid")
            except Cancelled:
                cancelled.set()
                return 0
            return 1

        try:
            gdal.Warp(out, src_ds, resampleAlg="near", srcNodata=nodata, dstNodata=nodata,
                      warpOptions=["INIT_DEST=NO_DATA"], callback=callback)
        except RuntimeError:
            if cancelled.is_set():
                raise Cancelled("cancelled by the user") from None
            raise
    finally:
        out = None
        src_ds = None


def _copy_masked(paths: list[Path], source: RasterReader, writer: PredictionWriter,
                 reporter: Reporter) -> None:
    """Stream the warped-back files into ``writer`` in strips, nodata where the input is not
    valid (the model grid's footprint is coarser than the input's mask)."""
    datasets = [gdal.Open(str(p)) for p in paths]
    try:
        height, width = source.height, source.width
        for row in range(0, height, BLOCK):
            rows = min(BLOCK, height - row)
            valid = source.read_valid(Window(0, row, width, rows))
            arrays = [ds.ReadAsArray(0, row, width, rows) for ds in datasets]
            classes = np.where(valid, arrays[0], CLASS_NODATA).astype(np.uint8)
            conf = probs = None
            k = 1
            if writer.conf is not None:
                conf = np.where(valid & (classes > 0), arrays[k], CONFIDENCE_NODATA)
                conf = conf.astype(writer.confidence_dtype)
                k += 1
            if writer.probs is not None:
                p = arrays[k].reshape(-1, rows, width)
                probs = np.where((valid & (classes > 0))[None], p, PROBABILITY_NODATA)
                probs = probs.astype(np.float32)
            writer.write(row, classes, conf, probs)
            reporter("resampling", 1.0 if row + rows >= height else (row + rows) / height,
                     "masking")
    finally:
        datasets.clear()
