"""What every LoveCS Processing algorithm shares: running an engine command in a child process
with progress and cancel through the feedback object, and turning layers into file paths."""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRaster,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..engine import bands as engine_bands
from ..engine import card as model_card
from ..engine import checks, contract
from ..environment import EngineNotFound, find_engine_python
from ..events import EngineEvent, ProgressMap, Status
from ..i18n import tr
from ..layer_render import MapInput, RenderError, map_input
from ..paths import icon_path
from ..runner import STAGES, EngineProcess

ModelCard = model_card.ModelCard
DEVICES = list(contract.DEVICES)
PROGRESS_TEXT_INTERVAL_S = 1.0
#: An engine log line at WARNING level: ``WARNING lovecs_core.cli.predict: text``.
_WARNING_LINE = re.compile(r"^WARNING [\w.]+: (.*)$")


@contextlib.contextmanager
def quiet_layer_loading() -> Iterator[None]:
    """While QGIS opens an input raster for us: no ``.aux.xml`` statistics file written beside
    the user's file (GDAL's PAM off in this thread; QGIS computes statistics for the default
    renderer on load, 1.5 MB of histogram for a float64 scene), and no GDAL error lines such as
    the statistics of a raster holding NaN or infinity, which look like a failure in
    ``qgis_process`` (the layer's validity is checked, and the engine reads the file itself)."""
    from osgeo import gdal

    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)


_GDAL_HANDLER: list[Any] = []  # keeps the Python error handler alive
#: GDAL complaints QGIS's statistics of a raster holding NaN or infinity cause, harmless for us.
_STATISTICS_NOISE = ("should be finite", "no valid pixels found in sampling")


def quiet_qgis_process_inputs(args: Optional[Sequence[str]] = None) -> bool:
    """For ``qgis_process run lovecs:...`` only: ``qgis_process`` opens the input rasters
    itself, before any algorithm code runs, and QGIS computes statistics for the default
    renderer, which GDAL writes as an ``.aux.xml`` beside the user's file (1.5 MB for a float64
    scene) and, for a raster holding NaN or infinity, reports as an ``ERROR 5`` line that
    reads like a failure. In such a process (it runs one algorithm of ours, and the engine
    writes every output in a process of its own) GDAL's sidecar files are turned off and these
    statistics complaints dropped; other GDAL errors are printed as GDAL prints them. Called
    when the provider's algorithms are imported; returns whether it applied."""
    from osgeo import gdal
    from qgis.PyQt.QtCore import QCoreApplication

    args = list(QCoreApplication.arguments() if args is None else args)
    if (
        _GDAL_HANDLER
        or not args
        or not Path(args[0]).name.startswith("qgis_process")
        or not any(a.startswith("lovecs:") for a in args[1:])
    ):
        return False
    import sys

    gdal.SetConfigOption("GDAL_PAM_ENABLED", "NO")

    def handler(err_class: int, err_no: int, message: str) -> None:
        if any(text in message for text in _STATISTICS_NOISE):
            return
        if err_class >= gdal.CE_Failure:
            print(f"ERROR {err_no}: {message}", file=sys.stderr)
        elif err_class == gdal.CE_Warning:
            print(f"Warning {err_no}: {message}", file=sys.stderr)

    _GDAL_HANDLER.append(handler)
    gdal.PushErrorHandler(handler)
    return True


def choice_parameter(
    name: str, description: str, options: Sequence[str], default: Optional[str] = None
) -> QgsProcessingParameterEnum:
    """A choice whose values are the option strings themselves (``DEVICE=cuda`` in scripts and
    ``qgis_process``, robust to reordering), not indices."""
    return QgsProcessingParameterEnum(
        name,
        description,
        options=list(options),
        defaultValue=default or options[0],
        usesStaticStrings=True,
    )


def tone_parameter(name: str = "TONE") -> QgsProcessingParameterString:
    """The sensor alignment's tone step (advanced): ``auto`` (the model picks a gamma that
    brightens mid-tones of a scene of another bit depth), ``off`` or a gamma."""
    param = QgsProcessingParameterString(
        name,
        tr("Tone step for a scene of another bit depth (auto, off or a gamma such as 0.6)"),
        defaultValue="auto",
        optional=True,
    )
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


#: The area to map and, for a layer that is not a file, the pixel size it is rendered at.
EXTENT, GSD = "EXTENT", "GSD"


