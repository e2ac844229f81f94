"""The dock's messages in QGIS's message bar: an adapted model to reuse, an adaptation kept aside
(the safe result, with a way to keep the adapted model anyway), and errors with their details."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

from .engine import contract
from .i18n import tr


def _with_buttons(
    bar: Any,
    title: str,
    text: str,
    level: Any,
    duration: int,
    buttons: list[tuple[str, Callable[[], Any], str]],
) -> None:
    widget = bar.createMessage(title, text)
    for label, action, tip in buttons:
        button = QPushButton(label, widget)
        if tip:
            button.setToolTip(tip)
        button.clicked.connect(action)
        widget.layout().addWidget(button)
    bar.pushWidget(widget, level, duration)


def offer_model(bar: Any, model: Path, use: Callable[[], Any]) -> None:
    """The adapted model was delivered: offer to reuse it."""
    text = tr("Adapted model saved: {}. Reuse it for other scenes of this sensor.").format(
        model.name
    )
    _with_buttons(bar, "LoveCS", text, Qgis.Success, 15, [(tr("Use this model"), use, "")])


def offer_rejected(
    bar: Any,
    model: Path,
    verdict: Optional[str],
    keep: Callable[[], Any],
    details: Callable[[], Any],
) -> None:
    """The adaptation was not judged improved: say so in plain words, and offer the adapted
    model anyway."""
    headline = (
        tr("Adapting would likely have made this map worse")
        if verdict == contract.HARMFUL
        else tr("The health check could not show that adapting improves this map")
    )
    text = headline + tr(
        ", so you got the source model's map, aligned to this scene (the safe result)."
    )
    tip = tr("Map the scene with the adapted model ({})").format(model.name)
    _with_buttons(
        bar,
        "LoveCS",
        text,
        Qgis.Warning,
        0,
        [(tr("Keep adapted model anyway"), keep, tip), (tr("Details"), details, "")],
    )


def push_error(bar: Any, error: str, details: Callable[[], Any]) -> None:
    """A failed run: its first line, and the log behind "Details"."""
    _with_buttons(
        bar,
        tr("LoveCS failed"),
        error.splitlines()[0][:200],
        Qgis.Critical,
        0,
        [(tr("Details"), details, "")],
    )
