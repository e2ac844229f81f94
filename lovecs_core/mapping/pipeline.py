"""The pipeline that runs a model over a raster, tile by tile, in three overlapping stages.

A reader thread reads windows with GDAL, normalises them with the card's statistics of the
chosen domain and stacks batches into a bounded queue; the calling thread runs the model on the
chosen device (mixed precision on CUDA); a blender thread merges the overlapping tiles with
smooth weights (:class:`~.blend.BandAccumulator`) and hands each finished piece to a sink
(:class:`PieceSink` turns it into class map, confidence and probabilities, written block by
block). Memory is bounded by the tile, the batch queues and a compact carry across the raster's
shorter side (tiles go along the longer one), whatever the raster's size. When the GPU runs out
of memory, batches are split and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..alignment.normalize import normalize
from ..compute.oom import ChunkedBatch
from ..compute.runtime import cpu_bf16_supported
from ..contract import MAPPING
from ..model.card import ModelCard
from ..model.csn import csn_domain
from ..model.networks import input_divisor
from ..progress import Reporter
from ..rasters.reading import RasterReader
from .blend import BandAccumulator, Piece, tile_order
from .stages import END, Batch, Failure, malloc_trim, put, stack
from .tiling import Tile, TileGrid, make_grid
from .writer import CLASS_NODATA, CONFIDENCE_NODATA, PROBABILITY_NODATA, PredictionWriter

log = logging.getLogger(__name__)

#: Batches waiting between the stages (reader -> model -> blender).
PREFETCH = 2
#: At most this many tiles (computed or skipped) per batch, so progress keeps flowing.
MAX_TILES_PER_BATCH = 256
#: Freed heap memory goes back to the system after this many batches (glibc's ``malloc_trim``).
TRIM_EVERY = 2


def piece_arrays(
    piece: Piece,
    codes: np.ndarray,
    confidence_dtype: Optional[str] = None,
    probabilities: bool = False,
) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """A finished piece as output arrays: class codes (``codes[argmax]``), confidence (None
    unless ``confidence_dtype``: ``uint8`` percent or ``float32``) and probabilities."""
    ok = piece.valid & piece.covered
    probs = piece.probs
    h, w = ok.shape
    conf = probs_out = None
    if not ok.any():
        classes = np.zeros((h, w), np.uint8)
        if confidence_dtype:
            conf = np.full((h, w), CONFIDENCE_NODATA, confidence_dtype)
        if probabilities:
            probs_out = np.full((len(codes), h, w), PROBABILITY_NODATA, np.float32)
    else:
        classes = np.where(ok, codes[probs.argmax(axis=0)], CLASS_NODATA).astype(np.uint8)
        if confidence_dtype:
            pmax = probs.max(axis=0)
            if confidence_dtype == "uint8":
                pmax = np.clip(np.rint(pmax * 100.0), 1, 100)
            conf = np.where(ok, pmax, CONFIDENCE_NODATA).astype(confidence_dtype)
        if probabilities:
            probs_out = np.where(ok[None], probs, PROBABILITY_NODATA).astype(np.float32)
    return classes, conf, probs_out


class PieceSink:
    """Writes finished pieces into ``writer``: class codes, confidence, probabilities."""

    def __init__(self, writer: PredictionWriter, card: ModelCard) -> None:
        self.writer = writer
        self.codes = np.asarray(card.class_codes(), dtype=np.uint8)
        self.confidence_dtype = writer.confidence_dtype if writer.conf is not None else None
        self.probabilities = writer.probs is not None

    def __call__(self, piece: Piece) -> None:
        classes, conf, probs = piece_arrays(
            piece, self.codes, self.confidence_dtype, self.probabilities
        )
        self.writer.write(piece.row_off, classes, conf, probs, col_off=piece.col_off)


def _pad(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad ``[C, h, w]`` at the bottom/right to ``height x width`` by reflection."""
    _, h, w = array.shape
    if h == height and w == width:
        return array
    mode: Literal["reflect", "edge"] = "reflect" if h > 1 and w > 1 else "edge"
    return np.pad(array, ((0, 0), (0, height - h), (0, width - w)), mode=mode)


