"""What the QGIS plugin and the engine must agree on, in one place.

The engine runs in a child process (``python -m lovecs_core --progress json COMMAND ...``), so
the plugin and the engine talk through strings: command-line choices, JSON event types, stage
names, the names of temporary files. This module holds every one of them. It imports nothing
but the standard library and :mod:`lovecs_core.presets` (plain data): no torch, no GDAL, no
numpy, so the plugin imports it inside QGIS and the CLI builds its parser from it in a few
milliseconds (``tests/core/test_contract.py`` checks both).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from .presets import PRESETS, TRAIN_PRESETS

# -- names the user chooses from -----------------------------------------------------------------

#: Adaptation methods (``lovecs adapt --method``); the first is the default everywhere.
METHODS: tuple[str, ...] = ("lovecs", "cbst", "adabn", "source-only")
DEFAULT_METHOD = METHODS[0]
#: Adaptation presets (``lovecs adapt --preset``), from :data:`lovecs_core.presets.PRESETS`.
ADAPT_PRESETS: tuple[str, ...] = tuple(PRESETS)
#: The default everywhere (dock, Processing, ``lovecs adapt``): the preset the benchmark measures
#: (bench/RESULTS.md); ``standard`` and ``paper`` train longer, for a GPU.
DEFAULT_ADAPT_PRESET = "fast"
#: Source-training presets (``lovecs train --preset``).
TRAIN_PRESET_NAMES: tuple[str, ...] = tuple(TRAIN_PRESETS)
DEFAULT_TRAIN_PRESET = "paper"
#: Architectures (``lovecs train --arch``): Semantic FPN, or a few conv layers for tests/demos.
ARCHITECTURES: tuple[str, ...] = ("fpn", "tiny")
#: FPN encoders a model card may name (segmentation-models-pytorch names).
ENCODERS: tuple[str, ...] = ("resnet50", "resnet34", "resnet18", "mobilenet_v2", "efficientnet-b0")
#: Device choices offered by the Processing algorithms (the engine also takes ``cuda:N``).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Normalisation domains of a model card.
DOMAINS: tuple[str, ...] = ("source", "target")

# -- the health check's verdicts (lovecs_core.adaptation.health) and what they mean to a user --------------

IMPROVED, UNCERTAIN, HARMFUL = "improved", "uncertain", "likely harmful"
VERDICTS: tuple[str, ...] = (IMPROVED, UNCERTAIN, HARMFUL)
#: Plain words for each verdict (CLI, Processing log, dock).
VERDICT_MEANING: dict[str, str] = {
    IMPROVED: "the adapted map keeps what the source model was sure of and is more confident",
    UNCERTAIN: "the adaptation changed the map but did not show that it improves it",
    HARMFUL: "the adapted map contradicts what the source model was sure of",
}


def safe_result_note(verdict: str, rejected: str) -> str:
    """Why the user got the aligned source model instead of the adapted one, and how to keep
    the adapted one anyway (``rejected``: where it was kept)."""
    why = (
        "adapting would likely make this map worse"
        if verdict == HARMFUL
        else "the health check could not show that adapting improves this map"
    )
    return (
        f"{why}, so the model file and the map are the source model's, aligned to the "
        f"scene (the safe result). The adapted model is kept in {rejected}"
    )


# -- the JSON lines on the engine's stdout (``--progress json``) ----------------------------------

PROGRESS, RESULT, ERROR, CANCELLED = "progress", "result", "error", "cancelled"
#: The refine session's answer to one request (see the session section below).
REPLY = "reply"
#: ``log`` is never written by the engine: the plugin's name for stderr lines and non-JSON text.
LOG = "log"
EVENT_TYPES: tuple[str, ...] = (PROGRESS, RESULT, ERROR, CANCELLED, REPLY)
#: Keys of ``lovecs adapt``'s result event (the plugin reads ``health`` and ``rejected``).
ADAPT_RESULT_KEYS: tuple[str, ...] = (
    "output",
    "method",
    "map",
    "confidence",
    "seconds",
    "device",
    "rounds",
    "adaptation",
    "health",
    "rejected",
)

# -- stages and the plugin's progress bar --------------------------------------------------------

READING, STATISTICS, TRAINING, PSEUDO_LABELS = "reading", "statistics", "training", "pseudo-labels"
MAPPING, RESAMPLING, WRITING, EVALUATING = "mapping", "resampling", "writing", "evaluating"
#: The refine session and ``lovecs refine``: the body's features of a view or scene.
FEATURES = "features"

#: Overall progress (percent) spanned by each stage the engine reports, per command. A stage
#: missing here (``reading`` in predict, ``pseudo-labels`` between training rounds) keeps the
#: bar where it is. Adaptation reports ``statistics`` twice: for the source model's reference
#: map before training and for the health check at the end; the bar never goes backwards.
STAGES: dict[str, dict[str, tuple[float, float]]] = {
    "predict": {MAPPING: (0, 85), RESAMPLING: (85, 92), WRITING: (92, 100)},
    "train": {READING: (0, 5), TRAINING: (5, 99)},
    "adapt": {
        READING: (0, 2),
        STATISTICS: (2, 6),
        TRAINING: (6, 84),
        MAPPING: (84, 95),
        RESAMPLING: (95, 97),
        WRITING: (97, 100),
    },
    "evaluate": {EVALUATING: (0, 100)},
    "refine": {FEATURES: (0, 80), MAPPING: (80, 95), RESAMPLING: (95, 97), WRITING: (97, 100)},
}
#: Stages reported without a share of the bar.
UNWEIGHTED_STAGES: dict[str, tuple[str, ...]] = {
    "predict": (READING,),
    "adapt": (PSEUDO_LABELS,),
}

# -- temporary files ------------------------------------------------------------------------------
#
# Outputs are written under a hidden temporary name in the output's folder and renamed when
# complete. When the engine is killed (out of memory, the plugin's grace timeout) they stay, and
# the plugin removes them with :func:`partial_files`; the names and the pattern live together.
# A training or adaptation run may also leave a checkpoint (:func:`checkpoint_path`).

#: Tags of hidden temporary rasters: the output itself, and the stages of a resampled run (the
#: map on the model's grid, its confidence and probabilities, each warped back to the input grid).
PART, MODEL_GRID, MODEL_GRID_CONF, MODEL_GRID_PROB, INPUT_GRID = (
    "part",
    "model-grid",
    "model-grid-conf",
    "model-grid-prob",
    "input-grid",
)
TEMPORARY_TAGS: tuple[str, ...] = (PART, MODEL_GRID, MODEL_GRID_CONF, MODEL_GRID_PROB, INPUT_GRID)
#: Suffix of a non-raster file being written (a model file, a .qml, a checkpoint).
PART_SUFFIX = ".part"
#: Prefix of the probe file the early checks create (and delete) to test a folder.
PROBE_PREFIX = ".lovecs-probe-"
#: Suffix of a resumable checkpoint (``lovecs train``/``adapt``: ``OUT.ckpt``). The command line
#: keeps it when a run stops early, for ``--resume``; the plugin, which does not resume, removes
#: it with the partial files (:func:`partial_files` lists both).
CHECKPOINT_SUFFIX = ".ckpt"
_TOKEN = r"[0-9a-f]{8}"
#: GDAL's sidecars of a temporary raster.
_SIDECARS = r"(\.aux\.xml|\.ovr)?"


def temporary_path(final: Path, tag: str = PART) -> Path:
    """A unique hidden raster name beside ``final`` (same folder, so the rename is atomic):
    ``.map.part-1a2b3c4d.tif``. A stage file is itself written through a temporary name, so
    names nest: ``..map.model-grid-1a2b3c4d.part-5e6f7a8b.tif``."""
    if tag not in TEMPORARY_TAGS:
        raise ValueError(f"unknown temporary-file tag {tag!r}; add it to TEMPORARY_TAGS")
    return final.with_name(f".{final.stem}.{tag}-{uuid.uuid4().hex[:8]}.tif")


def part_path(final: Path) -> Path:
    """The temporary name of a non-raster output: ``model.lovecs.part``."""
    return final.with_name(final.name + PART_SUFFIX)


def checkpoint_path(final: Path) -> Path:
    """The resumable checkpoint of a run writing ``final``: ``model.lovecs.ckpt``."""
    return final.with_name(final.name + CHECKPOINT_SUFFIX)


def partial_pattern(output: Path) -> re.Pattern[str]:
    """Matches every name :func:`temporary_path` and :func:`part_path` give for ``output`` (with
    one level of nesting and GDAL's sidecars), and nothing else."""
    stem, tags = re.escape(output.stem), "|".join(map(re.escape, TEMPORARY_TAGS))
    raster = rf"\.\.?{stem}\.(?:{tags})-{_TOKEN}(?:\.{PART}-{_TOKEN})?\.tif{_SIDECARS}"
    return re.compile(rf"^(?:{raster}|{re.escape(output.name + PART_SUFFIX)})$")


def rejected_path(out: str | os.PathLike[str]) -> Path:
    """Where an adapted model not judged "improved" is kept: ``NAME.rejected.lovecs`` beside
    ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejected{out.suffix or '.lovecs'}")


def points_folder(output: Path) -> Path:
    """The hidden folder beside the model file ``output`` where ``adapt --points`` keeps the
    adapted model until the corrections judge it (removed when the run ends, or by the next
    run writing ``output`` after a ``kill -9``)."""
    return output.parent / f".lovecs-points-{output.name}"


def partial_files(output: Path) -> list[Path]:
    """The temporary files of ``output`` present in its folder, its checkpoint, and for a model
    file the temporary file of its rejected twin (never ``output`` itself)."""
    folder = output.parent
    if not folder.is_dir():
        return []
    pattern = partial_pattern(output)
    ckpt = checkpoint_path(output)
    names = {ckpt.name, part_path(ckpt).name}
    if output.suffix == ".lovecs":
        names.add(part_path(rejected_path(output)).name)
    return sorted(
        p for p in folder.iterdir() if (pattern.match(p.name) or p.name in names) and p.is_file()
    )


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one of the engine's temporary names, for any output."""
    tags = "|".join(map(re.escape, TEMPORARY_TAGS))
    return bool(
        re.match(rf"^\.\.?.+\.(?:{tags})-{_TOKEN}(?:\.{PART}-{_TOKEN})?\.tif{_SIDECARS}$", name)
        or name.endswith(PART_SUFFIX)
        or name.startswith(PROBE_PREFIX)
    )


# -- bands --------------------------------------------------------------------------------------


class BandListError(ValueError):
    """A band list the user typed cannot be read; the message says how to write one."""


def parse_bands(text: str | Sequence[int] | None) -> list[int] | None:
    """``"3,2,1"`` -> ``[3, 2, 1]`` (1-based band numbers, the CLI's ``--bands`` and the
    plugin's ``BANDS``); empty or None -> None (the engine's automatic choice)."""
    if text is None:
        return None
    if isinstance(text, str):
        text = text.replace(" ", "")
        if not text:
            return None
        try:
            bands = [int(part) for part in text.split(",") if part]
        except ValueError:
            raise BandListError(
                f"bands must be comma-separated band numbers like 3,2,1, not {text!r}"
            ) from None
    else:
        bands = [int(b) for b in text]
    if not bands or any(b < 1 for b in bands):
        raise BandListError(f"band numbers start at 1: {text!r}")
    return bands


def format_bands(bands: Iterable[int] | None) -> str:
    """``[3, 2, 1]`` -> ``"3,2,1"``; None -> ``""``."""
    return ",".join(map(str, bands)) if bands else ""


def missing_bands_problem(bands: Iterable[int], count: int, name: str = "the raster") -> str:
    """Why band numbers do not exist in a raster of ``count`` bands ('' when they all do)."""
    missing = [b for b in bands if not 1 <= b <= count]
    return f"{name} has {count} band(s); band(s) {missing} do not exist" if missing else ""


def band_count_problem(
    band_names: Sequence[str], chosen: int, where: str, how: str = "--bands"
) -> str:
    """Why ``chosen`` bands of ``where`` cannot feed a model whose card names ``band_names``
    ('' when the counts agree). ``how`` names the way to choose bands in the caller's
    interface (``--bands``, ``'Bands'``, the band mapping)."""
    expected = len(band_names)
    if chosen == expected:
        return ""
    example = format_bands(range(1, expected + 1))
    return (
        f"the model expects {expected} band(s) ({', '.join(band_names)}) but {chosen} band(s) "
        f"of {where} would be used; choose {expected} bands with {how}, e.g. {example}"
    )


def band_list_problem(
    band_names: Sequence[str],
    bands_text: str | None,
    band_count: int,
    data_band_count: int,
    where: str,
    how: str = "--bands",
) -> str:
    """The whole check of a band list a user typed against a model, before anything runs: it
    parses, names bands the raster has, and gives the model's band count ('' when it does).
    ``band_count``: the raster's bands; ``data_band_count``: those that are not alpha (what
    an empty list means); ``where``: the raster as the message names it."""
    try:
        bands = parse_bands(bands_text)
    except BandListError as exc:
        return str(exc)
    if bands:
        problem = missing_bands_problem(bands, band_count, where)
        if problem:
            return problem
    return band_count_problem(band_names, len(bands) if bands else data_band_count, where, how)


# -- corrections: the user's clicks on the map (points, lines, polygons of a vector layer) --------

#: The integer field of a corrections layer holding the model card's class codes.
CORRECTIONS_CLASS_FIELD = "class"
#: The layer name inside a corrections GeoPackage the dock creates.
CORRECTIONS_LAYER = "corrections"
#: Suffix of the GeoPackage of corrections the dock keeps next to a map (``map.tif`` ->
#: ``map.corrections.gpkg``).
CORRECTIONS_SUFFIX = ".corrections.gpkg"


def corrections_path(map_path: str | os.PathLike[str]) -> Path:
    """The corrections GeoPackage that belongs to the map ``map_path``."""
    path = Path(map_path)
    return path.with_name(path.stem + CORRECTIONS_SUFFIX)


# -- the refine session: one engine process kept alive while the dock is open ---------------------
#
# ``python -m lovecs_core --progress json session`` reads one JSON request a line on stdin and
# answers each with one ``reply`` line on stdout (progress and log events may come before it).
# A request: ``{"id": 7, "request": "refine", ...}``; its reply: ``{"type": "reply", "id": 7,
# "request": "refine", "ok": true, ...}`` or ``"ok": false`` with ``"error": "message"``.

#: Requests and the keys each takes (besides ``id`` and ``request``).
OPEN, VIEW, REFINE, UNDO, RESET, SAVE, QUIT = (
    "open",
    "view",
    "refine",
    "undo",
    "reset",
    "save",
    "quit",
)
SESSION_REQUESTS: dict[str, tuple[str, ...]] = {
    # load the model file (and the labelled source sample it carries); once per session
    OPEN: ("model", "device"),
    # compute the features of a view: raster, bands (1-based, or null), extent in the raster's
    # CRS (xmin, ymin, xmax, ymax, or null: the whole raster), and write its map to ``map``
    VIEW: ("raster", "bands", "extent", "map"),
    # fit the head to the corrections (a vector file, its class field) and rewrite ``map``
    REFINE: ("points", "class_field", "layer", "map"),
    # back one refine, or back to the source model; both rewrite ``map``
    UNDO: ("map",),
    RESET: ("map",),
    # save the current model as a .lovecs file whose card records the corrections used
    SAVE: ("out",),
    QUIT: (),
}
#: The most pixels a view may have (at the model's GSD) for the fast refine.
MAX_VIEW_PIXELS = 40_000_000
