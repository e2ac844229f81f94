"""Training windows from labelled rasters.

* :func:`pair_rasters` matches image and label rasters (folders or file lists, by file stem).
* :class:`RasterSource` is one raster, held in memory (native dtype) or read window by window
  through GDAL, with an optional label array (class codes, 0 = no label) kept in memory as uint8.
* :func:`band_statistics` gives per-band mean/std over valid pixels.
* :class:`WindowSampler` draws random windows weighted toward labelled pixels, with random scale,
  flips and 90-degree rotations, normalised and ready for a network.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .augment import SensorRandomisation, randomise
from .raster import RasterError, RasterReader, Window

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png")
#: Rasters up to this many pixels (all sources together) are read into memory for training.
IN_MEMORY_PIXELS = 200_000_000
_NATIVE = {"byte": np.uint8, "uint16": np.uint16, "int16": np.int16}


def expand_paths(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given and the raster files inside given folders (sorted)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise RasterError(f"no raster files ({', '.join(RASTER_SUFFIXES)}) in {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise RasterError(f"not found: {path}")
    return out


def pair_rasters(images: Sequence[str | os.PathLike[str]],
                 labels: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """Match image and label rasters by file stem; lists of files of equal length whose stems do
    not match are paired in order."""
    image_files, label_files = expand_paths(images), expand_paths(labels)
    by_stem = {p.stem: p for p in label_files}
    if all(p.stem in by_stem for p in image_files):
        return [(p, by_stem[p.stem]) for p in image_files]
    if len(image_files) == len(label_files) and not any(Path(i).is_dir() for i in images):
        return list(zip(image_files, label_files))
    missing = [p.name for p in image_files if p.stem not in by_stem]
    raise RasterError(f"no label raster with the same name for {len(missing)} image(s), "
                      f"e.g. {missing[:3]}")


def code_lookup(codes: Sequence[int]) -> np.ndarray:
    """A 256-entry table mapping class codes to class indices 0..K-1; 0 and unknown codes -> -1."""
    lut = np.full(256, -1, dtype=np.int64)
    for index, code in enumerate(codes):
        lut[int(code)] = index
    return lut


def read_labels(path: str | os.PathLike[str],
                shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A label raster's first band as uint8 class codes (its nodata value becomes 0)."""
    reader = RasterReader(path, [1])
    if shape is not None and (reader.height, reader.width) != shape:
        raise RasterError(f"label raster {path} is {reader.width}x{reader.height} but its image is "
                          f"{shape[1]}x{shape[0]} pixels; labels must be on the image's grid")
    data, valid = reader.read(Window(0, 0, reader.width, reader.height))
    codes = data[0]
    if codes.size and (codes[valid].min(initial=0) < 0 or codes[valid].max(initial=0) > 255):
        raise RasterError(f"label raster {path}: class codes must be integers 0..255")
    out = np.where(valid, codes, 0).astype(np.uint8)
    reader.close()
    return out