class TileEngine:
    """Runs one model over one :class:`RasterReader`, feeding finished pieces to a sink."""

    def __init__(
        self,
        card: ModelCard,
        net: nn.Module,
        dev: torch.device,
        domain: str,
        mean: Sequence[float],
        std: Sequence[float],
        tile: int,
        overlap: int,
        batch_size: int,
        amp: bool,
        reporter: Reporter,
        cpu_bf16: bool = False,
    ) -> None:
        self.card, self.net, self.dev, self.domain = card, net, dev, domain
        self.mean, self.std = list(mean), list(std)
        #: applied to raw pixels before the normalisation (an alignment with a tone), or None
        self.transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
        self.tile, self.overlap = tile, overlap
        self.batch_size = batch_size
        self.amp = bool(amp and dev.type == "cuda")
        # bfloat16 autocast on a CPU only when asked (maps move by a fraction of a percent of
        # pixels) and computed natively; channels_last on a CPU always: same float32 sums, faster
        self.cpu_bf16 = bool(cpu_bf16 and dev.type == "cpu" and cpu_bf16_supported())
        self.channels_last = dev.type == "cpu"
        self.precision = "bfloat16" if self.cpu_bf16 else "float16" if self.amp else "float32"
        self.reporter = reporter
        self.divisor = input_divisor(card.architecture)
        self.chunks = ChunkedBatch(
            batch_size,
            "tiles per batch",
            "choose a smaller tile size (--tile), or run on the CPU (--device cpu)",
            unit="",
            single=f"a single tile of {tile} px",
        )

    def run(self, reader: RasterReader, sink: Callable[[Piece], None]) -> tuple[int, int]:
        """Predict every tile of ``reader``; returns ``(tiles_total, tiles_skipped)``."""
        return _TileRun(self, reader, sink).run()

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        """The network in eval mode on the device (channels_last on a CPU) with the domain's
        CSN statistics; its mode and memory format are restored afterwards."""
        was_training = self.net.training
        self.net.eval()
        self.net.to(self.dev)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        try:
            with csn_domain(self.net, self.domain):
                yield
        finally:
            self.net.train(was_training)
            if self.channels_last:
                self.net.to(memory_format=torch.contiguous_format)

    def padded_size(self, grid: TileGrid) -> tuple[int, int]:
        """The model's input size for the grid's tiles: each side up to the input divisor."""
        div = self.divisor
        return math.ceil(grid.tile_h / div) * div, math.ceil(grid.tile_w / div) * div

    def read_tile(
        self, reader: RasterReader, tile: Tile, pad_h: int, pad_w: int
    ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """A tile's validity mask and its normalised input padded to ``pad_h x pad_w`` (invalid
        pixels 0); ``(None, None)`` for a tile without a valid pixel (it is skipped)."""
        if reader.is_empty(tile.window):
            return None, None
        data, valid = reader.read(tile.window)
        if not valid.any():
            return None, None
        if self.transform is not None:
            data = self.transform(data)
        x = normalize(data, self.mean, self.std)
        x[:, ~valid] = 0.0
        return valid, _pad(x, pad_h, pad_w)

    def forward(self, x: torch.Tensor, grid: TileGrid) -> np.ndarray:
        """Class probabilities of a batch. When the GPU runs out of memory, the batch is split
        in halves (then quarters ...) and the smaller size is kept for the rest of the run; the
        log says so. Only a single tile that does not fit is an error (:mod:`.oom`)."""
        parts: list[np.ndarray] = []
        self.chunks.run(
            x.shape[0],
            lambda items, _share: parts.append(self._forward_once(x[items], grid)),
            undo=parts.clear,
        )
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _forward_once(self, x: torch.Tensor, grid: TileGrid) -> np.ndarray:
        x = x.to(self.dev, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cpu = self.dev.type == "cpu"
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type="cpu" if cpu else "cuda",
                dtype=torch.bfloat16 if cpu else torch.float16,
                enabled=self.cpu_bf16 if cpu else self.amp,
            ),
        ):
            logits = self.net(x)
        if logits.shape[-2:] != x.shape[-2:]:
            raise RuntimeError(
                f"the model returned {tuple(logits.shape[-2:])} pixels for an "
                f"input of {tuple(x.shape[-2:])}"
            )
        probs = torch.softmax(logits.float(), dim=1)[:, :, : grid.tile_h, : grid.tile_w]
        return probs.cpu().contiguous().numpy()


