"""Run-time estimates before a run ("adapting: about 6 min on this CPU"). Plain Python, no torch.

The seconds come from :data:`CALIBRATION`, measured by ``bench/estimate_calibration.py`` on the
project's reference CPU: the engine run as the plugin runs it (a fresh process, start-up
included), timed from its own progress events. An estimate is a plan: seconds per engine stage
(:func:`stage_plan`), which the plugin refines during the run from the stages' measured pace.
No GPU has been calibrated: on a GPU the CPU figure is given as an upper bound.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ..contract import MAPPING, PSEUDO_LABELS, READING, STATISTICS, TRAINING, WRITING
from ..presets import PRESETS

#: Engine start-up before the first progress event (Python, torch, the model file).
STARTING = "starting"

#: Seconds on the reference CPU (2 cores, idle), measured by bench/estimate_calibration.py
#: (2026-12-06): the engine's CPU time on synthetic 256-768 px scenes, run nice'd on the shared
#: machine (load 5-14), turned into idle seconds as the bench says; 6 iterations per preset,
#: those of batch 8 timed at batch 2 and scaled by 4 (the paper preset has the standard one's
#: batch and crop). Model pixels: the scene's pixels at the model's GSD.
CALIBRATION: dict[str, Any] = {
    "cores": 2,
    "startup_s": 4.24,
    "classify_fixed_s": 0.63,
    "classify_s_per_mpix": 1.03,
    "pseudo_s_per_mpix_scale": 0.65,
    "adapt_startup_s": 3.51,
    "adapt_s_per_iteration": {"fast": 2.21, "standard": 13.25, "paper": 13.25},
    "measured": "2026-12-06",
}
#: Torch's CPU speed-up with more cores is below linear; this exponent is an assumption (not
#: measured here: the reference machine has 2 cores).
CORE_EXPONENT = 0.7


def cpu_scale(cores: Optional[int] = None, table: dict[str, Any] = CALIBRATION) -> float:
    """This CPU's seconds over the reference CPU's (fewer cores: slower)."""
    cores = cores or os.cpu_count() or 1
    return float((table["cores"] / cores) ** CORE_EXPONENT)


def rounds(preset: str) -> int:
    p = PRESETS[preset]
    return max(1, -(-p["iterations"] // p["refresh_every"]))


def stage_plan(
    command: str,
    preset: Optional[str],
    pixels: int,
    gsd_ratio: float = 1.0,
    cores: Optional[int] = None,
    table: dict[str, Any] = CALIBRATION,
) -> dict[str, float]:
    """Seconds per stage of ``command`` (``predict`` or ``adapt``) on a scene of ``pixels`` on
    this CPU; the stages are the engine's (contract), plus :data:`STARTING`. ``gsd_ratio``: the
    scene's GSD over the model's (the engine maps at the model's GSD)."""
    scale = cpu_scale(cores, table)
    mpix = pixels / 1e6 * max(gsd_ratio, 0.1) ** 2
    mapping = table["classify_fixed_s"] + table["classify_s_per_mpix"] * mpix
    if command != "adapt" or preset not in PRESETS:
        return {STARTING: table["startup_s"], MAPPING: mapping * scale}
    p = PRESETS[preset]
    scales = p["n_scales"]
    plan = {
        STARTING: table["adapt_startup_s"],
        READING: 1.0,
        STATISTICS: 2 * table["classify_s_per_mpix"] * mpix,  # the reference map, the health check
        PSEUDO_LABELS: rounds(preset) * scales * table["pseudo_s_per_mpix_scale"] * mpix,
        TRAINING: p["iterations"] * table["adapt_s_per_iteration"][preset],
        MAPPING: mapping,
        WRITING: 1.0,
    }
    return {k: v if k == STARTING else v * scale for k, v in plan.items()}


def passes(command: str, preset: Optional[str]) -> dict[str, int]:
    """How many times each stage runs from 0 to 1 (pseudo-labels once per round)."""
    if command == "adapt" and preset in PRESETS:
        return {PSEUDO_LABELS: rounds(preset), STATISTICS: 2}
    return {}


def adapt_seconds(
    preset: str, pixels: int, gsd_ratio: float = 1.0, cores: Optional[int] = None
) -> float:
    """Seconds to adapt to and map a scene of ``pixels`` on this CPU, start-up included."""
    return sum(stage_plan("adapt", preset, pixels, gsd_ratio, cores).values())


def classify_seconds(pixels: int, cores: Optional[int] = None, gsd_ratio: float = 1.0) -> float:
    """Seconds to map a scene of ``pixels`` on this CPU, start-up included."""
    return sum(stage_plan("predict", None, pixels, gsd_ratio, cores).values())


def about(seconds: float) -> str:
    """``"about 40 s"``, ``"about 6 min"``, ``"about 2 h 10 min"``."""
    if seconds < 60:
        return f"about {max(5, 5 * round(seconds / 5)):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def describe_estimate(
    preset: Optional[str],
    pixels: int,
    gpu: bool,
    cores: Optional[int] = None,
    gsd_ratio: float = 1.0,
) -> str:
    """One line for the dock: both buttons' times for this scene, preset and device."""
    if not preset or preset not in PRESETS or pixels <= 0:
        return ""
    adapt = adapt_seconds(preset, pixels, gsd_ratio, cores)
    classify = classify_seconds(pixels, cores, gsd_ratio)
    where = "on this CPU" if not gpu else "on the CPU (a GPU is faster; not calibrated yet)"
    return (
        f"{pixels / 1e6:.1f} MPix {where}: adapting ({preset}) {about(adapt)}, "
        f"classifying only {about(classify)}."
    )
