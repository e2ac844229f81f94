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
import ctypes
import ctypes.util
import logging
import math
import queue
import threading
from dataclasses import dataclass, field
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
from .tiling import Tile, TileGrid, make_grid
from .writer import CLASS_NODATA, CONFIDENCE_NODATA, PROBABILITY_NODATA, PredictionWriter

log = logging.getLogger(__name__)

#: Batches waiting between the stages (reader -> model -> blender).
PREFETCH = 2
#: At most this many tiles (computed or skipped) per batch, so progress keeps flowing.
MAX_TILES_PER_BATCH = 256
#: Freed heap memory goes back to the system after this many batches (glibc's ``malloc_trim``).
TRIM_EVERY = 2


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or a no-op elsewhere. Three threads churning through tile-sized
    arrays leave freed pages in glibc's arenas: on 64 MPix (null model) the peak grew 0.57-0.60 GiB
    above the base without trimming, 0.42-0.46 GiB when trimming every 8 batches."""
    name = ctypes.util.find_library("c")
    try:
        libc_trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        libc_trim = None

    def trim() -> None:
        if libc_trim is not None:
            libc_trim(0)

    return trim


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
        grid = make_grid(reader.width, reader.height, self.tile, self.overlap)
        pad_h, pad_w = self.padded_size(grid)
        accumulator = BandAccumulator(grid, self.card.num_classes)
        stop = threading.Event()
        to_model: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        to_blend: "queue.Queue[Any]" = queue.Queue(maxsize=PREFETCH)
        blend_errors: list[BaseException] = []
        pin = self.dev.type == "cuda"

        def read_tiles() -> None:
            try:
                batch = _Batch()
                for t in tile_order(grid):
                    if stop.is_set():
                        return
                    valid, x = self.read_tile(reader, t, pad_h, pad_w)
                    batch.tiles.append(t)
                    batch.valid.append(valid)
                    if x is not None:
                        batch.compute.append(len(batch.tiles) - 1)
                        batch.arrays.append(x)
                    if (
                        len(batch.compute) >= self.batch_size
                        or len(batch.tiles) >= MAX_TILES_PER_BATCH
                    ):
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
                        for piece in accumulator.add(t, probs, valid):
                            sink(piece)
            except BaseException as exc:
                blend_errors.append(exc)
                stop.set()

        reader_thread = threading.Thread(target=read_tiles, name="lovecs-read", daemon=True)
        blend_thread = threading.Thread(target=blend, name="lovecs-blend", daemon=True)
        total, done, skipped, batches = len(grid), 0, 0, 0
        trim = _malloc_trim()
        reader_thread.start()
        blend_thread.start()
        try:
            self.reporter(MAPPING, 0.0, f"0/{total} tiles")
            with self.prepared():
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
                        item.probs = self.forward(item.stacked, grid)
                    item.stacked = None
                    if not _put(to_blend, item, stop):
                        self._check(blend_errors)
                    done += len(item.tiles)
                    skipped += item.skipped
                    batches += 1
                    if batches % TRIM_EVERY == 0:
                        trim()
                    self.reporter(MAPPING, done / total, f"{done}/{total} tiles")
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
        return total, skipped

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

    def _check(self, errors: list[BaseException]) -> None:
        if errors:
            raise errors[0]
        self.reporter.check()

    def _stack(self, batch: _Batch, pin: bool) -> None:
        if batch.arrays:
            stacked = torch.from_numpy(np.stack(batch.arrays))
            batch.stacked = stacked.pin_memory() if pin else stacked
            batch.arrays = []

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
