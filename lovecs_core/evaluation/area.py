"""Area-adjusted accuracy and area estimates of Olofsson et al. (2014, Remote Sensing of
Environment 148, "Good practices for estimating area and assessing accuracy of land change").

The map classes are the strata, weighted by their share of the map (``W_i``, from the map's
pixel counts); the sample is a simple random sample (post-stratified) or a random sample
stratified by map class. Numpy only. Matrices follow the project's convention: rows are
reference classes, columns map classes (the paper's tables are the transpose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Optional

import numpy as np

#: What the estimates are, for reports.
AREA_ADJUSTED_KIND = (
    "area-adjusted (Olofsson et al. 2014): map classes as strata weighted by their map area"
)


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard normal quantile: 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"the confidence level must lie between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass
class AreaEstimate:
    """Estimates with standard errors; ``proportions`` is the estimated error matrix in area
    proportions (rows reference, columns map: ``p[j, i]`` for map class i, reference class j)."""

    weights: np.ndarray
    proportions: np.ndarray
    overall: float
    overall_se: float
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    area_proportion: np.ndarray
    area_proportion_se: np.ndarray


def olofsson(matrix: np.ndarray, map_counts: np.ndarray) -> AreaEstimate:
    """Olofsson et al. (2014) eqs. 2-10 from a sample error matrix (counts, rows reference,
    columns map) and the map's pixels per class. A stratum with fewer than two sample units
    adds no variance (its terms are undefined)."""
    w = np.asarray(map_counts, np.float64) / float(np.sum(map_counts))
    n_ij = np.asarray(matrix, np.float64).T  # rows: map class i, columns: reference class j
    n_i = n_ij.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_i[:, None] > 0, n_ij / n_i[:, None], 0.0)
        inv_df = np.where(n_i > 1, 1.0 / (n_i - 1), 0.0)
        p = w[:, None] * frac
        p_ref = p.sum(axis=0)
        diag_frac = np.diag(frac)
        users = np.where(n_i > 0, diag_frac, np.nan)
        users_var = diag_frac * (1 - diag_frac) * inv_df
        producers = np.diag(p) / p_ref
        cell_var = (w**2)[:, None] * frac * (1 - frac) * inv_df[:, None]
        # eq. 7 in proportions: the own stratum's term and the other strata's terms
        own = (w**2) * (1 - producers) ** 2 * users_var
        others = producers**2 * (cell_var.sum(axis=0) - np.diag(cell_var))
        producers_var = (own + others) / p_ref**2
    return AreaEstimate(
        weights=w,
        proportions=p.T,
        overall=float(np.trace(p)),
        overall_se=float(math.sqrt(float((w**2 * users_var).sum()))),
        users=users,
        users_se=np.where(n_i > 0, np.sqrt(users_var), np.nan),
        producers=producers,
        producers_se=np.sqrt(producers_var),
        area_proportion=p_ref,
        area_proportion_se=np.sqrt(cell_var.sum(axis=0)),
    )


def numbers(values: Any) -> Any:
    """Floats for JSON: NaN and infinity become None (also inside lists)."""
    if isinstance(values, (list, tuple, np.ndarray)):
        return [numbers(v) for v in values]
    value = float(values)
    return value if math.isfinite(value) else None


def interval(value: Any, half: Any, low: float = 0.0, high: float = math.inf) -> Any:
    """``[value - half, value + half]`` clipped to ``[low, high]`` (per element for arrays)."""
    v, h = np.asarray(value, np.float64), np.asarray(half, np.float64)
    return numbers(np.stack([np.clip(v - h, low, high), np.clip(v + h, low, high)], axis=-1))


def area_adjusted(
    matrix: np.ndarray,
    map_counts: np.ndarray,
    pixel_area: Optional[float] = None,
    confidence: float = 0.95,
) -> Optional[dict[str, Any]]:
    """The JSON form of :func:`olofsson`: estimates, standard errors (``_se``), intervals at
    ``confidence`` (``_ci``), areas in m² (``pixel_area``: m² per pixel; pixels without it) and
    hectares, and ``area_ci95``, the half-width of the area's 95 % interval. None without map
    counts."""
    counts = np.asarray(map_counts, np.float64)
    if counts.size == 0 or counts.sum() == 0:
        return None
    est = olofsson(matrix, counts)
    z = z_value(confidence)
    total = float(counts.sum()) * (pixel_area or 1.0)
    area, area_half = est.area_proportion * total, z * est.area_proportion_se * total
    out: dict[str, Any] = {
        "kind": AREA_ADJUSTED_KIND,
        "confidence": confidence,
        "overall_accuracy": numbers(est.overall),
        "overall_accuracy_se": numbers(est.overall_se),
        "overall_accuracy_ci": interval(est.overall, z * est.overall_se, high=1.0),
        "users_accuracy": numbers(est.users),
        "users_accuracy_se": numbers(est.users_se),
        "users_accuracy_ci": interval(est.users, z * est.users_se, high=1.0),
        "producers_accuracy": numbers(est.producers),
        "producers_accuracy_se": numbers(est.producers_se),
        "producers_accuracy_ci": interval(est.producers, z * est.producers_se, high=1.0),
        "area_proportion": numbers(est.area_proportion),
        "area_proportion_se": numbers(est.area_proportion_se),
        "error_matrix_proportions": numbers(est.proportions),
        "area": numbers(area),
        "area_ci95": numbers(z_value(0.95) * est.area_proportion_se * total),
        "area_ci": interval(area, area_half),
        "area_unit": "m2" if pixel_area else "pixels",
        "map_area": numbers(est.weights * total),
    }
    if pixel_area:
        out["area_ha"] = numbers(area / 1e4)
        out["area_ha_ci"] = interval(area / 1e4, area_half / 1e4)
    return out
