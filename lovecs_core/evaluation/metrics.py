"""Accuracy of a class map against reference labels.

The confusion matrix counts (int64) labelled reference pixels (code 0 = no label, ignored): rows
are reference classes, columns predicted classes. Labelled pixels the map leaves without a class
(nodata or an unknown code) are counted per reference class as ``unmapped`` and treated as errors.
Reference pixels whose code is not a class are left out, with a warning naming the codes.
From it: per-class IoU, F1, precision (user's accuracy), recall (producer's accuracy), mIoU,
overall accuracy and Cohen's kappa; and, given the map's class areas, the area-adjusted accuracy
and area estimates with 95 % confidence intervals of Olofsson et al. (2014).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from ..rasters.labelled import code_lookup, unknown_codes_message, unknown_label_codes
from .area import area_adjusted

log = logging.getLogger(__name__)


def class_indices(codes: Sequence[int]) -> np.ndarray:
    """A 256-entry table: class code -> index 0..K-1, every other code -> K ("not a class")."""
    lut = code_lookup(codes)
    return np.where(lut < 0, len(codes), lut)


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, codes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix int64[K, K], unmapped int64[K])`` over pixels whose reference code is one of
    ``codes`` (so 0 and unknown reference codes are ignored)."""
    k = len(codes)
    lut = class_indices(codes)
    t = lut[_as_codes(truth).ravel()]
    p = lut[_as_codes(pred).ravel()]
    keep = t < k
    full = np.bincount(t[keep] * (k + 1) + p[keep], minlength=k * (k + 1)).reshape(k, k + 1)
    return full[:, :k].astype(np.int64), full[:, k].astype(np.int64)


@dataclass
class Accuracy:
    """Scores from a confusion matrix; ``to_dict`` gives the JSON form, ``table`` a text table."""

    codes: list[int]
    names: list[str]
    matrix: np.ndarray
    unmapped: np.ndarray
    map_counts: Optional[np.ndarray] = None  # pixels per class in the whole map (area weights)
    pixel_area: Optional[float] = None  # square metres per pixel
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.matrix.sum() + self.unmapped.sum())

    def per_class(self) -> dict[str, np.ndarray]:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        support = m.sum(axis=1) + self.unmapped
        predicted = m.sum(axis=0)
        fp, fn = predicted - tp, support - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / (tp + fp + fn)
            precision = tp / predicted
            recall = tp / support
            f1 = 2 * tp / (2 * tp + fp + fn)
        return {
            "iou": iou,
            "f1": f1,
            "precision": precision,
            "recall": recall,
            "support": support,
            "predicted": predicted,
        }

    def present(self) -> np.ndarray:
        """Classes that occur in the reference or the map (others are left out of means)."""
        pc = self.per_class()
        return (pc["support"] > 0) | (pc["predicted"] > 0)

    @property
    def miou(self) -> float:
        iou = self.per_class()["iou"][self.present()]
        return float(np.nanmean(iou)) if iou.size else float("nan")

    @property
    def mean_f1(self) -> float:
        f1 = self.per_class()["f1"][self.present()]
        return float(np.nanmean(f1)) if f1.size else float("nan")

    @property
    def overall_accuracy(self) -> float:
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    @property
    def kappa(self) -> float:
        n = self.total
        if n == 0:
            return float("nan")
        rows = self.matrix.sum(axis=1) + self.unmapped
        cols = self.matrix.sum(axis=0)
        po = np.trace(self.matrix) / n
        pe = float((rows.astype(np.float64) * cols).sum()) / (float(n) * n)
        return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")

    def area_adjusted(self) -> Optional[dict[str, Any]]:
        """Olofsson et al. (2014): stratified estimators with the map classes as strata, weights
        ``W_i`` from the map's class areas, and the labelled pixels as the sample."""
        if self.map_counts is None:
            return None
        return area_adjusted(self.matrix, self.map_counts, self.pixel_area)

    def to_dict(self) -> dict[str, Any]:
        pc = self.per_class()
        classes = []
        for i, (code, name) in enumerate(zip(self.codes, self.names)):
            classes.append(
                {
                    "code": code,
                    "name": name,
                    "iou": _num(pc["iou"][i]),
                    "f1": _num(pc["f1"][i]),
                    "precision": _num(pc["precision"][i]),
                    "recall": _num(pc["recall"][i]),
                    "support": int(pc["support"][i]),
                    "predicted": int(pc["predicted"][i]),
                    "unmapped": int(self.unmapped[i]),
                }
            )
        out: dict[str, Any] = {
            "miou": _num(self.miou),
            "mean_f1": _num(self.mean_f1),
            "overall_accuracy": _num(self.overall_accuracy),
            "kappa": _num(self.kappa),
            "pixels": self.total,
            "unmapped_pixels": int(self.unmapped.sum()),
            "classes": classes,
            "confusion_matrix": self.matrix.tolist(),
            "confusion_matrix_axes": "rows: reference, columns: prediction (class order as in "
            "'classes')",
        }
        area = self.area_adjusted()
        if area is not None:
            out["area_adjusted"] = area
        out.update(self.extra)
        return out

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        pc = self.per_class()
        width = max([len(n) for n in self.names] + [5])
        lines = [
            f"{'code':>4}  {'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'prec.':>6}  "
            f"{'recall':>6}  {'pixels':>10}"
        ]
        for i, (code, name) in enumerate(zip(self.codes, self.names)):
            lines.append(
                f"{code:>4}  {name:<{width}}  {_pct(pc['iou'][i])}  {_pct(pc['f1'][i])}  "
                f"{_pct(pc['precision'][i])}  {_pct(pc['recall'][i])}  "
                f"{int(pc['support'][i]):>10}"
            )
        lines.append("")
        lines.append(
            f"mIoU {_pct(self.miou).strip()} %   "
            f"OA {_pct(self.overall_accuracy).strip()} %   kappa {self.kappa:.4f}   "
            f"mean F1 {_pct(self.mean_f1).strip()} %   labelled pixels {self.total}"
        )
        if self.unmapped.sum():
            lines.append(
                f"{int(self.unmapped.sum())} labelled pixels have no class in the map "
                "(counted as errors)"
            )
        unknown = self.extra.get("unknown_label_codes")
        if unknown:
            listed = ", ".join(f"{c} ({n} px)" for c, n in unknown.items())
            lines.append(f"left out: labelled pixels with codes that are no class: {listed}")
        area = self.area_adjusted()
        if area is not None:
            lines.append(
                f"area-adjusted OA (Olofsson et al. 2014) {100 * area['overall_accuracy']:.2f} %"
            )
        return "\n".join(lines)