class _TileRun:
    """One run of the three stages over a reader: the reader and blender threads, the model on
    the calling thread, and the queues, counts and errors they share."""

    def __init__(
        self, engine: TileEngine, reader: RasterReader, sink: Callable[[Piece], None]
    ) -> None:
        self.engine, self.reader, self.sink = engine, reader, sink
        self.grid = make_grid(reader.width, reader.height, engine.tile, engine.overlap)
        self.pad_h, self.pad_w = engine.padded_size(self.grid)
        self.accumulator = BandAccumulator(self.grid, engine.card.num_classes)
        self.stop = threading.Event()
        self.to_model: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        self.to_blend: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        self.blend_errors: list[BaseException] = []
        self.pin = engine.dev.type == "cuda"
        self.total, self.done, self.skipped, self.batches = len(self.grid), 0, 0, 0

    def run(self) -> tuple[int, int]:
        reader_thread = threading.Thread(target=self.read_tiles, name="lovecs-read", daemon=True)
        blend_thread = threading.Thread(target=self.blend, name="lovecs-blend", daemon=True)
        trim = malloc_trim()
        reader_thread.start()
        blend_thread.start()
        try:
            self.engine.reporter(MAPPING, 0.0, f"0/{self.total} tiles")
            with self.engine.prepared():
                self.model_loop(trim)
            put(self.to_blend, END, self.stop)
            blend_thread.join()
            self.check()
        finally:
            self.stop.set()
            while True:  # unblock the reader
                try:
                    self.to_model.get_nowait()
                except queue.Empty:
                    break
            reader_thread.join()
            blend_thread.join()
        return self.total, self.skipped

    def check(self) -> None:
        """Raise the blender's error, or a cancel."""
        if self.blend_errors:
            raise self.blend_errors[0]
        self.engine.reporter.check()

    # -- the reader thread
    def read_tiles(self) -> None:
        try:
            self._read_tiles()
        except BaseException as exc:  # handed to the model thread, which raises it
            put(self.to_model, Failure(exc), self.stop)
        finally:
            put(self.to_model, END, self.stop)

    def _read_tiles(self) -> None:
        engine, batch = self.engine, Batch()
        for t in tile_order(self.grid):
            if self.stop.is_set():
                return
            valid, x = engine.read_tile(self.reader, t, self.pad_h, self.pad_w)
            batch.tiles.append(t)
            batch.valid.append(valid)
            if x is not None:
                batch.compute.append(len(batch.tiles) - 1)
                batch.arrays.append(x)
            if len(batch.compute) >= engine.batch_size or len(batch.tiles) >= MAX_TILES_PER_BATCH:
                stack(batch, self.pin)
                if not put(self.to_model, batch, self.stop):
                    return
                batch = Batch()
        if batch.tiles:
            stack(batch, self.pin)
            put(self.to_model, batch, self.stop)

    # -- the model, on the calling thread
    def model_loop(self, trim: Callable[[], None]) -> None:
        while True:
            try:
                item = self.to_model.get(timeout=0.05)
            except queue.Empty:
                self.check()
                continue
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.error
            self._forward(item)
            self.batches += 1
            if self.batches % TRIM_EVERY == 0:
                trim()
            self.engine.reporter(MAPPING, self.done / self.total, f"{self.done}/{self.total} tiles")
            self.check()

    def _forward(self, item: Batch) -> None:
        """The model on one batch, handed on to the blender and counted."""
        if item.compute:
            assert item.stacked is not None
            item.probs = self.engine.forward(item.stacked, self.grid)
        item.stacked = None
        if not put(self.to_blend, item, self.stop):
            self.check()
        self.done += len(item.tiles)
        self.skipped += item.skipped

    # -- the blender thread
    def blend(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    item = self.to_blend.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is END:
                    return
                self._blend(item)
        except BaseException as exc:
            self.blend_errors.append(exc)
            self.stop.set()

    def _blend(self, item: Batch) -> None:
        """Add a batch's tiles (probabilities, or none for a skipped tile) to the accumulator
        and sink the pieces it finishes."""
        k = 0
        for i, (t, valid) in enumerate(zip(item.tiles, item.valid)):
            probs = None
            if k < len(item.compute) and item.compute[k] == i:
                assert item.probs is not None
                probs = item.probs[k]
                k += 1
            for piece in self.accumulator.add(t, probs, valid):
                self.sink(piece)
