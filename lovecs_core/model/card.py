"""Model card and model file.

A model file (suffix ``.lovecs``) is a safetensors file: the weights as tensors, and the model card
as JSON in the safetensors metadata under the key ``lovecs_card``. Opening one never runs code.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NoReturn, Optional

from ..contract import DOMAINS, part_path
from .card_fields import CardProblem, check_card_fields

if TYPE_CHECKING:  # the QGIS plugin reads cards without torch in its process
    import numpy as np
    import torch

FORMAT_NAME = "lovecs-model"
FORMAT_VERSION = 1
CARD_KEY = "lovecs_card"
MODEL_SUFFIX = ".lovecs"


class ModelFileError(ValueError):
    """A model file or card is missing, corrupt or inconsistent; the message says what is wrong."""


@dataclass
class ClassInfo:
    code: int
    name: str
    color: str

    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass
class ModelCard:
    """Everything needed to use a model: architecture, classes, bands, statistics, GSD, tiling."""

    architecture: dict[str, Any]
    classes: list[ClassInfo]
    band_names: list[str]
    band_dtype: str = "uint8"
    band_range: tuple[float, float] = (0.0, 255.0)
    normalization: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    gsd: Optional[float] = None
    tile_size: int = 512
    overlap: int = 64
    default_domain: str = "source"
    name: str = "LoveCS land-cover model"
    provenance: dict[str, Any] = field(default_factory=dict)
    adaptation: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    #: the source sensor's radiometry (``reference``, see radiometry.py) and, for an adapted or
    #: aligned model, the ``alignment`` applied to its scene
    radiometry: dict[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------------
    @property
    def band_count(self) -> int:
        return len(self.band_names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_codes(self) -> list[int]:
        return [c.code for c in self.classes]

    def stats(self, domain: str) -> tuple[list[float], list[float]]:
        """(mean, std) per band for a domain; target falls back to source when not adapted yet."""
        if domain not in DOMAINS:
            raise ModelFileError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
        entry = self.normalization.get(domain) or self.normalization.get("source")
        if entry is None:
            raise ModelFileError("model card has no normalisation statistics")
        return list(entry["mean"]), list(entry["std"])

    def domain_gsd(self, domain: str) -> Optional[float]:
        """Ground sample distance the model expects in a domain: an adapted model works on the
        target scene's own pixels (``adaptation["target_gsd"]``), else the card's ``gsd``."""
        if domain == "target" and self.adaptation.get("target_gsd"):
            return float(self.adaptation["target_gsd"])
        return self.gsd

    def has_domain(self, domain: str) -> bool:
        return domain in self.normalization

    def recorded_source_data(self) -> tuple[list[tuple[Path, Path]], list[str]]:
        """``(image/label pairs recorded in the provenance, those of their files missing here)``."""
        images = self.provenance.get("source_images") or []
        labels = self.provenance.get("source_labels") or []
        if not images or len(images) != len(labels):
            return [], []
        pairs = [(Path(i), Path(lab)) for i, lab in zip(images, labels)]
        return pairs, [str(p) for pair in pairs for p in pair if not p.is_file()]

    def has_source_term(self) -> bool:
        """Whether adaptation can train with a source term without being given source data: the
        model file carries a labelled source sample, or the recorded source files exist here."""
        if self.provenance.get("source_sample"):
            return True
        pairs, missing = self.recorded_source_data()
        return bool(pairs) and not missing

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.architecture,
            "classes": [{"code": c.code, "name": c.name, "color": c.color} for c in self.classes],
            "bands": {
                "count": self.band_count,
                "names": self.band_names,
                "dtype": self.band_dtype,
                "range": list(self.band_range),
            },
            "normalization": self.normalization,
            "gsd": self.gsd,
            "tile": {"size": self.tile_size, "overlap": self.overlap},
            "default_domain": self.default_domain,
            "provenance": self.provenance,
            "adaptation": self.adaptation,
            "scores": self.scores,
            "radiometry": self.radiometry,
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelCard":
        validate_card_dict(data)
        bands = data["bands"]
        tile = data.get("tile", {})
        return cls(
            architecture=dict(data["architecture"]),
            classes=classes_from_iterable(data["classes"]),
            band_names=list(bands["names"]),
            band_dtype=str(bands.get("dtype", "uint8")),
            band_range=tuple(bands.get("range", (0.0, 255.0))),
            normalization=copy.deepcopy(data["normalization"]),
            gsd=None if data.get("gsd") is None else float(data["gsd"]),
            tile_size=int(tile.get("size", 512)),
            overlap=int(tile.get("overlap", 64)),
            default_domain=str(data.get("default_domain", "source")),
            name=str(data.get("name", "LoveCS land-cover model")),
            provenance=dict(data.get("provenance", {})),
            adaptation=dict(data.get("adaptation", {})),
            scores=dict(data.get("scores", {})),
            radiometry=dict(data.get("radiometry") or {}),
        )

    def copy(self) -> "ModelCard":
        return ModelCard.from_dict(copy.deepcopy(self.to_dict()))


def _fail(msg: str) -> NoReturn:
    raise ModelFileError(f"invalid model card: {msg}")


def validate_card_dict(data: Any) -> None:
    """Raise :class:`ModelFileError` naming the first problem found in a card dictionary."""
    if not isinstance(data, dict):
        _fail("the card is not a JSON object")
    if data.get("format") != FORMAT_NAME:
        _fail(f"'format' must be {FORMAT_NAME!r}, found {data.get('format')!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        _fail(f"unsupported 'format_version' {version!r} (this engine reads 1..{FORMAT_VERSION})")
    for key in ("architecture", "classes", "bands", "normalization"):
        if key not in data:
            _fail(f"missing required field {key!r}")
    arch = data["architecture"]
    if not isinstance(arch, dict) or "arch" not in arch:
        _fail("'architecture' must be an object with an 'arch' name")
    try:
        check_card_fields(data)
    except CardProblem as exc:
        raise ModelFileError(f"invalid model card: {exc}") from None


def load_classes(path: str | os.PathLike[str]) -> list[ClassInfo]:
    """Read a classes JSON (``{"classes": [{code, name, color}, ...]}`` or a bare list)."""
    data = parse_json(Path(path).read_text(), f"classes file {path}")
    return classes_from_iterable(data["classes"] if isinstance(data, dict) else data)


#: Tensors of the labelled source sample a model file may carry (not weights; see data.py).
SAMPLE_IMAGES, SAMPLE_LABELS = "sample.images", "sample.labels"


def save_model(
    path: str | os.PathLike[str], card: ModelCard, state_dict: dict[str, "torch.Tensor"]
) -> Path:
    """Write weights + card atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    try:
        save_file(tensors, str(tmp), metadata={CARD_KEY: card.to_json(indent=None)})
        os.chmod(tmp, 0o644)  # safetensors writes 0600; a model is meant to be shared
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - safetensors' own error type for I/O too
        raise ModelFileError(write_failure(path, exc, "model file")) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