def _num(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _pct(x: float) -> str:
    return "   n/a" if not math.isfinite(float(x)) else f"{100 * float(x):6.2f}"


def accuracy_from_arrays(
    pred: np.ndarray, truth: np.ndarray, codes: Sequence[int], names: Optional[Sequence[str]] = None
) -> Accuracy:
    """Scores for two arrays of class codes (map counts from the whole ``pred`` array)."""
    matrix, unmapped = confusion_matrix(pred, truth, codes)
    counts = np.array([(np.asarray(pred) == c).sum() for c in codes], dtype=np.int64)
    return Accuracy(
        list(codes),
        list(names or [f"class {c}" for c in codes]),
        matrix,
        unmapped,
        map_counts=counts,
    )


def evaluate_rasters(
    pred_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    codes: Optional[Sequence[int]] = None,
    names: Optional[Sequence[str]] = None,
    reporter: Any = None,
    rows: int = 512,
) -> Accuracy:
    """Compare a class map raster with a reference label raster on the same grid, streaming by
    row strips. Class codes default to every code found in either raster."""
    from ..checks.reference import check_label_bands, check_same_grid, no_labels_message
    from ..rasters.reading import RasterError, open_dataset, pixel_size_metres

    pds, lds = open_dataset(pred_path), open_dataset(labels_path)
    check_label_bands(lds)
    check_same_grid(pds, lds)
    pband, lband = pds.GetRasterBand(1), lds.GetRasterBand(1)
    height = pds.RasterYSize

    def strips() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for (y, p), (_, t) in zip(code_strips(pband, rows), code_strips(lband, rows)):
            yield y, p, t

    if codes is None:
        found: set[int] = set()
        for _, p, t in strips():
            found |= set(np.unique(p).tolist()) | set(np.unique(t).tolist())
        codes = sorted(c for c in found if c != 0)
    codes = list(codes)
    if names is None:
        names = _category_names(pband, codes)
    k = len(codes)
    matrix = np.zeros((k, k), dtype=np.int64)
    unmapped = np.zeros(k, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    label_counts = np.zeros(256, dtype=np.int64)
    lut = class_indices(codes)
    for y, p, t in strips():
        m, u = confusion_matrix(p, t, codes)
        matrix += m
        unmapped += u
        counts += np.bincount(lut[p.ravel()], minlength=k + 1)[:k]
        label_counts += np.bincount(t.ravel(), minlength=256)
        if reporter is not None:
            reporter("evaluating", (y + p.shape[0]) / height, f"row {y + p.shape[0]}/{height}")
    if matrix.sum() + unmapped.sum() == 0:
        raise RasterError(no_labels_message(str(labels_path), codes))
    extra: dict[str, Any] = {"prediction": str(pred_path), "labels": str(labels_path)}
    unknown = unknown_label_codes(label_counts, codes)
    if unknown:  # left out of every score: the user must know
        log.warning("%s", unknown_codes_message(unknown, codes, f"the labels {labels_path}"))
        extra["unknown_label_codes"] = {str(c): n for c, n in unknown.items()}
    px = pixel_size_metres(pds)
    return Accuracy(
        codes,
        list(names),
        matrix,
        unmapped,
        map_counts=counts,
        pixel_area=px * px if px else None,
        extra=extra,
    )


def code_strips(band: Any, rows: int = 512) -> Iterator[tuple[int, np.ndarray]]:
    """Row strips ``(first row, uint8 class codes)`` of a raster band; nodata and values that
    are no code (outside 0..255, fractions) read as 0 (no class)."""
    nodata = band.GetNoDataValue()
    for y in range(0, band.YSize, rows):
        a = band.ReadAsArray(0, y, band.XSize, min(rows, band.YSize - y))
        if nodata is not None:
            a = np.where(a == nodata, 0, a)
        yield y, _as_codes(a)


def _as_codes(a: np.ndarray) -> np.ndarray:
    """Values outside 0..255 (and non-integers) become 0 (no class)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    ok = (a >= 0) & (a <= 255) & (a == np.floor(a))
    return np.where(ok, a, 0).astype(np.uint8)


def _category_names(band: Any, codes: Sequence[int]) -> list[str]:
    """Class names from the raster's category names when it has them."""
    cats = band.GetCategoryNames() or []
    return [cats[c] if c < len(cats) and cats[c] else f"class {c}" for c in codes]