class RasterSource:
    """One raster to read windows from (in memory or through GDAL) plus optional labels."""

    def __init__(self, path: str | os.PathLike[str], bands: Optional[Sequence[int]] = None,
                 labels: Optional[np.ndarray] = None, in_memory: bool = True,
                 label_path: Optional[str | os.PathLike[str]] = None) -> None:
        self.path = Path(path)
        self.reader = RasterReader(path, bands)
        self.bands = self.reader.bands
        self.height, self.width = self.reader.height, self.reader.width
        self.dtype_name = self.reader.dtype_name()
        self.label_path = Path(label_path) if label_path else None
        self.labels = labels
        if label_path is not None and labels is None:
            self.labels = read_labels(label_path, (self.height, self.width))
        if self.labels is not None and self.labels.shape != (self.height, self.width):
            raise RasterError(f"labels for {path} do not match its size")
        self._data: Optional[np.ndarray] = None
        self._valid: Optional[np.ndarray] = None
        if in_memory:
            self.load()

    @property
    def band_count(self) -> int:
        return len(self.bands)

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def load(self, strip: int = 1024) -> None:
        """Read the whole raster into memory (native dtype) for fast window reads."""
        dtype = _NATIVE.get(self.dtype_name, np.float32)
        data = np.empty((self.band_count, self.height, self.width), dtype=dtype)
        valid = np.empty((self.height, self.width), dtype=bool)
        for y in range(0, self.height, strip):
            h = min(strip, self.height - y)
            d, v = self.reader.read(Window(0, y, self.width, h))
            data[:, y:y + h] = np.where(v, d, 0).astype(dtype) if dtype != np.float32 else d
            valid[y:y + h] = v
        self._data, self._valid = data, valid

    def read(self, xoff: int, yoff: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data float32[C, h, w], valid bool[h, w])`` for a window inside the raster."""
        if self._data is not None and self._valid is not None:
            d = self._data[:, yoff:yoff + height, xoff:xoff + width].astype(np.float32)
            return d, self._valid[yoff:yoff + height, xoff:xoff + width].copy()
        return self.reader.read(Window(xoff, yoff, width, height))

    def read_padded(self, xoff: int, yoff: int, width: int, height: int
                    ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Like :meth:`read` for a window that may stick out of the raster: outside pixels are
        0 and invalid; also returns the labels of the window (0 outside) when there are labels."""
        data = np.zeros((self.band_count, height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        labels = None if self.labels is None else np.zeros((height, width), dtype=np.uint8)
        x0, y0 = max(xoff, 0), max(yoff, 0)
        x1, y1 = min(xoff + width, self.width), min(yoff + height, self.height)
        if x1 > x0 and y1 > y0:
            d, v = self.read(x0, y0, x1 - x0, y1 - y0)
            sl = (slice(y0 - yoff, y1 - yoff), slice(x0 - xoff, x1 - xoff))
            data[(slice(None), *sl)] = d
            valid[sl] = v
            if labels is not None and self.labels is not None:
                labels[sl] = self.labels[y0:y1, x0:x1]
        return data, valid, labels

    def strips(self, rows: int = 512, step: int = 1) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Full-width strips (every ``step``-th one), for statistics."""
        for i, y in enumerate(range(0, self.height, rows)):
            if i % step == 0:
                yield self.read(0, y, self.width, min(rows, self.height - y))

    def close(self) -> None:
        self.reader.close()


def open_sources(pairs: Sequence[tuple[Path, Path]], bands: Optional[Sequence[int]] = None,
                 in_memory: Optional[bool] = None) -> list[RasterSource]:
    """Open image/label pairs; in memory when they are small (``IN_MEMORY_PIXELS``)."""
    if not pairs:
        raise RasterError("no training rasters given")
    sources = [RasterSource(img, bands, label_path=lab, in_memory=False) for img, lab in pairs]
    counts = {s.band_count for s in sources}
    if len(counts) > 1:
        raise RasterError(f"training images have different band counts {sorted(counts)}; "
                          "choose bands with --bands")
    if in_memory is None:
        in_memory = sum(s.pixels for s in sources) <= IN_MEMORY_PIXELS
    if in_memory:
        for s in sources:
            s.load()
    return sources


@dataclass
class BandStats:
    mean: list[float]
    std: list[float]
    minimum: list[float]
    maximum: list[float]
    pixels: int


def band_statistics(sources: Sequence[RasterSource], max_pixels: int = 20_000_000) -> BandStats:
    """Per-band mean, std, min and max over valid pixels (strips are skipped evenly on big
    inputs so at most about ``max_pixels`` are read)."""
    total = sum(s.pixels for s in sources)
    step = max(1, math.ceil(total / max_pixels))
    n_bands = sources[0].band_count
    count = 0
    s1 = np.zeros(n_bands)
    s2 = np.zeros(n_bands)
    lo = np.full(n_bands, np.inf)
    hi = np.full(n_bands, -np.inf)
    for source in sources:
        for data, valid in source.strips(rows=256, step=step):
            if not valid.any():
                continue
            values = data[:, valid].astype(np.float64)
            count += values.shape[1]
            s1 += values.sum(axis=1)
            s2 += np.square(values).sum(axis=1)
            lo = np.minimum(lo, values.min(axis=1))
            hi = np.maximum(hi, values.max(axis=1))
    if count == 0:
        raise RasterError("no valid pixels to compute band statistics from")
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return BandStats(mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(), count)


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` x 90 degrees, then optionally flip left-right."""
    out = np.rot90(array, k, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def resize_window(data: np.ndarray, valid: np.ndarray, labels: Optional[np.ndarray], size: int
                  ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Resample a square window to ``size`` pixels: bilinear (antialiased) data, nearest
    validity and labels."""
    if data.shape[-1] == size and data.shape[-2] == size:
        return data, valid, labels
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(data))[None]
    down = data.shape[-1] > size
    data = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=down)[0].numpy()
    rows = np.minimum((np.arange(size) + 0.5) * valid.shape[0] / size, valid.shape[0] - 1)
    cols = np.minimum((np.arange(size) + 0.5) * valid.shape[1] / size, valid.shape[1] - 1)
    ri, ci = rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :]
    valid = valid[ri, ci]
    if labels is not None:
        labels = labels[ri, ci]
    return data, valid, labels


class WindowSampler:
    """Random training windows from labelled rasters.

    A window centre is drawn from cells of ``cell`` x ``cell`` pixels with probability
    proportional to the number of labelled pixels in the cell (``weighting="labels"``), to the
    number of valid pixels (``"valid"``), or uniformly (``"uniform"``). The window side is
    ``crop / scale`` for a log-uniform random scale in ``scale_range``; it is resampled to
    ``crop`` pixels, rotated/flipped at random (``augment``), sensor-randomised
    (``randomisation``, see :mod:`.augment`; data units ``0..value_max``), and normalised with
    ``mean``/``std`` (invalid pixels become 0 and their labels "ignore").
    """

    def __init__(self, sources: Sequence[RasterSource], codes: Sequence[int], crop: int,
                 mean: Sequence[float], std: Sequence[float],
                 scale_range: tuple[float, float] = (1.0, 1.0), augment: bool = True,
                 weighting: str = "labels", cell: int = 32, seed: Optional[int] = None,
                 randomisation: Optional[SensorRandomisation] = None,
                 value_max: float = 255.0) -> None:
        if weighting not in ("labels", "valid", "uniform"):
            raise ValueError(f"unknown weighting {weighting!r}")
        if weighting == "labels" and any(s.labels is None for s in sources):
            raise ValueError("weighting by labels needs labels for every source")
        self.sources = list(sources)
        self.lut = code_lookup(codes)
        self.crop = int(crop)
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"invalid scale range {scale_range}")
        self.augment = augment
        self.randomisation = randomisation
        self.value_max = float(value_max)
        self.weighting = weighting
        self.cell = int(cell)
        self.rng = np.random.default_rng(seed)
        self._cells: list[np.ndarray] = []
        self._cum = np.zeros(0)
        self.refresh_weights()

    def _cell_weights(self, source: RasterSource) -> np.ndarray:
        c = self.cell
        gh, gw = math.ceil(source.height / c), math.ceil(source.width / c)
        if self.weighting == "uniform":
            return np.ones(gh * gw)
        if self.weighting == "labels":
            assert source.labels is not None
            mask = (self.lut >= 0)[source.labels]  # bool, 1 byte per pixel
        else:
            mask = np.zeros((source.height, source.width), dtype=bool)
            for y in range(0, source.height, 1024):
                _, v = source.read(0, y, source.width, min(1024, source.height - y))
                mask[y:y + v.shape[0]] = v
        padded = np.zeros((gh * c, gw * c), dtype=np.int32)
        padded[:source.height, :source.width] = mask
        return padded.reshape(gh, c, gw, c).sum(axis=(1, 3)).ravel().astype(np.float64)

    def refresh_weights(self) -> None:
        """Recompute the sampling weights (call after the labels changed)."""
        self._cells = [self._cell_weights(s) for s in self.sources]
        totals = np.array([w.sum() for w in self._cells])
        if totals.sum() <= 0:
            raise RasterError("no labelled pixels to sample training windows from"
                              if self.weighting == "labels" else "no valid pixels to sample from")
        self._cum = np.cumsum(totals) / totals.sum()

    @property
    def labelled_pixels(self) -> int:
        return int(sum(w.sum() for w in self._cells)) if self.weighting != "uniform" else 0

    def _centre(self) -> tuple[int, int, int]:
        i = int(np.searchsorted(self._cum, self.rng.random(), side="right"))
        i = min(i, len(self.sources) - 1)
        weights = self._cells[i]
        cdf = np.cumsum(weights)
        k = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))
        k = min(k, len(weights) - 1)
        source = self.sources[i]
        gw = math.ceil(source.width / self.cell)
        gy, gx = divmod(k, gw)
        y0, x0 = gy * self.cell, gx * self.cell
        if self.weighting == "labels":  # centre on a labelled pixel of the cell
            assert source.labels is not None
            block = (self.lut >= 0)[source.labels[y0:y0 + self.cell, x0:x0 + self.cell]]
            ys, xs = np.nonzero(block)
            if ys.size:
                j = int(self.rng.integers(ys.size))
                return i, x0 + int(xs[j]), y0 + int(ys[j])
        y = min(y0 + int(self.rng.integers(self.cell)), source.height - 1)
        x = min(x0 + int(self.rng.integers(self.cell)), source.width - 1)
        return i, x, y

    def sample_one(self) -> tuple[np.ndarray, np.ndarray]:
        """One window: ``(image float32[C, crop, crop], target int64[crop, crop])`` with class
        indices and -1 for ignored pixels."""
        i, cx, cy = self._centre()
        source = self.sources[i]
        lo, hi = self.scale_range
        scale = math.exp(self.rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        side = max(1, int(round(self.crop / scale)))
        x0 = _clamp_start(cx - side // 2, side, source.width)
        y0 = _clamp_start(cy - side // 2, side, source.height)
        data, valid, labels = source.read_padded(x0, y0, side, side)
        data = np.where(valid[None], data, self.mean)
        data, valid, labels = resize_window(data, valid, labels, self.crop)
        if self.augment:
            k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            data, valid = dihedral(data, k, flip), dihedral(valid, k, flip)
            labels = None if labels is None else dihedral(labels, k, flip)
        if self.randomisation is not None:
            data = randomise(data, self.rng, self.randomisation, self.value_max)
        image = ((data - self.mean) / self.std).astype(np.float32)
        image[:, ~valid] = 0.0
        if labels is None:
            target = np.full(valid.shape, -1, dtype=np.int64)
        else:
            target = self.lut[labels]
            target[~valid] = -1
        return image, target

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: ``(images float32[n, C, crop, crop], targets int64[n, crop, crop])``."""
        items = [self.sample_one() for _ in range(n)]
        return np.stack([a for a, _ in items]), np.stack([b for _, b in items])


def _clamp_start(start: int, side: int, extent: int) -> int:
    """Keep a window inside the raster when it fits; centre it when the raster is smaller."""
    if side >= extent:
        return -((side - extent) // 2)
    return min(max(start, 0), extent - side)


class ArraySource(RasterSource):
    """An in-memory image with labels (e.g. the source sample carried in a model file)."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, name: str = "sample",
                 valid: Optional[np.ndarray] = None) -> None:  # noqa: D107 (no GDAL reader)
        self.path = Path(name)
        self.bands = list(range(1, data.shape[0] + 1))
        self.height, self.width = int(data.shape[1]), int(data.shape[2])
        self.dtype_name = {np.dtype(np.uint8): "byte", np.dtype(np.uint16): "uint16"}.get(
            data.dtype, "float32")
        self.label_path = None
        self.labels = labels.astype(np.uint8)
        self._data = data
        self._valid = np.ones(labels.shape, dtype=bool) if valid is None else valid

    def load(self, strip: int = 1024) -> None:
        return None

    def close(self) -> None:
        return None


def sample_array_sources(images: np.ndarray, labels: np.ndarray) -> list[ArraySource]:
    """One :class:`ArraySource` per crop of ``images[N, C, H, W]`` / ``labels[N, H, W]``."""
    return [ArraySource(images[i], labels[i], f"sample {i}") for i in range(images.shape[0])]


def draw_source_sample(sources: Sequence[RasterSource], codes: Sequence[int], crops: int,
                       side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``crops`` labelled windows of ``side`` pixels in the sources' own units and resolution
    (``images[N, C, side, side]`` in the sources' dtype, ``labels[N, side, side]`` uint8 codes,
    0 = no label): a small labelled source sample that a model file can carry, so adaptation
    keeps its source term on machines without the source data."""
    n_bands = sources[0].band_count
    sampler = WindowSampler(sources, codes, side, [0.0] * n_bands, [1.0] * n_bands,
                            augment=False, seed=seed)
    images, labels = [], []
    for _ in range(crops):
        i, cx, cy = sampler._centre()
        source = sources[i]
        x0 = _clamp_start(cx - side // 2, side, source.width)
        y0 = _clamp_start(cy - side // 2, side, source.height)
        data, valid, lab = source.read_padded(x0, y0, side, side)
        assert lab is not None
        images.append(np.where(valid[None], data, 0))
        labels.append(np.where(valid, lab, 0))
    dtype = {"byte": np.uint8, "uint16": np.uint16}.get(sources[0].dtype_name, np.float32)
    return np.stack(images).astype(dtype), np.stack(labels).astype(np.uint8)


class WindowBatches:
    """Batches from a :class:`WindowSampler`, optionally prepared in DataLoader worker processes
    so that window reading and augmentation overlap with the model's compute. With ``workers=0``
    the batches are exactly ``sampler.sample(batch_size)`` in turn."""

    def __init__(self, sampler: WindowSampler, batch_size: int, workers: int = 0,
                 seed: Optional[int] = None) -> None:
        self.sampler, self.batch_size, self.workers = sampler, int(batch_size), int(workers)
        self.seed = seed
        self._iter: Optional[Iterable[tuple[np.ndarray, np.ndarray]]] = None

    def _dataset(self) -> "Any":
        import torch
        from torch.utils.data import IterableDataset, get_worker_info

        sampler, batch, seed = self.sampler, self.batch_size, self.seed

        class _Windows(IterableDataset):  # type: ignore[type-arg]
            def __iter__(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
                info = get_worker_info()
                if info is not None:  # each worker: its own stream, reproducible from the seed
                    base = 0 if seed is None else seed
                    sampler.rng = np.random.default_rng([base, info.id, 7919])
                while True:
                    x, y = sampler.sample(batch)
                    yield torch.from_numpy(x), torch.from_numpy(y)

        return _Windows()

    def __iter__(self) -> "Any":
        if self.workers <= 0:
            while True:
                yield self.sampler.sample(self.batch_size)
        from torch.utils.data import DataLoader

        loader = DataLoader(self._dataset(), batch_size=None, num_workers=self.workers,
                            prefetch_factor=2, persistent_workers=False)
        for x, y in loader:
            yield x.numpy(), y.numpy()
