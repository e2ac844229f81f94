"""Accuracy of a class map from reference samples: the map's and the reference class at each
sample unit (a reference point, or a pixel of a reference polygon).

Two kinds of estimate, both in :meth:`PointAccuracy.to_dict`:

* the plain sample estimates: the error matrix of the sample, overall accuracy and per-class
  producer's and user's accuracy as sample proportions with Wilson score intervals; unbiased
  for a simple random sample;
* the area-adjusted estimates of Olofsson et al. (2014) (:mod:`.area`), unbiased for a simple
  random sample and for a random sample stratified by map class: the map's class areas weight
  the sample.

Numpy only (with :mod:`statistics`). Matrices: rows reference classes, columns map classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from .area import area_adjusted, numbers, z_value

#: Sample units: one feature (a point), or one pixel of a polygon or line.
POINT, PIXEL = "point", "pixel"
SAMPLE_KIND = (
    "plain sample: proportions of the sample units with Wilson score intervals (unbiased for a "
    "simple random sample; for other designs use the area-adjusted estimates)"
)
PIXEL_NOTE = (
    "features cover several pixels: each pixel is counted as a sample unit; pixels of one "
    "feature are not independent, so the intervals are too narrow"
)


def wilson_interval(
    successes: Any, n: Any, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(low, high)`` of the proportion ``successes / n`` (elementwise;
    NaN where ``n`` is 0)."""
    k, m = np.asarray(successes, np.float64), np.asarray(n, np.float64)
    z2 = z_value(confidence) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        centre = (p + z2 / (2 * m)) / (1 + z2 / m)
        half = math.sqrt(z2) / (1 + z2 / m) * np.sqrt(p * (1 - p) / m + z2 / (4 * m**2))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def error_matrix(map_codes: Any, ref_codes: Any, codes: Sequence[int]) -> np.ndarray:
    """Counts (int64, K x K) of sample units: rows reference class, columns map class, in the
    order of ``codes``. Every code must be one of ``codes``."""
    order = np.asarray(codes, np.int64)
    sort = np.argsort(order)
    idx = []
    for name, values in (("reference", ref_codes), ("map", map_codes)):
        v = np.asarray(values, np.int64).ravel()
        pos = sort[np.clip(np.searchsorted(order[sort], v), 0, len(order) - 1)]
        if v.size and not np.array_equal(order[pos], v):
            bad = sorted(set(v.tolist()) - set(order.tolist()))
            raise ValueError(f"{name} codes {bad} are not among the classes {list(codes)}")
        idx.append(pos)
    k = len(order)
    return np.bincount(idx[0] * k + idx[1], minlength=k * k).reshape(k, k).astype(np.int64)


