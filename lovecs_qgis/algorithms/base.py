"""What every LoveCS Processing algorithm shares: running an engine command in a child process
with progress and cancel through the feedback object, and turning layers into file paths."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingParameterEnum, QgsRaster,
                       QgsRasterLayer)
from qgis.PyQt.QtGui import QIcon

from lovecs_core.card import ModelCard

from ..environment import EngineNotFound, find_engine_python
from ..paths import icon_path
from ..runner import STAGES, EngineEvent, EngineProcess, ProgressMap, Status

DEVICES = ["auto", "cpu", "cuda"]
PROGRESS_TEXT_INTERVAL_S = 1.0


def engine_args(**options: Any) -> list[str]:
    """``--flag value`` pairs for options that are set (None/''/False left out; True: flag only;
    lists: the flag then every item). Keys use ``_`` for ``-``."""
    args: list[str] = []
    for key, value in options.items():
        if value is None or value is False or value == "" or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def choice_parameter(name: str, description: str, options: Sequence[str],
                     default: Optional[str] = None) -> QgsProcessingParameterEnum:
    """A choice whose values are the option strings themselves (``DEVICE=cuda`` in scripts and
    ``qgis_process``, robust to reordering), not indices."""
    return QgsProcessingParameterEnum(name, description, options=list(options),
                                      defaultValue=default or options[0], usesStaticStrings=True)


def raster_path(layer: Optional[QgsRasterLayer], what: str = "input") -> str:
    """The GDAL data source of a raster layer (the engine opens it with GDAL)."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"the {what} raster layer is missing or invalid")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"the {what} layer '{layer.name()}' is not a GDAL raster (provider "
            f"'{layer.providerType()}'); save it as a GeoTIFF first")
    return layer.source()


def parse_band_list(text: Optional[str]) -> Optional[list[int]]:
    """``"3,2,1"`` -> ``[3, 2, 1]``; empty -> None (the engine then uses every non-alpha band)."""
    text = (text or "").replace(" ", "")
    if not text:
        return None
    try:
        bands = [int(b) for b in text.split(",") if b]
    except ValueError:
        raise QgsProcessingException(f"bands must be comma-separated band numbers like 3,2,1, "
                                     f"not {text!r}") from None
    if not bands or min(bands) < 1:
        raise QgsProcessingException(f"band numbers start at 1: {text!r}")
    return bands


def check_bands(card: ModelCard, layer: QgsRasterLayer, bands_text: Optional[str]) -> None:
    """Fail early, in QGIS, when the bands fed to the model cannot match its card."""
    count = layer.bandCount()
    bands = parse_band_list(bands_text)
    if bands is not None:
        too_high = [b for b in bands if b > count]
        if too_high:
            raise QgsProcessingException(f"'{layer.name()}' has {count} band(s); band(s) "
                                         f"{too_high} do not exist")
        chosen = len(bands)
    else:
        provider = layer.dataProvider()
        chosen = sum(1 for b in range(1, count + 1)
                     if provider.colorInterpretation(b) != QgsRaster.AlphaBand)
    if chosen != card.band_count:
        example = ",".join(str(b) for b in range(1, card.band_count + 1))
        raise QgsProcessingException(
            f"the model '{card.name}' expects {card.band_count} band(s) "
            f"({', '.join(card.band_names)}) but {chosen} band(s) of '{layer.name()}' would be "
            f"used; choose {card.band_count} bands in 'Bands', e.g. {example}")


def read_model_card(path: str) -> ModelCard:
    from lovecs_core.card import ModelFileError, read_card

    if not path:
        raise QgsProcessingException("no model file given")
    try:
        return read_card(path)
    except ModelFileError as exc:
        raise QgsProcessingException(str(exc)) from None


class EngineAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses build the engine arguments and call :meth:`run_engine`."""

    COMMAND = ""

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def createInstance(self) -> "EngineAlgorithm":
        return type(self)()

    def choice(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The chosen string of a :func:`choice_parameter`."""
        return self.parameterAsEnumString(parameters, name, context)

    def run_engine(self, args: Sequence[str], feedback: QgsProcessingFeedback,
                   outputs: Iterable[str] = ()) -> dict[str, Any]:
        """Run ``lovecs <COMMAND> args`` in a child process until it ends; progress and log go to
        ``feedback``, its cancel flag stops the child. Returns the engine's result payload."""
        try:
            python = find_engine_python()
        except EngineNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        process = EngineProcess(self.COMMAND, args, python=python, outputs=outputs)
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in process.argv))
        progress = ProgressMap(STAGES.get(self.COMMAND, {}))
        last_text: list[Any] = ["", 0.0]

        def on_event(event: EngineEvent) -> None:
            if event.type == "progress":
                percent = progress.update(event)
                if percent is not None:
                    feedback.setProgress(percent)
                now = time.monotonic()
                if event.stage != last_text[0] or now - last_text[1] >= PROGRESS_TEXT_INTERVAL_S:
                    feedback.setProgressText(event.text)
                    last_text[:] = [event.stage, now]
            elif event.type == "log" and event.message.strip():
                feedback.pushConsoleInfo(event.message)

        outcome = process.run(on_event, feedback.isCanceled)
        if outcome.status is Status.CANCELLED:
            raise QgsProcessingException("LoveCS: cancelled; no output was written")
        if outcome.status is Status.FAILED:
            raise QgsProcessingException(f"LoveCS {self.COMMAND}: {outcome.error}")
        feedback.pushInfo(f"LoveCS {self.COMMAND} finished in {outcome.seconds:.1f} s")
        return outcome.result


def output_path(value: str) -> str:
    """An absolute output path (the engine runs in another working directory)."""
    return str(Path(value).absolute()) if value else ""
