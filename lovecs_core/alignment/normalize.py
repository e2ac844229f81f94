"""Per-band normalisation of pixels for a network: the card's (or the alignment's) mean and std."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def normalize(data: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-band ``(x - mean) / std`` of ``data[C, ...]`` as float32."""
    data = np.asarray(data)
    if data.shape[0] != len(mean) or len(mean) != len(std):
        raise ValueError(f"{data.shape[0]} bands but {len(mean)} means and {len(std)} stds")
    shape = (-1,) + (1,) * (data.ndim - 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((data.astype(np.float32, copy=False) - m) / s).astype(np.float32, copy=False)
