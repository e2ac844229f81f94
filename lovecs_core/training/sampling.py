"""Random training windows from labelled rasters.

* :class:`WindowSampler` draws random windows weighted toward labelled pixels, with random scale,
  flips and 90-degree rotations, sensor randomisation (:mod:`.augment`), normalised and ready for
  a network.
* :class:`WindowBatches` serves its batches, optionally from DataLoader worker processes.
* :func:`draw_source_sample` draws the labelled source sample a model file carries.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ..rasters.labelled import RasterSource, code_lookup
from ..rasters.reading import RasterError
from .augment import SensorRandomisation, randomise


def dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` x 90 degrees, then optionally flip left-right."""
    out = np.rot90(array, k, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def resize_window(
    data: np.ndarray, valid: np.ndarray, labels: Optional[np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Resample a square window to ``size`` pixels: bilinear (antialiased) data, nearest
    validity and labels."""
    if data.shape[-1] == size and data.shape[-2] == size:
        return data, valid, labels
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(data))[None]
    down = data.shape[-1] > size
    data = F.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False, antialias=down
    )[0].numpy()
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
    same count with each pixel weighted by one over its class's pixel count, so every class is
    drawn about as often (``"classes"``), to the number of valid pixels (``"valid"``), or
    uniformly (``"uniform"``). The window side is
    ``crop / scale`` for a log-uniform random scale in ``scale_range``; it is resampled to
    ``crop`` pixels, rotated/flipped at random (``augment``), sensor-randomised
    (``randomisation``, see :mod:`.augment`; data units ``0..value_max``), and normalised with
    ``mean``/``std`` (invalid pixels become 0 and their labels "ignore").
    """

    def __init__(
        self,
        sources: Sequence[RasterSource],
        codes: Sequence[int],
        crop: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale_range: tuple[float, float] = (1.0, 1.0),
        augment: bool = True,
        weighting: str = "labels",
        cell: int = 32,
        seed: Optional[int] = None,
        randomisation: Optional[SensorRandomisation] = None,
        value_max: float = 255.0,
    ) -> None:
        if weighting not in ("labels", "classes", "valid", "uniform"):
            raise ValueError(f"unknown weighting {weighting!r}")
        if weighting in ("labels", "classes") and any(s.labels is None for s in sources):
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
        self._pixel_weight = np.zeros(256)  # "classes": a labelled pixel's weight by its code
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
        elif self.weighting == "classes":
            assert source.labels is not None
            mask = self._pixel_weight[source.labels]
        else:
            mask = np.zeros((source.height, source.width), dtype=bool)
            for y in range(0, source.height, 1024):
                _, v = source.read(0, y, source.width, min(1024, source.height - y))
                mask[y : y + v.shape[0]] = v
        padded = np.zeros(
            (gh * c, gw * c), dtype=mask.dtype if mask.dtype.kind == "f" else np.int32
        )
        padded[: source.height, : source.width] = mask
        return padded.reshape(gh, c, gw, c).sum(axis=(1, 3)).ravel().astype(np.float64)

    def refresh_weights(self) -> None:
        """Recompute the sampling weights (call after the labels changed)."""
        if self.weighting == "classes":
            counts = np.zeros(256, dtype=np.int64)
            for source in self.sources:
                assert source.labels is not None
                counts += np.bincount(source.labels.ravel(), minlength=256)
            known = (self.lut >= 0) & (counts > 0)
            self._pixel_weight = np.where(known, 1.0 / np.maximum(counts, 1), 0.0)
        self._cells = [self._cell_weights(s) for s in self.sources]
        totals = np.array([w.sum() for w in self._cells])
        if totals.sum() <= 0:
            raise RasterError(
                "no labelled pixels to sample training windows from"
                if self.weighting == "labels"
                else "no valid pixels to sample from"
            )
        self._cum = np.cumsum(totals) / totals.sum()

    @property
    def labelled_pixels(self) -> int:
        if self.weighting == "classes":
            return int(sum(int((self.lut >= 0)[s.labels].sum()) for s in self.sources))
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
        if self.weighting in ("labels", "classes"):  # centre on a labelled pixel of the cell
            assert source.labels is not None
            codes = source.labels[y0 : y0 + self.cell, x0 : x0 + self.cell]
            ys, xs = np.nonzero((self.lut >= 0)[codes])
            if ys.size:
                if self.weighting == "classes":  # a rare class's pixel more likely
                    w = np.cumsum(self._pixel_weight[codes[ys, xs]])
                    j = min(
                        int(np.searchsorted(w, self.rng.random() * w[-1], side="right")),
                        ys.size - 1,
                    )
                else:
                    j = int(self.rng.integers(ys.size))
                return i, x0 + int(xs[j]), y0 + int(ys[j])
        y = min(y0 + int(self.rng.integers(self.cell)), source.height - 1)
        x = min(x0 + int(self.rng.integers(self.cell)), source.width - 1)
        return i, x, y

    def _draw(self) -> tuple[int, int, int, float, int, bool]:
        """The random choices of one window without sensor randomisation: source, centre,
        scale, rotation and flip (reading nothing but the in-memory labels)."""
        i, cx, cy = self._centre()
        lo, hi = self.scale_range
        scale = math.exp(self.rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        k, flip = (
            (int(self.rng.integers(4)), bool(self.rng.integers(2))) if self.augment else (0, False)
        )
        return i, cx, cy, scale, k, flip

    def sample_one(self) -> tuple[np.ndarray, np.ndarray]:
        """One window: ``(image float32[C, crop, crop], target int64[crop, crop])`` with class
        indices and -1 for ignored pixels."""
        i, cx, cy, scale, k, flip = self._draw()
        source = self.sources[i]
        side = max(1, int(round(self.crop / scale)))
        x0 = _clamp_start(cx - side // 2, side, source.width)
        y0 = _clamp_start(cy - side // 2, side, source.height)
        data, valid, labels = source.read_padded(x0, y0, side, side)
        data = np.where(valid[None], data, self.mean)
        data, valid, labels = resize_window(data, valid, labels, self.crop)
        if self.augment:
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

    def sample(self, n: int, keep: Optional[range] = None) -> tuple[np.ndarray, np.ndarray]:
        """A batch: ``(images float32[n, C, crop, crop], targets int64[n, crop, crop])``.

        ``keep``: only these windows of the ``n`` are returned; the others are drawn (the
        random stream advances as for ``n`` windows) but not read. Processes that share a
        seed thus split one batch between them (:mod:`.distributed`)."""
        keep = range(n) if keep is None else keep
        items = []
        for j in range(n):
            if j in keep or self.randomisation is not None:  # (its draws follow the reading)
                item = self.sample_one()
                if j in keep:
                    items.append(item)
            else:
                self._draw()
        if not items:  # this process's share is empty
            c = self.sources[0].band_count
            return (
                np.zeros((0, c, self.crop, self.crop), np.float32),
                np.zeros((0, self.crop, self.crop), np.int64),
            )
        return np.stack([a for a, _ in items]), np.stack([b for _, b in items])


def _clamp_start(start: int, side: int, extent: int) -> int:
    """Keep a window inside the raster when it fits; centre it when the raster is smaller."""
    if side >= extent:
        return -((side - extent) // 2)
    return min(max(start, 0), extent - side)


def draw_source_sample(
    sources: Sequence[RasterSource], codes: Sequence[int], crops: int, side: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``crops`` labelled windows of ``side`` pixels in the sources' own units and resolution
    (``images[N, C, side, side]`` in the sources' dtype, ``labels[N, side, side]`` uint8 codes,
    0 = no label): a small labelled source sample that a model file can carry, so adaptation
    keeps its source term on machines without the source data."""
    n_bands = sources[0].band_count
    sampler = WindowSampler(
        sources, codes, side, [0.0] * n_bands, [1.0] * n_bands, augment=False, seed=seed
    )
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

    def __init__(
        self, sampler: WindowSampler, batch_size: int, workers: int = 0, seed: Optional[int] = None
    ) -> None:
        self.sampler, self.batch_size, self.workers = sampler, int(batch_size), int(workers)
        self.seed = seed

    def _dataset(self) -> "Any":
        import torch
        from torch.utils.data import IterableDataset, get_worker_info

        sampler, batch, seed = self.sampler, self.batch_size, self.seed

        class _Windows(IterableDataset):
            def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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

        loader = DataLoader(
            self._dataset(),
            batch_size=None,
            num_workers=self.workers,
            prefetch_factor=2,
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.numpy(), y.numpy()
