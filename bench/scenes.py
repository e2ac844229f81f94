"""Evaluation scenes for the adaptation benchmark, built from ../shared/data (not committed).

Source images listed in :data:`HELD_OUT` are kept out of source training (default model and
benchmark) and make the same-sensor stress scenes. Every scene is a GeoTIFF with its labels on the
same grid, written to ``bench/data/scenes/`` (git-ignored) and rebuilt when missing:

* ``target_b``: the shared simulated spaceborne scene as it is (10-bit, 1.5 m).
* ``vegetation``: held-out, mostly-vegetation images of the source sensor side by side: same
  sensor, very different class mix (the first release's failure mode).
* ``water``: held-out, mostly-water images of the source sensor.
* ``sensor_c``: held-out mixed images seen by a made-up 12-bit sensor with BGR band order,
  per-band gains, a dark offset and a gamma of its own (pass bands 3,2,1).
* ``rural_b``: the vegetation scene seen by a coarser spaceborne-like sensor (blur, x2 area
  downsampling to 1 m, haze, 11-bit): cross-sensor *and* a different class mix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

#: Source images (by file stem) kept out of every source training run.
HELD_OUT = ("tile6_002", "tile6_003", "tile6_006",   # mostly vegetation
            "tile5_006", "tile3_004",                 # mostly water
            "tile2_007", "tile4_006")                 # mixed (made into the 12-bit sensor_c)
VEGETATION = ("tile6_002", "tile6_003", "tile6_006")
WATER = ("tile5_006", "tile3_004")
MIXED = ("tile2_007", "tile4_006")


@dataclass
class Scene:
    name: str
    image: Path
    labels: Path
    bands: Optional[list[int]]
    description: str


def held_out_pairs(pairs: list[tuple[Path, Path]]) -> tuple[list, list]:
    """``(training pairs, held-out pairs)``."""
    train = [p for p in pairs if p[0].stem not in HELD_OUT]
    held = [p for p in pairs if p[0].stem in HELD_OUT]
    return train, held
