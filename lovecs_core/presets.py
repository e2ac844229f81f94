"""Adaptation and source-training presets (plain data, no torch: the QGIS plugin reads them for
time estimates, and the CLI offers their names without importing torch)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a 2-core CPU for a ~4 MPix scene
    # fast: a quarter of the paper's learning rate, for 8x fewer pixels a step (4 windows of
    # 256 px against 8 of 512): between the square-root (/2.8) and the linear (/8) scaling.
    # With the paper's, the held-out vegetation scene lost 2.9 OA points, against 0.9 (bench)
    "fast": dict(
        iterations=120,
        lr=0.01 * (1.0 / 3.0) ** 0.9 / 4,
        refresh_every=60,
        batch_size=4,
        crop=256,
        n_scales=2,
        pl_tile=256,
        pl_batch=1,
        bn_windows=32,
    ),
    "standard": dict(
        iterations=1500,
        refresh_every=500,
        batch_size=8,
        crop=512,
        n_scales=3,
        pl_tile=256,
        pl_batch=2,
        bn_windows=64,
    ),
    # the paper: 5000 self-training iterations after 10000 source ones, refresh every 2000,
    # batch 8, 512 crops, scales x2..x3.5 (4 scales)
    "paper": dict(
        iterations=5000,
        refresh_every=2000,
        batch_size=8,
        crop=512,
        n_scales=4,
        pl_tile=512,
        pl_batch=4,
        bn_windows=128,
    ),
}

#: Named starting points for source training (``lovecs train --preset``); every value can be
#: overridden.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(
        iterations=500, batch_size=8, crop=256, encoder="resnet18", decoder_channels=(128, 64)
    ),
    "standard": dict(
        iterations=4000, batch_size=8, crop=512, encoder="resnet34", decoder_channels=(256, 128)
    ),
    "paper": dict(
        iterations=10000, batch_size=8, crop=512, encoder="resnet50", decoder_channels=(256, 128)
    ),
}
