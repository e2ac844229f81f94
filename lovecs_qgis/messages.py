"""The dock's messages in QGIS's message bar: an adapted model to reuse, an adaptation kept aside
(the safe result, with a way to keep the adapted model anyway), and errors with their details.

Messages with a choice stay until the user closes them or the dock starts another run
(:func:`dismiss`): a job may have taken many minutes, the user may come back later."""

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
) -> Any:
    widget = bar.createMessage(title, text)
    for label, action, tip in buttons:
        button = QPushButton(label, widget)
        if tip:
            button.setToolTip(tip)
        button.clicked.connect(action)
        widget.layout().addWidget(button)
    bar.pushWidget(widget, level, duration)
    return widget


def dismiss(bar: Any, widget: Any) -> None:
    """Take a message off the bar if it is still there."""
    try:
        bar.popWidget(widget)
    except RuntimeError:  # the user closed it: Qt deleted it
        pass


def offer_model(bar: Any, model: Path, use: Callable[[], Any]) -> Any:
    """The adapted model was delivered: offer to reuse it (until closed); the message."""
    text = tr("Adapted model saved: {}. Reuse it for other scenes of this sensor.").format(
        model.name
    )
    return _with_buttons(bar, "LoveCS", text, Qgis.Success, 0, [(tr("Use this model"), use, "")])


def offer_rejected(
    bar: Any,
    model: Path,
    verdict: Optional[str],
    keep: Callable[[], Any],
    details: Callable[[], Any],
) -> Any:
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
    return _with_buttons(
        bar,
        "LoveCS",
        text,
        Qgis.Warning,
        0,
        [(tr("Keep adapted model anyway"), keep, tip), (tr("Details"), details, "")],
    )


def offer_next(
    bar: Any,
    result: dict[str, Any],
    model_out: Optional[Path],
    keep: Callable[[Path], Any],
    use: Callable[[Path], Any],
    details: Callable[[], Any],
) -> tuple[Any, str]:
    """After a run that delivered: ``(offer or None, a line for the log or '')``. The adapted
    model kept aside is offered anyway (``keep``); one delivered is offered for reuse (``use``)."""
    rejected = result.get("rejected")
    if rejected and Path(rejected).is_file():
        kept = Path(rejected)
        verdict = (result.get("health") or {}).get("verdict")
        offer = offer_rejected(bar, kept, verdict, keep=lambda: keep(kept), details=details)
        note = tr(
            "The adapted model is kept in {}. 'Keep adapted model anyway' maps the scene with it."
        ).format(kept)
        return offer, note
    if model_out is not None and model_out.is_file():
        return offer_model(bar, model_out, lambda: use(model_out)), ""
    return None, ""


def push_error(bar: Any, error: str, details: Callable[[], Any]) -> Any:
    """A failed run: its first line, and the log behind "Details"."""
    return _with_buttons(
        bar,
        tr("LoveCS failed"),
        error.splitlines()[0][:200],
        Qgis.Critical,
        0,
        [(tr("Details"), details, "")],
    )