def proportion(successes: Any, n: Any, confidence: float = 0.95) -> dict[str, Any]:
    """A sample proportion with its Wilson interval and sample size, for JSON."""
    low, high = wilson_interval(successes, n, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.asarray(successes, np.float64) / np.asarray(n, np.float64)
    return {
        "value": numbers(value),
        "ci": numbers(np.stack([low, high], axis=-1)),
        "n": np.asarray(n).astype(int).tolist(),
    }


@dataclass
class PointAccuracy:
    """Accuracy from sample units; ``to_dict`` gives the JSON form, ``table`` a text report."""

    codes: list[int]
    names: list[str]
    matrix: np.ndarray  # rows reference, columns map
    unit: str = POINT
    map_counts: Optional[np.ndarray] = None  # map pixels per class (area weights)
    pixel_area: Optional[float] = None  # square metres per pixel
    confidence: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.matrix.sum())

    def sample_estimates(self) -> dict[str, Any]:
        """Overall accuracy, producer's (per reference class) and user's (per map class)
        accuracy of the sample, with Wilson intervals."""
        m, c = self.matrix, self.confidence
        return {
            "kind": SAMPLE_KIND,
            "confidence": c,
            "overall_accuracy": proportion(np.trace(m), m.sum(), c),
            "producers_accuracy": proportion(np.diag(m), m.sum(axis=1), c),
            "users_accuracy": proportion(np.diag(m), m.sum(axis=0), c),
        }

    def area_adjusted(self) -> Optional[dict[str, Any]]:
        if self.map_counts is None:
            return None
        return area_adjusted(self.matrix, self.map_counts, self.pixel_area, self.confidence)

    def to_dict(self) -> dict[str, Any]:
        sample = self.sample_estimates()
        out: dict[str, Any] = {
            "sample": {"unit": self.unit, "size": self.size},
            "classes": [{"code": c, "name": n} for c, n in zip(self.codes, self.names)],
            "error_matrix": self.matrix.tolist(),
            "error_matrix_axes": "rows: reference, columns: map (class order as in 'classes')",
            "overall_accuracy": sample["overall_accuracy"]["value"],
            "sample_estimates": sample,
        }
        if self.unit == PIXEL:
            out["sample"]["note"] = PIXEL_NOTE
        area = self.area_adjusted()
        if area is not None:
            out["area_adjusted"] = area
        out.update(self.extra)
        return out

    def table(self) -> str:
        """The error matrix, the sample estimates and the area-adjusted ones, as text."""
        return "\n".join(
            [matrix_text(self.matrix, self.names), "", *self._sample_lines(), *self._area_lines()]
        )

    def _sample_lines(self) -> list[str]:
        s = self.sample_estimates()
        pct = round(100 * self.confidence)
        oa = s["overall_accuracy"]
        lines = [
            f"Sample: {self.size} {self.unit}s"
            + (f" ({PIXEL_NOTE})" if self.unit == PIXEL else ""),
            f"Plain sample estimates ({pct} % Wilson intervals):",
            f"  overall accuracy {_ci_text(oa['value'], oa['ci'])}",
        ]
        pa, ua = s["producers_accuracy"], s["users_accuracy"]
        for i, name in enumerate(self.names):
            lines.append(
                f"  {name}: producer's {_ci_text(pa['value'][i], pa['ci'][i])} (n={pa['n'][i]}),"
                f" user's {_ci_text(ua['value'][i], ua['ci'][i])} (n={ua['n'][i]})"
            )
        return lines

    def _area_lines(self) -> list[str]:
        a = self.area_adjusted()
        if a is None:
            return []
        pct = round(100 * self.confidence)
        hectares = "area_ha" in a
        unit = "ha" if hectares else a["area_unit"]
        area, area_ci = (a["area_ha"], a["area_ha_ci"]) if hectares else (a["area"], a["area_ci"])
        lines = [
            f"Area-adjusted estimates (Olofsson et al. 2014, {pct} % intervals):",
            f"  overall accuracy {_ci_text(a['overall_accuracy'], a['overall_accuracy_ci'])}",
        ]
        for i, name in enumerate(self.names):
            lines.append(
                f"  {name}: producer's "
                f"{_ci_text(a['producers_accuracy'][i], a['producers_accuracy_ci'][i])}, "
                f"user's {_ci_text(a['users_accuracy'][i], a['users_accuracy_ci'][i])}, "
                f"area {_area_text(area[i], area_ci[i])} {unit} "
                f"(mapped {_area_text(a['map_area'][i] / (1e4 if hectares else 1), None)} {unit})"
            )
        return lines


def matrix_text(matrix: np.ndarray, names: Sequence[str]) -> str:
    """The error matrix as a text table with totals (rows reference, columns map)."""
    labels, corner = [*names, "total"], "reference \\ map"
    width = max(len(n) for n in [*labels, corner])
    cells = max(6, len(str(int(matrix.sum()))) + 1, min(12, max(map(len, labels))))
    full = np.hstack([matrix, matrix.sum(axis=1, keepdims=True)])
    full = np.vstack([full, full.sum(axis=0, keepdims=True)])
    head = f"{corner:<{width}}" + "".join(f" {n[:cells]:>{cells}}" for n in labels)
    rows = [
        f"{labels[i]:<{width}}" + "".join(f" {int(v):>{cells}}" for v in row)
        for i, row in enumerate(full)
    ]
    return "\n".join([head, *rows])


def _ci_text(value: Optional[float], ci: Optional[Sequence[Optional[float]]]) -> str:
    if value is None:
        return "n/a"
    low, high = ci if ci is not None else (None, None)
    if low is None or high is None:
        return f"{100 * value:.1f} %"
    return f"{100 * value:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def _area_text(value: Optional[float], ci: Optional[Sequence[Optional[float]]]) -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if ci is None or ci[0] is None or ci[1] is None:
        return text
    return f"{text} [{ci[0]:,.1f}, {ci[1]:,.1f}]"
