"""The dock's device list, filled from ``lovecs devices`` (run in the background at start)."""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtWidgets import QComboBox

from .events import EngineOutcome
from .i18n import tr


def gpu_label(gpu: dict[str, Any]) -> str:
    """``"cuda:0 — NVIDIA H100 (70.1 of 79.6 GiB free)"``."""
    gib = 1024**3
    return (
        f"{gpu['name']} — {gpu['label']} ({gpu['free_memory'] / gib:.1f} of "
        f"{gpu['total_memory'] / gib:.1f} GiB free)"
    )


def fill_devices(combo: QComboBox, outcome: EngineOutcome) -> str:
    """Add the GPUs ``outcome`` lists to ``combo``; the note to show under it."""
    if not outcome.ok:
        return tr("the engine could not list devices: {}").format(outcome.error)
    for gpu in outcome.result.get("gpus", []):
        if combo.findData(gpu["name"]) < 0:
            combo.addItem(gpu_label(gpu), gpu["name"])
    reason = outcome.result.get("cuda_unavailable") or ""
    return tr("No GPU: {}; the CPU is used.").format(reason) if reason else tr("GPU ready.")