def area_parameters() -> list[QgsProcessingParameterDefinition]:
    """The optional area to map (any CRS; empty: the whole layer) and the ground sample distance
    a layer that is not a GDAL file (XYZ, WMS/WMTS, a virtual raster) is rendered at (advanced;
    0: the model's)."""
    extent = QgsProcessingParameterExtent(
        EXTENT, tr("Area to map (empty: the whole layer)"), optional=True
    )
    gsd = QgsProcessingParameterNumber(
        GSD,
        tr("Pixel size in metres to render a layer that is not a file (XYZ, WMS; 0: the model's)"),
        QgsProcessingParameterNumber.Double,
        defaultValue=0.0,
        minValue=0.0,
        optional=True,
    )
    gsd.setFlags(gsd.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return [extent, gsd]


def raster_path(layer: Optional[QgsRasterLayer], what: str = "input") -> str:
    """The GDAL data source of a raster layer (the engine opens it with GDAL)."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(tr("the {} raster layer is missing or invalid").format(what))
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            tr(
                "the {} layer '{}' is not a GDAL raster (provider '{}'); save it as a GeoTIFF first"
            ).format(what, layer.name(), layer.providerType())
        )
    return layer.source()


def parse_band_list(text: Optional[str]) -> Optional[list[int]]:
    """``"3,2,1"`` -> ``[3, 2, 1]``; empty -> None (the engine then uses every non-alpha band)."""
    try:
        return contract.parse_bands(text)
    except contract.BandListError as exc:
        raise QgsProcessingException(str(exc)) from None


def data_band_count(layer: QgsRasterLayer) -> int:
    """The layer's bands that are not alpha (what the engine uses when no bands are given)."""
    provider = layer.dataProvider()
    return sum(
        1
        for b in range(1, layer.bandCount() + 1)
        if provider.colorInterpretation(b) != QgsRaster.AlphaBand
    )


def check_bands(
    card: ModelCard,
    layer: QgsRasterLayer,
    bands_text: Optional[str],
    feedback: Optional[QgsProcessingFeedback] = None,
) -> str:
    """Fail early, in QGIS, when the bands fed to the model cannot match its card. Returns the
    band list to give the engine: when none is given and the layer has more bands than the
    model whose names do not help, the first ones (``feedback`` says so)."""
    count = layer.bandCount()
    bands = parse_band_list(bands_text)
    if bands is None and layer.providerType() == "gdal":
        try:
            from osgeo import gdal

            with quiet_layer_loading():
                ds = gdal.Open(layer.source())
            chosen_bands, note = engine_bands.choose_bands(card.band_names, ds)
        except Exception:  # noqa: BLE001 - not readable here: the count check below decides
            chosen_bands, note = None, ""
        if chosen_bands:
            if note and feedback is not None:
                feedback.pushWarning(note)
            return contract.format_bands(chosen_bands)
    problem = contract.band_list_problem(
        card.band_names, bands_text, count, data_band_count(layer), f"'{layer.name()}'", "'Bands'"
    )
    if problem:
        raise QgsProcessingException(problem)
    return contract.format_bands(bands)


def read_model_card(path: str) -> ModelCard:
    if not path:
        raise QgsProcessingException(tr("no model file given"))
    try:
        return model_card.read_card(path)
    except model_card.ModelFileError as exc:
        raise QgsProcessingException(str(exc)) from None


@contextlib.contextmanager
def checks_as_processing_errors() -> Iterator[None]:
    """The engine's early checks (``lovecs_core.checks``) raise CheckError; Processing wants a
    QgsProcessingException with the same message."""
    try:
        yield
    except checks.CheckError as exc:
        raise QgsProcessingException(str(exc)) from None


class EngineAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses build the engine arguments and call :meth:`run_engine`."""

    COMMAND = ""

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def createInstance(self) -> "EngineAlgorithm":
        return type(self)()

    def checkParameterValues(
        self,
        parameters: dict[str, Any],  # noqa: N802
        context: QgsProcessingContext,
    ) -> tuple[bool, str]:
        """QGIS's check, with a message naming the parameter and the reason for file parameters
        (QGIS itself only says "Incorrect parameter value for MODEL"); input rasters are opened
        without statistics files or GDAL noise (see :func:`quiet_layer_loading`)."""
        for definition in self.parameterDefinitions():
            if not isinstance(definition, QgsProcessingParameterFile):
                continue
            value = parameters.get(definition.name())
            if not isinstance(value, str) or not value:
                continue
            label = f"{definition.name()} ({definition.description()})"
            if definition.behavior() == QgsProcessingParameterFile.Folder:
                if not Path(value).is_dir():
                    return False, f"{label}: folder not found: {value}"
                continue
            suffixes = (
                [definition.extension()]
                if definition.extension()
                else re.findall(r"\*(\.\w+)", definition.fileFilter())
            )
            suffixes = [x if x.startswith(".") else "." + x for x in suffixes]
            if suffixes and not value.lower().endswith(tuple(x.lower() for x in suffixes)):
                why = (
                    " (LoveCS model files end in .lovecs; rename it if it is one)"
                    if ".lovecs" in suffixes
                    else ""
                )
                return False, (f"{label}: '{value}' is not a {' or '.join(suffixes)} file{why}")
            if not Path(value).is_file():
                return False, f"{label}: file not found: {value}"
        with quiet_layer_loading():
            return super().checkParameterValues(parameters, context)

    def input_layer(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext
    ) -> Optional[QgsRasterLayer]:
        """``parameterAsRasterLayer`` without statistics files or GDAL noise."""
        with quiet_layer_loading():
            return self.parameterAsRasterLayer(parameters, name, context)

    def map_input(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        layer: Optional[QgsRasterLayer],
        card: ModelCard,
        folder: Path,
    ) -> MapInput:
        """The raster the engine maps for ``layer`` over the :data:`EXTENT` (see
        :func:`~lovecs_qgis.layer_render.map_input`): a layer that is not a file is rendered at
        the :data:`GSD` (default: the model's) into ``folder``."""
        if layer is None or not layer.isValid():
            raise QgsProcessingException(tr("the input raster layer is missing or invalid"))
        extent = self.parameterAsExtent(parameters, EXTENT, context, layer.crs())
        gsd = self.parameterAsDouble(parameters, GSD, context)
        try:
            return map_input(
                layer,
                None if extent.isNull() or extent.isEmpty() else extent,
                gsd or card.domain_gsd(card.default_domain),
                folder,
                context.transformContext(),
            )
        except RenderError as exc:
            raise QgsProcessingException(str(exc)) from None

    def choice(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The chosen string of a :func:`choice_parameter`."""
        return self.parameterAsEnumString(parameters, name, context)

    def run_engine(
        self, args: Sequence[str], feedback: QgsProcessingFeedback, outputs: Iterable[str] = ()
    ) -> dict[str, Any]:
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
            if event.type == contract.PROGRESS:
                percent = progress.update(event)
                if percent is not None:
                    feedback.setProgress(percent)
                now = time.monotonic()
                if event.stage != last_text[0] or now - last_text[1] >= PROGRESS_TEXT_INTERVAL_S:
                    feedback.setProgressText(event.text)
                    last_text[:] = [event.stage, now]
            elif event.type == contract.LOG and event.message.strip():
                warning = _WARNING_LINE.match(event.message)
                if warning:
                    feedback.pushWarning(warning.group(1))
                else:
                    feedback.pushConsoleInfo(event.message)

        outcome = process.run(on_event, feedback.isCanceled)
        if outcome.status is Status.CANCELLED:
            raise QgsProcessingException(tr("LoveCS: cancelled; no output was written"))
        if outcome.status is Status.FAILED:
            raise QgsProcessingException(tr("LoveCS {}: {}").format(self.COMMAND, outcome.error))
        feedback.pushInfo(
            tr("LoveCS {} finished in {:.1f} s").format(self.COMMAND, outcome.seconds)
        )
        return outcome.result


def vector_source(
    layer: Optional[QgsVectorLayer], context: QgsProcessingContext, what: str = "reference"
) -> tuple[str, Optional[str]]:
    """``(file, layer name)`` the engine reads with OGR: the layer's own file, or, for a memory
    layer, a filtered one or any other provider, a temporary GeoPackage of its features."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException(tr("the {} layer is missing or invalid").format(what))
    if layer.providerType() == "ogr" and not layer.subsetString():
        parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        path = parts.get("path") or ""
        if Path(path).is_file():
            return path, parts.get("layerName") or None
    path = QgsProcessingUtils.generateTempFilename(f"{what}_points.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", what
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, path, context.transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(
            tr("cannot write the {} layer to {}: {}").format(what, path, message)
        )
    return path, what


def output_path(value: str) -> str:
    """An absolute output path (the engine runs in another working directory)."""
    return str(Path(value).absolute()) if value else ""


def class_field_parameter(
    name: str, parent: str, description: Optional[str] = None, optional: bool = False
) -> QgsProcessingParameterField:
    """The numeric field of a vector layer parameter ``parent`` that holds class codes
    (``description``: translated already)."""
    return QgsProcessingParameterField(
        name, description or tr("Class field (integer class codes)"),
        parentLayerParameterName=parent,
        type=QgsProcessingParameterField.Numeric, optional=optional,
    )  # fmt: skip


quiet_qgis_process_inputs()
