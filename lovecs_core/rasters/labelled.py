"""Training windows from labelled rasters.

* :func:`pair_rasters` matches image and label rasters (folders or file lists, by file stem).
* :class:`RasterSource` is one raster, held in memory (native dtype) or read window by window
  through GDAL, with an optional label array (class codes, 0 = no label) kept in memory as uint8.
* :func:`band_statistics` gives per-band mean/std over valid pixels.
* :func:`warn_unknown_label_codes` names label codes that are not classes (left out otherwise).
* :class:`ArraySource` is an in-memory image with labels (e.g. the source sample of a model file).

Training windows are drawn from these by :mod:`.sampling`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .reading import RasterError, RasterReader, Window

log = logging.getLogger(__name__)

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
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
            )
            if not found:
                raise RasterError(f"no raster files ({', '.join(RASTER_SUFFIXES)}) in {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise RasterError(f"not found: {path}")
    return out


def pair_rasters(
    images: Sequence[str | os.PathLike[str]], labels: Sequence[str | os.PathLike[str]]
) -> list[tuple[Path, Path]]:
    """Match image and label rasters by file stem; lists of files of equal length whose stems do
    not match are paired in order."""
    image_files, label_files = expand_paths(images), expand_paths(labels)
    by_stem = {p.stem: p for p in label_files}
    if all(p.stem in by_stem for p in image_files):
        return [(p, by_stem[p.stem]) for p in image_files]
    if len(image_files) == len(label_files) and not any(Path(i).is_dir() for i in images):
        return list(zip(image_files, label_files))
    missing = [p.name for p in image_files if p.stem not in by_stem]
    raise RasterError(
        f"no label raster with the same name for {len(missing)} image(s), e.g. {missing[:3]}"
    )


def code_lookup(codes: Sequence[int]) -> np.ndarray:
    """A 256-entry table mapping class codes to class indices 0..K-1; 0 and unknown codes -> -1."""
    lut = np.full(256, -1, dtype=np.int64)
    for index, code in enumerate(codes):
        lut[int(code)] = index
    return lut


def unknown_label_codes(histogram: np.ndarray, codes: Sequence[int]) -> dict[int, int]:
    """Label codes other than 0 and ``codes``, with their pixel counts (``histogram``: pixels
    per code 0..255, e.g. ``np.bincount(labels.ravel(), minlength=256)``)."""
    known = {0, *map(int, codes)}
    return {int(c): int(n) for c, n in enumerate(histogram) if n and c not in known}


def unknown_codes_message(unknown: dict[int, int], codes: Sequence[int], where: str) -> str:
    """The warning for :func:`unknown_label_codes`: the codes, their pixels and what to do."""
    listed = ", ".join(f"{c} ({n:,} px)" for c, n in sorted(unknown.items()))
    return (
        f"{where} hold class code(s) {listed} that are not among the classes "
        f"({', '.join(map(str, codes))}): these {sum(unknown.values()):,} labelled pixels are "
        "ignored; check the label raster, or the classes' codes"
    )


def warn_unknown_label_codes(
    sources: Sequence["RasterSource"], codes: Sequence[int], where: str = "the labels"
) -> dict[int, int]:
    """Log :func:`unknown_codes_message` when the sources' labels hold codes that are not
    classes; returns the codes and their pixels."""
    histogram = np.zeros(256, dtype=np.int64)
    for s in sources:
        if s.labels is not None:
            histogram += np.bincount(s.labels.ravel(), minlength=256)
    unknown = unknown_label_codes(histogram, codes)
    if unknown:
        log.warning("%s", unknown_codes_message(unknown, codes, where))
    return unknown


def read_labels(
    path: str | os.PathLike[str], shape: Optional[tuple[int, int]] = None
) -> np.ndarray:
    """A label raster's first band as uint8 class codes (its nodata value becomes 0)."""
    reader = RasterReader(path, [1])
    if shape is not None and (reader.height, reader.width) != shape:
        raise RasterError(
            f"label raster {path} is {reader.width}x{reader.height} but its image is "
            f"{shape[1]}x{shape[0]} pixels; labels must be on the image's grid"
        )
    data, valid = reader.read(Window(0, 0, reader.width, reader.height))
    codes = data[0]
    if codes.size and (codes[valid].min(initial=0) < 0 or codes[valid].max(initial=0) > 255):
        raise RasterError(f"label raster {path}: class codes must be integers 0..255")
    out = np.where(valid, codes, 0).astype(np.uint8)
    reader.close()
    return out


class RasterSource:
    """One raster to read windows from (in memory or through GDAL) plus optional labels."""

    #: applied to every window read (an alignment with a tone, :mod:`.tone`), or None
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: Optional[Sequence[int]] = None,
        labels: Optional[np.ndarray] = None,
        in_memory: bool = True,
        label_path: Optional[str | os.PathLike[str]] = None,
    ) -> None:
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
            data[:, y : y + h] = np.where(v, d, 0).astype(dtype) if dtype != np.float32 else d
            valid[y : y + h] = v
        self._data, self._valid = data, valid

    def read(self, xoff: int, yoff: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data float32[C, h, w], valid bool[h, w])`` for a window inside the raster (through
        :attr:`transform` when set)."""
        if self._data is not None and self._valid is not None:
            d = self._data[:, yoff : yoff + height, xoff : xoff + width].astype(np.float32)
            v = self._valid[yoff : yoff + height, xoff : xoff + width].copy()
        else:
            d, v = self.reader.read(Window(xoff, yoff, width, height))
        return (d if self.transform is None else self.transform(d)), v

    def read_padded(
        self, xoff: int, yoff: int, width: int, height: int
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


def open_sources(
    pairs: Sequence[tuple[Path, Path]],
    bands: Optional[Sequence[int]] = None,
    in_memory: Optional[bool] = None,
) -> list[RasterSource]:
    """Open image/label pairs; in memory when they are small (``IN_MEMORY_PIXELS``)."""
    if not pairs:
        raise RasterError("no training rasters given")
    sources = [RasterSource(img, bands, label_path=lab, in_memory=False) for img, lab in pairs]
    counts = {s.band_count for s in sources}
    if len(counts) > 1:
        raise RasterError(
            f"training images have different band counts {sorted(counts)}; "
            "choose bands with --bands"
        )
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
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return BandStats(mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(), count)


class ArraySource(RasterSource):
    """An in-memory image with labels (e.g. the source sample carried in a model file)."""

    def __init__(
        self,
        data: np.ndarray,
        labels: np.ndarray,
        name: str = "sample",
        valid: Optional[np.ndarray] = None,
    ) -> None:  # noqa: D107 (no GDAL reader)
        self.path = Path(name)
        self.bands = list(range(1, data.shape[0] + 1))
        self.height, self.width = int(data.shape[1]), int(data.shape[2])
        self.dtype_name = {np.dtype(np.uint8): "byte", np.dtype(np.uint16): "uint16"}.get(
            data.dtype, "float32"
        )
        self.label_path = None
        self.labels = labels.astype(np.uint8)
        self._data = data
        self._valid = np.ones(labels.shape, dtype=bool) if valid is None else valid

    def load(self, strip: int = 1024) -> None:
        return None

    def close(self) -> None:
        return None


def sample_array_sources(images: np.ndarray, labels: np.ndarray) -> list[RasterSource]:
    """One :class:`ArraySource` per crop of ``images[N, C, H, W]`` / ``labels[N, H, W]``."""
    return [ArraySource(images[i], labels[i], f"sample {i}") for i in range(images.shape[0])]
