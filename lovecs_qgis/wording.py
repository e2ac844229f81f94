"""The words the dock shows a person: the stage line, the log's lines, the health check, times.

The engine's raw output (``INFO lovecs_core.mapping.predict: …`` on stderr) stays in the raw log;
:func:`people_line` keeps what a person needs from it (what was chosen, warnings) in plain form.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from .engine import contract
from .events import EngineEvent
from .i18n import tr

#: What a person reads when a stage begins.
STAGE_TITLES: dict[str, str] = {
    contract.READING: "Reading the scene",
    contract.STATISTICS: "Measuring the scene with the model",
    contract.PSEUDO_LABELS: "Labelling the scene with the model (pseudo-labels)",
    contract.TRAINING: "Adapting the model (self-training)",
    contract.MAPPING: "Mapping the scene",
    contract.RESAMPLING: "Resampling the map to the scene's grid",
    contract.WRITING: "Writing the map",
    contract.EVALUATING: "Evaluating",
    contract.FEATURES: "Computing the model's features",
}

_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")
#: Engine log lines the dock says in its own words already (the health check, the errors).
_SAID_ELSEWHERE = ("health check:",)


def stage_title(stage: str) -> str:
    return tr(STAGE_TITLES.get(stage, stage.capitalize()))


def stage_text(event: EngineEvent) -> str:
    """The stage line: ``"Adapting the model (self-training), round 1/2: iteration 35/120"``."""
    extra = event.data.get("extra") or {}
    head = stage_title(event.stage)
    message = event.message
    if "round" in extra and "rounds" in extra:
        head += tr(", round {}/{}").format(extra["round"], extra["rounds"])
        message = re.sub(r"^round \d+/\d+[,:]?\s*", "", message)
    elif not message:
        message = f"{100 * event.fraction:.0f} %"
    return f"{head}: {message}" if message else head


def people_line(raw: str) -> Optional[str]:
    """An engine log line as a person reads it, or None when it belongs to the raw log only
    (debug lines, errors said elsewhere, tracebacks, lines of other libraries)."""
    match = _LOG_LINE.match(raw.strip())
    if match is None:
        return None
    level, source, text = match.groups()
    if not source.split(".")[0].endswith("lovecs_core") or level in ("DEBUG", "ERROR", "CRITICAL"):
        return None
    if text.lower().startswith(_SAID_ELSEWHERE):
        return None
    if level == "WARNING":
        return tr("Note: {}").format(text)
    return text[:1].upper() + text[1:] if text.split(" ", 1)[0].isalpha() else text


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _change(before: float, after: float) -> str:
    """``"more"``/``"less"``/``"as"``, as the rounded figures read."""
    b, a = round(100 * before), round(100 * after)
    return tr("more") if a > b else tr("less") if a < b else tr("as")


def health_words(health: dict[str, Any]) -> str:
    """The health check's numbers, in words that agree with them."""
    if "class_confidence_after" in health:  # cards of earlier releases lack it
        before, after = health["class_confidence_before"], health["class_confidence_after"]
        confidence = tr("{} confident per class ({} → {}; all pixels {} → {})").format(
            _change(before, after),
            _pct(before),
            _pct(after),
            _pct(health["confidence_before"]),
            _pct(health["confidence_after"]),
        )
    else:
        before, after = health["confidence_before"], health["confidence_after"]
        confidence = tr("{} confident ({} → {})").format(
            _change(before, after), _pct(before), _pct(after)
        )
    return tr(
        "agrees on {} of the pixels the source model was sure of; {}; class shares moved {}"
    ).format(_pct(health["agreement_confident"]), confidence, _pct(health["class_shift"]))


VERDICT_WORDS: dict[str, str] = {
    contract.IMPROVED: "the adapted model looks better for this scene",
    contract.UNCERTAIN: "the adaptation changed the map but did not show that it improves it",
    contract.HARMFUL: "the adapted map contradicts what the source model was sure of",
}


def health_text(result: dict[str, Any]) -> str:
    """The health check in plain words, for the log and the status line ('' if none)."""
    health = result.get("health") or {}
    if not health:
        return ""
    meaning = tr(VERDICT_WORDS.get(health["verdict"], ""))
    return tr("Health check: {} ({}): {}.").format(health["verdict"], meaning, health_words(health))


def health_reasons(health: dict[str, Any]) -> str:
    """Why the health check gave its verdict ('' if it says nothing more): with corrections,
    how they judged the two models, and their lean."""
    return "; ".join(str(r) for r in health.get("reasons") or [])


def health_why(result: dict[str, Any]) -> str:
    """Why the health check gave its verdict, for the log ('' if it says nothing more)."""
    reasons = health_reasons(result.get("health") or {})
    return tr("Why: {}.").format(reasons) if reasons else ""


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def time_text(elapsed: float, left: Optional[float], measuring: bool) -> str:
    """``"elapsed 1 min 05 s, about 4 min left"``; ``"…, estimating…"`` while the pace is
    measured; the elapsed time alone when nothing is left to estimate."""
    text = tr("elapsed {}").format(format_seconds(elapsed))
    if left is not None:
        return text + tr(", {} left").format(about(left))
    return text + tr(", estimating the time left…") if measuring else text


def about(seconds: float) -> str:
    if seconds < 60:
        return tr("less than a minute")
    minutes = round(seconds / 60)
    if minutes < 60:
        return tr("about {} min").format(minutes)
    return tr("about {} h {:02d} min").format(minutes // 60, minutes % 60)
