"""The fields of a model card dictionary checked before anything is built from them: classes,
bands, normalisation, default domain, GSD, tile, and sane architecture sizes (a crafted card
beyond them is refused before anything is allocated). :func:`.card.validate_card_dict` checks
the format and the required fields, then these."""

from __future__ import annotations

import math
import re
from typing import Any, NoReturn

from ..contract import DOMAINS

_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


class CardProblem(ValueError):
    """The first problem found in a card's fields."""


def _problem(msg: str) -> NoReturn:
    raise CardProblem(msg)


def check_card_fields(data: dict[str, Any]) -> None:
    """Raise :class:`CardProblem` naming the first problem in the card's fields (the required
    ones present, ``architecture`` an object)."""
    _check_classes(data["classes"])
    n_bands = _check_bands(data["bands"])
    _check_normalization(data["normalization"], n_bands)
    if data.get("default_domain", "source") not in DOMAINS:
        _problem(f"'default_domain' must be one of {DOMAINS}")
    gsd = data.get("gsd")
    if gsd is not None and (not _is_number(gsd) or gsd <= 0):
        _problem(f"'gsd' must be a positive number of metres or null, found {gsd!r}")
    _check_tile(data.get("tile", {}))
    _check_architecture_sizes(data["architecture"])


def _check_classes(classes: Any) -> None:
    if not isinstance(classes, list) or not classes:
        _problem("'classes' must be a non-empty list")
    codes = set()
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or not {"code", "name", "color"} <= set(c):
            _problem(f"classes[{i}] needs 'code', 'name' and 'color'")
        code = c["code"]
        if not isinstance(code, int) or not 1 <= code <= 255:
            _problem(f"classes[{i}].code must be an integer 1..255 (0 is nodata), found {code!r}")
        if code in codes:
            _problem(f"class code {code} appears twice")
        codes.add(code)
        if not isinstance(c["color"], str) or not _COLOR.match(c["color"]):
            _problem(f"classes[{i}].color must look like '#RRGGBB', found {c['color']!r}")


def _check_bands(bands: Any) -> int:
    """Check the card's bands; return how many there are."""
    if (
        not isinstance(bands, dict)
        or not isinstance(bands.get("names"), list)
        or not bands["names"]
    ):
        _problem("'bands.names' must be a non-empty list")
    n_bands = len(bands["names"])
    if "count" in bands and bands["count"] != n_bands:
        _problem(f"'bands.count' is {bands['count']} but {n_bands} band names are given")
    if n_bands > MAX_BANDS:
        _problem(f"{n_bands} bands is more than this engine accepts ({MAX_BANDS})")
    if "range" in bands:
        rng = bands["range"]
        if (
            not isinstance(rng, list)
            or len(rng) != 2
            or not all(map(_is_number, rng))
            or not rng[0] < rng[1]
        ):
            _problem(f"'bands.range' must be [low, high] numbers with low < high, found {rng!r}")
    return n_bands


def _check_normalization(norm: Any, n_bands: int) -> None:
    if not isinstance(norm, dict) or "source" not in norm:
        _problem("'normalization' must hold statistics for the 'source' domain")
    for domain, entry in norm.items():
        if domain not in DOMAINS:
            _problem(f"unknown normalisation domain {domain!r}")
        for key in ("mean", "std"):
            values = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(values, list) or len(values) != n_bands:
                _problem(f"normalization.{domain}.{key} must list {n_bands} numbers (one per band)")
            bad = [v for v in values if not _is_number(v)]
            if bad:
                _problem(f"normalization.{domain}.{key} must hold numbers, found {bad[0]!r}")
        if any(float(s) <= 0 for s in entry["std"]):
            _problem(f"normalization.{domain}.std must be positive")


def _check_tile(tile: Any) -> None:
    if not isinstance(tile, dict):
        _problem("'tile' must be an object with 'size' and 'overlap'")
    size, overlap = tile.get("size", 512), tile.get("overlap", 64)
    if not _is_int(size) or not 1 <= size <= MAX_TILE:
        _problem(f"'tile.size' must be a whole number of pixels, 1..{MAX_TILE}, found {size!r}")
    if not _is_int(overlap) or not 0 <= overlap < size:
        _problem(
            f"'tile.overlap' must be a whole number of pixels, 0..{size - 1} (below the tile "
            f"size), found {overlap!r}"
        )


#: Sane limits of what a card may declare; a crafted card beyond them is refused before anything
#: is allocated (a network 40,000 channels wide would ask for tens of GB).
MAX_BANDS = 64
MAX_TILE = 8192
#: The architecture keys of a widened head's random features and context window (:mod:`.wide_head`).
HEAD_FEATURES, HEAD_CONTEXT = "head_features", "head_context"
ARCH_LIMITS: dict[str, tuple[int, int]] = {
    "width": (1, 1024),
    "depth": (0, 64),  # tiny
    "pyramid_channels": (1, 2048),
    "segmentation_channels": (1, 2048),  # fpn
    HEAD_FEATURES: (1, 8192),
    HEAD_CONTEXT: (1, 255),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_architecture_sizes(arch: dict[str, Any]) -> None:
    for key, (low, high) in ARCH_LIMITS.items():
        if key in arch:
            value = arch[key]
            if not _is_int(value) or not low <= value <= high:
                _problem(
                    f"architecture.{key} must be a whole number {low}..{high}, found {value!r}"
                )
    if HEAD_CONTEXT in arch and arch[HEAD_CONTEXT] % 2 == 0:
        _problem(f"architecture.{HEAD_CONTEXT} must be odd (a window centred on its cell)")
    encoder = arch.get("encoder")
    if encoder is not None and not isinstance(encoder, str):
        _problem(f"architecture.encoder must be a name, found {encoder!r}")
