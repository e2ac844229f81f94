"""Sensor randomisation for source training: the same ground seen by many plausible sensors.

Each part has a physical reason and can be switched off; all run on a window in the data's own
units (``0..value_max``), before normalisation, in the order light travels:

* ``mixing``    spectral response differences: a mild random cross-band mixing matrix
* ``gain``      per-band gain and offset (calibration, exposure, illumination)
* ``haze``      additive path radiance: a blend toward a per-band airlight
* ``blur``      the sensor's MTF: Gaussian blur, or a coarser GSD (area-downsample and back)
* ``tone``      gamma and an S-/inverse-S contrast curve (on-board tone mapping)
* ``noise``     Gaussian read noise plus signal-dependent shot noise
* ``quantise``  re-quantisation to a coarser bit depth

A share of the windows (``clean_share``, half by default) stays as the source sensor saw it:
with every part at probability 0.4 and no clean share, only 0.6**7 = 3 % of windows are clean,
and a model trained so lost accuracy on held-out images of the source sensor (see
``bench/RESULTS.md``). Only pixel values change: geometry, labels and the validity mask are
untouched, so labels stay aligned and nodata stays nodata; values are clipped to ``0..value_max``. Everything is drawn from
the generator passed in, so a seeded sampler gives the same windows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PARTS = ("mixing", "gain", "haze", "blur", "tone", "noise", "quantise")


@dataclass
class SensorRandomisation:
    """Which parts run, with what probability and ranges (recorded in the model card)."""

    parts: list[str] = field(default_factory=lambda: list(PARTS))
    clean_share: float = 0.5  # this share of windows is left as the source sensor saw it
    probability: float = 0.4  # on the others, each part runs with this probability
    mixing: float = 0.08  # off-diagonal mixing weights in [-m, m]
    gain: tuple[float, float] = (0.7, 1.4)  # common gain (log-uniform)
    band_gain: tuple[float, float] = (0.85, 1.18)  # extra per-band gain (log-uniform)
    offset: float = 0.05  # per-band offset in [-o, o] x value_max
    haze: tuple[float, float] = (0.0, 0.3)  # blend weight toward the airlight
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # Gaussian MTF, pixels
    coarser: tuple[float, float] = (1.5, 3.0)  # or: GSD made this much coarser
    gamma: tuple[float, float] = (0.6, 1.6)  # log-uniform
    contrast: float = 0.4  # S-curve blend weight in [-c, c]
    noise: tuple[float, float] = (0.0, 0.02)  # Gaussian sigma, fraction of value_max
    shot: tuple[float, float] = (0.0, 0.02)  # shot-noise scale
    bits: tuple[int, int] = (5, 7)  # re-quantisation bit depth

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ValueError(
                f"unknown sensor randomisation part(s) {sorted(unknown)}; "
                f"choose from {', '.join(PARTS)}"
            )
        for name in ("clean_share", "probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def only(
        cls, *parts: str, probability: float = 0.5, clean_share: float = 0.0
    ) -> "SensorRandomisation":
        return cls(parts=list(parts), probability=probability, clean_share=clean_share)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def gaussian_blur(data: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``data[C, H, W]`` (reflect padding)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[:, None]
    c = data.shape[0]
    kh = torch.from_numpy(k).view(1, 1, 1, -1)
    pad_w = min(radius, data.shape[-1] - 1)
    pad_h = min(radius, data.shape[-2] - 1)
    if pad_w > 0:
        t = F.conv2d(
            F.pad(t, (pad_w, pad_w, 0, 0), mode="reflect"),
            kh[..., radius - pad_w : radius + pad_w + 1],
        )
    if pad_h > 0:
        t = F.conv2d(
            F.pad(t, (0, 0, pad_h, pad_h), mode="reflect"),
            kh[..., radius - pad_h : radius + pad_h + 1].transpose(-1, -2),
        )
    return t[:, 0].numpy().reshape(c, *data.shape[1:])


def coarsen(data: np.ndarray, factor: float) -> np.ndarray:
    """Simulate a ``factor`` times coarser GSD on the same grid: area-average down, bilinear up."""
    import torch
    import torch.nn.functional as F

    h, w = data.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    t = F.interpolate(
        F.interpolate(t, size=small, mode="area"), size=(h, w), mode="bilinear", align_corners=False
    )
    return t[0].numpy()


def randomise(
    data: np.ndarray, rng: np.random.Generator, cfg: SensorRandomisation, value_max: float
) -> np.ndarray:
    """A sensor-randomised copy of ``data[C, H, W]`` (data units), clipped to ``0..value_max``;
    a share ``cfg.clean_share`` of the calls returns the data unchanged (as float32)."""
    if cfg.clean_share > 0 and rng.random() < cfg.clean_share:
        return data.astype(np.float32, copy=True)
    out = data.astype(np.float32, copy=True) / value_max  # work in 0..1
    c = out.shape[0]

    def on(part: str) -> bool:
        return part in cfg.parts and rng.random() < cfg.probability

    if c > 1 and on("mixing"):
        m = np.eye(c) + rng.uniform(-cfg.mixing, cfg.mixing, (c, c)) * (1 - np.eye(c))
        m /= m.sum(axis=1, keepdims=True)
        out = np.tensordot(m.astype(np.float32), out, axes=1)
    if on("gain"):
        g = _log_uniform(rng, *cfg.gain) * _log_uniform(rng, *cfg.band_gain, size=c)
        o = rng.uniform(-cfg.offset, cfg.offset, c)
        out = out * g[:, None, None].astype(np.float32) + o[:, None, None].astype(np.float32)
    if on("haze"):
        h = rng.uniform(*cfg.haze)
        airlight = rng.uniform(0.6, 1.0, c).astype(np.float32)
        out = out * (1 - h) + h * airlight[:, None, None]
    if on("blur"):
        if rng.random() < 0.5:
            out = gaussian_blur(out, float(rng.uniform(*cfg.blur_sigma)))
        else:
            out = coarsen(out, float(rng.uniform(*cfg.coarser)))
    out = np.clip(out, 0.0, 1.0)
    if on("tone"):
        out = out ** np.float32(_log_uniform(rng, *cfg.gamma))
        a = np.float32(rng.uniform(-cfg.contrast, cfg.contrast))
        s_curve = out * out * (3 - 2 * out)
        out = out + a * (s_curve - out)
    if on("noise"):
        sigma = rng.uniform(*cfg.noise)
        shot = rng.uniform(*cfg.shot)
        std = np.sqrt(sigma**2 + shot**2 * np.clip(out, 0, 1)).astype(np.float32)
        out = out + std * rng.standard_normal(out.shape).astype(np.float32)
    if on("quantise"):
        levels = 2 ** int(rng.integers(cfg.bits[0], cfg.bits[1] + 1)) - 1
        out = np.round(np.clip(out, 0, 1) * levels) / levels
    return (np.clip(out, 0.0, 1.0) * value_max).astype(np.float32)
