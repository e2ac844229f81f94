"""Rough run-time estimates for the dock ("fast: about 6 min on this CPU"). Plain Python, no torch.

The rates are measured on the project's reference CPU (2 cores, a MobileNet-V2 FPN; see
bench/RESULTS.md); a different encoder or machine scales them. No GPU rate has been measured yet.
"""

from __future__ import annotations

from typing import Optional

from ..presets import PRESETS

#: Seconds per megapixel of training windows (forward + backward), reference CPU: the default
#: model's source training, 700 iterations x 8 x 256² px in 924 s (bench/RESULTS.md, 2026-11-24).
CPU_TRAIN_S_PER_MPIX = 2.5
#: Seconds per megapixel of tiled inference at one scale, reference CPU: 3.80 MPix in 4.9 s
#: (bench/inference.py, 2026-11-24).
CPU_INFER_S_PER_MPIX = 1.3


def adapt_seconds(preset: str, pixels: int, gsd_ratio: float = 1.0) -> float:
    """Seconds to adapt (self-training with source + target batches, pseudo-label rounds at
    ``n_scales`` scales around ``gsd_ratio``) and map a scene of ``pixels`` on the CPU."""
    p = PRESETS[preset]
    mpix = pixels / 1e6
    training = p["iterations"] * 2 * p["batch_size"] * p["crop"] ** 2 / 1e6 * CPU_TRAIN_S_PER_MPIX
    rounds = max(1, -(-p["iterations"] // p["refresh_every"]))
    scale_cost = p["n_scales"] * max(1.0, gsd_ratio) ** 2
    labelling = rounds * mpix * scale_cost * CPU_INFER_S_PER_MPIX
    return training + labelling + classify_seconds(pixels)


def classify_seconds(pixels: int) -> float:
    return pixels / 1e6 * CPU_INFER_S_PER_MPIX


def describe_estimate(preset: Optional[str], pixels: int, gpu: bool) -> str:
    """One line for the dock."""
    if not preset or preset not in PRESETS or pixels <= 0:
        return ""
    minutes = adapt_seconds(preset, pixels) / 60
    mapping = classify_seconds(pixels) / 60
    text = (
        f"{pixels / 1e6:.1f} MPix: adapting takes about {minutes:.0f} min on a 2-core CPU "
        f"({preset}); classifying only about {max(mapping, 0.1):.1f} min."
    )
    if gpu:
        text += " A GPU is much faster (not measured yet)."
    return text
