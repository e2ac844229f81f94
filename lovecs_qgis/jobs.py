"""What the dock runs, built from plain values: no widgets, no layers (tests build jobs directly).

The dock reads its widgets into a :class:`JobRequest`; :func:`build_job` checks it against the
model card and turns it into a :class:`Job`: the engine command, its arguments and the files it
will write, named so that an earlier result is never overwritten. The texts the dock shows are
made in :mod:`lovecs_qgis.wording`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .engine import bands as engine_bands
from .engine import card as model_card
from .engine import contract, rasterchecks
from .i18n import tr
from .runner import engine_args
from .styling import ADAPTED, LAND_COVER, map_layer_name

ModelCard = model_card.ModelCard


class JobError(ValueError):
    """The dock cannot start this job; the message says why, for the user."""


@dataclass
class JobRequest:
    """What the dock's widgets say: the layer (as facts), the model and the options."""

    command: str  # "adapt" or "predict"
    layer_name: str
    raster: str  # the GDAL source to map (the layer's file, or a VRT of the map view)
    band_count: int
    data_band_count: int  # bands that are not alpha
    model: str
    bands: str = ""
    device: str = "auto"
    preset: str = contract.ADAPT_PRESETS[0]
    folder: Path = Path(".")
    ray: str = ""  # "Classify only" on a Ray cluster: its address, "local" or "auto"


@dataclass
class Job:
    """One run the dock starts: the engine command, its arguments, and what it will produce."""

    command: str  # "adapt" or "predict"
    args: list[str]
    map_path: Path
    confidence_path: Optional[Path]
    model_out: Optional[Path]
    layer_name: str
    classes_model: Path  # whose card styles the map
    notes: list[str] = field(default_factory=list)
    scene: str = ""  # the input layer's name

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.map_path, self.confidence_path, self.model_out) if p is not None]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "scene"


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem_2.suffix``... so an earlier result is never overwritten."""
    path = folder / f"{stem}{suffix}"
    n = 2
    while path.exists() or path.with_suffix(".qml").exists():
        path = folder / f"{stem}_{n}{suffix}"
        n += 1
    return path


def band_problem(
    card: ModelCard, layer_name: str, band_count: int, data_band_count: int, bands_text: str
) -> str:
    """Why the layer's bands cannot feed the model (empty when they can)."""
    return contract.band_list_problem(
        card.band_names,
        bands_text,
        band_count,
        data_band_count,
        f"'{layer_name}'",
        "the band mapping",
    )


def raster_problem(source: str, bands_text: str) -> str:
    """What the engine would refuse in the file itself, said before it starts: band numbers the
    file (as GDAL reads it) lacks, complex values, a size no run would finish ('' if none)."""
    try:
        bands = contract.parse_bands(bands_text)
        path = source.split("|")[0]
        ds = rasterchecks.open_quietly(path)
        if ds is not None and bands:
            rasterchecks.check_band_numbers(bands, ds.RasterCount, f"'{Path(path).name}'")
        rasterchecks.check_raster_data(path, bands or None)
    except (contract.BandListError, rasterchecks.CheckError) as exc:
        return str(exc)
    return ""


def auto_bands(card: ModelCard, source: str, data_band_count: int) -> str:
    """A band mapping from band names/colour interpretation, e.g. ``"3,2,1"``; the first bands
    when the layer has more than the model and their names do not help (as the engine does);
    empty when the layer's bands already match by count and no better mapping is known."""
    try:
        found, _ = engine_bands.choose_bands(card.band_names, source)
    except Exception:  # not a GDAL source; the count check reports the rest
        found = None
    if found and (
        found != list(range(1, card.band_count + 1)) or data_band_count != card.band_count
    ):
        return contract.format_bands(found)
    return ""


def build_job(request: JobRequest, card: ModelCard) -> Job:
    """The job for ``request``; raises :class:`JobError` when the bands cannot feed the model
    or the output folder cannot be made."""
    problem = band_problem(
        card, request.layer_name, request.band_count, request.data_band_count, request.bands
    )
    if problem:
        raise JobError(problem[0].upper() + problem[1:])
    folder = Path(request.folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(tr("Cannot create the output folder {}: {}").format(folder, exc)) from None
    stem = safe_name(request.layer_name)
    map_path = free_path(folder, f"{stem}_landcover", ".tif")
    conf_path = free_path(folder, f"{map_path.stem}_confidence", ".tif")
    options: dict[str, Any] = dict(bands=request.bands.replace(" ", ""), device=request.device)
    notes: list[str] = []
    if request.command == "adapt":
        model_out: Optional[Path] = free_path(folder, f"{stem}_adapted", ".lovecs")
        args = engine_args(
            model=request.model,
            target=request.raster,
            out=str(model_out),
            preset=request.preset,
            map=str(map_path),
            confidence=str(conf_path),
            **options,
        )
        if not card.has_source_term():
            args += ["--source-weight", "0"]
            notes.append(
                tr(
                    "The model's labelled source data is not on this computer and the "
                    "model file carries no source sample: adapting with pseudo-labels "
                    "and cross-sensor statistics only."
                )
            )
    elif request.command == "predict":
        model_out = None
        args = engine_args(
            model=request.model,
            raster=request.raster,
            out=str(map_path),
            confidence=str(conf_path),
            ray=request.ray.strip() or None,
            **options,
        )
    else:
        raise JobError(f"unknown command {request.command!r}")
    return Job(
        request.command,
        args,
        map_path,
        conf_path,
        model_out,
        map_layer_name(request.layer_name, ADAPTED if request.command == "adapt" else LAND_COVER),
        Path(request.model),
        notes,
        request.layer_name,
    )


def health_figures(health: dict[str, Any]) -> str:
    """The health check's numbers (the ``health`` entry of ``lovecs adapt``'s result)."""
    return (
        f"agreement with the source model on its confident pixels "
        f"{100 * health['agreement_confident']:.0f} %, class shares moved "
        f"{100 * health['class_shift']:.0f} %, mean confidence "
        f"{100 * health['confidence_before']:.0f} % -> "
        f"{100 * health['confidence_after']:.0f} %"
        + (
            f" (per class {100 * health['class_confidence_before']:.0f} % -> "
            f"{100 * health['class_confidence_after']:.0f} %)"
            if "class_confidence_after" in health  # cards of earlier releases lack it
            else ""
        )
    )