#: Free space below which a failed write is called a full disk (the writers' own texts vary:
#: torch says "unexpected pos", safetensors "I/O error").
FULL_DISK_BYTES = 64 * 1024**2


def write_failure(path: Path, exc: BaseException, what: str) -> str:
    """Why a file (a model file, a checkpoint) could not be written, in one line."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = FULL_DISK_BYTES
    text = str(exc).strip()
    if (
        getattr(exc, "errno", None) == errno.ENOSPC
        or "No space left" in text
        or (free < FULL_DISK_BYTES)
    ):
        return (
            f"disk full: cannot write the {what} {path} ({free / 1024**2:.1f} MB free); free "
            "some space or write to another disk"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"cannot write the {what} {path}: {first}"


def _read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, read with the standard library only (the
    format: 8-byte little-endian header length, then a JSON header), so a QGIS Python without
    torch or safetensors can read cards."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file is shorter than a safetensors header")
        length = int.from_bytes(head, "little")
        if not 2 <= length <= 100_000_000:
            raise ValueError(f"implausible header length {length}")
        raw = f.read(length)
    if len(raw) != length:
        raise ValueError("header is truncated")
    header = parse_json(raw.decode("utf-8"), "header")
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header.get("__metadata__") or {}


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate only the card (cheap: the weights are not loaded; no torch needed)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        meta = _read_safetensors_metadata(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path} is not a LoveCS model file (safetensors header unreadable: {exc})"
        ) from exc
    if not isinstance(meta, dict) or CARD_KEY not in meta:
        raise ModelFileError(f"{path} is a safetensors file without a LoveCS model card")
    try:
        data = parse_json(meta[CARD_KEY], "model card")
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: model card is not valid JSON ({exc})") from None
    try:
        return ModelCard.from_dict(data)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        # a field of the wrong kind, or nested past any sense
        raise ModelFileError(f"{path}: invalid model card ({type(exc).__name__}: {exc})") from None


#: JSON nested deeper than this is refused before Python's parser recurses (a card is 4 deep).
MAX_JSON_DEPTH = 64


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` for JSON read from a file: a document nested deeper than
    :data:`MAX_JSON_DEPTH` is a ``ValueError`` with one line, never a ``RecursionError``."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(
                f"the {what} is nested more than {MAX_JSON_DEPTH} levels deep; it was not "
                "written by LoveCS"
            )
    return json.loads(text)


def load_model_file(path: str | os.PathLike[str]) -> tuple[ModelCard, dict[str, "torch.Tensor"]]:
    """Read the card and the weights (on CPU)."""
    from safetensors.torch import load_file

    card = read_card(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelFileError(f"{path}: weights are corrupt or truncated ({exc})") from exc
    return card, tensors


def read_source_sample(path: str | os.PathLike[str]) -> Optional[tuple["np.ndarray", "np.ndarray"]]:
    """The labelled source sample carried in a model file, ``(images[N, C, H, W], labels[N, H,
    W] uint8 codes)``, or None when the file has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            if not {SAMPLE_IMAGES, SAMPLE_LABELS} <= keys:
                return None
            return f.get_tensor(SAMPLE_IMAGES), f.get_tensor(SAMPLE_LABELS)
    except Exception as exc:  # noqa: BLE001 - any safetensors failure is a corrupt file
        raise ModelFileError(f"{path}: source sample unreadable ({exc})") from exc


def classes_from_iterable(items: Iterable[dict[str, Any]]) -> list[ClassInfo]:
    return [ClassInfo(int(c["code"]), str(c["name"]), str(c["color"]).upper()) for c in items]
