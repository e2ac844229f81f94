"""Adaptation settings in range, checked before anything runs (torch-free; the plugin calls it
too): :func:`check_adapt_settings` names the setting and what it must be, e.g. ``crop must be a
whole number of at least 16, got 0``."""

from __future__ import annotations

import math
from typing import Any

from .outputs import CheckError

__all__ = ["ADAPT_RULES", "MAX_WINDOW", "check_adapt_settings"]


#: Adaptation settings: (test, what is required). ``None`` values are not checked (the preset's).
def _int_at_least(low: int):  # noqa: ANN202
    return (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
        f"a whole number of at least {low}",
    )


def _number(low: float, high: float = math.inf, low_open: bool = False):  # noqa: ANN202
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and v <= high

    bound = f"above {low:g}" if low_open else f"at least {low:g}"
    return ok, f"a number {bound}" + ("" if high == math.inf else f" and at most {high:g}")


ADAPT_RULES: dict[str, tuple[Any, str]] = {
    "iterations": _int_at_least(1),
    "refresh_every": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "crop": _int_at_least(16),
    "lr": _number(0.0, 10.0, low_open=True),
    "momentum": _number(0.0, 1.0),
    "weight_decay": _number(0.0, 1.0),
    "power": _number(0.0, 10.0, low_open=True),
    "grad_clip": _number(0.0, low_open=True),
    "portion": _number(0.0, 1.0, low_open=True),
    "absent_share": _number(0.0, 1.0),
    "source_weight": _number(0.0),
    "pseudo_weight": _number(0.0),
    "n_scales": _int_at_least(1),
    "pl_tile": _int_at_least(16),
    "pl_margin": _int_at_least(0),
    "pl_batch": _int_at_least(1),
    "bn_windows": _int_at_least(1),
    "in_memory_pixels": _int_at_least(0),
}
#: The largest training window / pseudo-labelling tile accepted (pixels per side).
MAX_WINDOW = 8192
_FLAGS = {
    "refresh_every": "refresh-every",
    "batch_size": "batch-size",
    "source_weight": "source-weight",
    "pseudo_weight": "pseudo-weight",
    "n_scales": "n-scales",
    "pl_tile": "pl-tile",
    "bn_windows": "bn-windows",
    "scale_range": "scale-range",
}


def check_adapt_settings(**settings: Any) -> None:
    """Adaptation settings in range, before anything runs: pass the overrides given by the user
    (``None`` = the preset's, not checked) or a whole ``AdaptConfig.to_dict()``; keys not known
    here (``seed``, ``device`` ...) are ignored. Raises :class:`CheckError` naming the
    setting, e.g. ``crop must be a whole number of at least 16, got 0``."""
    for key, value in settings.items():
        if value is None:
            continue
        name = _FLAGS.get(key, key)
        rule = ADAPT_RULES.get(key)
        if rule is not None:
            ok, need = rule
            if not ok(value):
                raise CheckError(f"{name} must be {need}, got {value!r}")
            if key in ("crop", "pl_tile") and value > MAX_WINDOW:
                raise CheckError(f"{name} must be at most {MAX_WINDOW} pixels, got {value!r}")
        elif key == "scales":
            values = list(value)
            if not values or not all(_number(0.0, 100.0, low_open=True)[0](v) for v in values):
                raise CheckError(f"scales must be positive numbers (at most 100), got {value!r}")
        elif key == "scale_range":
            lo, hi = value
            if not (
                _number(0.0, 100.0, low_open=True)[0](lo)
                and _number(0.0, 100.0, low_open=True)[0](hi)
                and lo <= hi
            ):
                raise CheckError(f"{name} must be MIN,MAX with 0 < MIN <= MAX, got {value!r}")
