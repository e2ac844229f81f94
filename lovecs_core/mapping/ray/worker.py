"""The worker side of mapping on Ray (:mod:`lovecs_core.mapping.ray.map`): what a worker opens, what it is asked
and what it returns, and the actor itself. Imports no Ray: the driver wraps :class:`MapWorker`
with ``ray.remote``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np
import torch
from osgeo import gdal
from torch import nn

from ...model.card import ModelCard
from ...progress import Reporter
from ...rasters.reading import RasterReader, Window, open_dataset
from ..blockmap import map_block
from ..pipeline import TileEngine
from ..predict import MAPPING_CACHE_BYTES, default_batch_size
from ..tiling import make_grid

_EMPTY_SOURCE = '<SourceDataset relativeToVRT="0"></SourceDataset>'


def portable_source(ds: gdal.Dataset, base: Optional[gdal.Dataset] = None) -> str:
    """What a worker opens to read the same pixels as ``ds``: its file (absolute path), or its
    VRT XML when it is an in-memory VRT (an extent's window, a warp to the model's GSD). A warp
    of an in-memory VRT names no source: ``base``'s XML is put inline."""
    name = ds.GetDescription()
    if name and not name.lstrip().startswith("<"):
        return os.path.abspath(name) if os.path.exists(name) else name
    xml = ds.GetMetadata("xml:VRT")[0]
    if _EMPTY_SOURCE in xml:
        if base is None:
            raise ValueError("a warped in-memory VRT needs the dataset it warps")
        inline = escape(portable_source(base))
        xml = xml.replace(
            _EMPTY_SOURCE, f'<SourceDataset relativeToVRT="0">{inline}</SourceDataset>'
        )
    return str(xml)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs besides the model: the engine's settings."""

    device: str  # "cpu" or "cuda" (the actor's own GPU)
    threads: int
    domain: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tile: int
    overlap: int
    batch_size: Optional[int]
    amp: bool
    cpu_bf16: bool
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None  # the engine's pixel transform


@dataclass(frozen=True)
class BlockJob:
    source: str
    bands: tuple[int, ...]
    block: Window
    confidence_dtype: Optional[str]
    probabilities: bool


@dataclass
class BlockResult:
    block: Window
    classes: np.ndarray
    confidence: Optional[np.ndarray]
    probabilities: Optional[np.ndarray]
    computed: int
    skipped: list[tuple[int, int]]
    pid: int
    precision: str


class MapWorker:
    """A Ray actor (wrapped with ``ray.remote`` by the driver): loads the model once, then maps
    blocks (:func:`~.blockmap.map_block`)."""

    def __init__(self, model: tuple[ModelCard, nn.Module], settings: WorkerSettings) -> None:
        torch.set_num_threads(max(1, settings.threads))
        gdal.SetCacheMax(MAPPING_CACHE_BYTES)
        card, net = model  # unpacked by Ray from the driver's object (on CPU)
        dev = torch.device(settings.device)
        batch = settings.batch_size or default_batch_size(dev)
        self.engine = TileEngine(
            card,
            net,
            dev,
            settings.domain,
            settings.mean,
            settings.std,
            settings.tile,
            settings.overlap,
            batch,
            settings.amp,
            Reporter(),
            settings.cpu_bf16,
        )
        self.engine.transform = settings.transform
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.engine.prepared())
        self._readers: dict[str, RasterReader] = {}

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "precision": self.engine.precision,
            "device": str(self.engine.dev),
        }

    def _reader(self, source: str, bands: Sequence[int]) -> RasterReader:
        key = f"{list(bands)}{source}"
        if key not in self._readers:
            for old in self._readers.values():  # one stage at a time: the last one only
                old.close()
            self._readers = {key: RasterReader(open_dataset(source), list(bands))}
        return self._readers[key]

    def map(self, job: BlockJob) -> BlockResult:
        reader = self._reader(job.source, job.bands)
        e = self.engine
        grid = make_grid(reader.width, reader.height, e.tile, e.overlap)
        m = map_block(e, reader, grid, job.block, job.confidence_dtype, job.probabilities)
        return BlockResult(
            job.block,
            m.classes,
            m.confidence,
            m.probabilities,
            m.computed,
            [(t.ix, t.iy) for t in m.skipped],
            os.getpid(),
            e.precision,
        )
