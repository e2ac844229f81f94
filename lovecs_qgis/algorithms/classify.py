"""``lovecs:classify``: classify a raster layer with a land-cover model (``lovecs predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..engine import checks, rasterchecks
from ..i18n import tr
from ..paths import default_model_path
from ..runner import engine_args
from ..styling import ensure_qml, map_layer_name, style_output_on_load
from .base import (
    DEVICES,
    EngineAlgorithm,
    area_parameters,
    check_bands,
    checks_as_processing_errors,
    choice_parameter,
    output_path,
    read_model_card,
    tone_parameter,
)

#: How Processing users map a raster at its own pixels (named in the engine's messages).
NO_RESAMPLE_HINT = 'NO_RESAMPLE=true ("Map at the raster\'s own pixels")'


def model_parameter(
    name: str = "MODEL", description: str = "Land-cover model"
) -> QgsProcessingParameterFile:
    """A model file parameter, defaulting to the bundled model when the plugin has one."""
    default = default_model_path()
    return QgsProcessingParameterFile(
        name,
        description,
        QgsProcessingParameterFile.File,
        fileFilter="LoveCS model (*.lovecs)",
        defaultValue=str(default) if default else None,
    )


class ClassifyAlgorithm(EngineAlgorithm):
    COMMAND = "predict"
    INPUT, MODEL, BANDS, DEVICE = "INPUT", "MODEL", "BANDS", "DEVICE"
    TILE_SIZE, OVERLAP, OUTPUT, CONFIDENCE = "TILE_SIZE", "OVERLAP", "OUTPUT", "CONFIDENCE"
    NO_RESAMPLE, RAY_ADDRESS, TONE = "NO_RESAMPLE", "RAY_ADDRESS", "TONE"

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:
        return tr("Classify raster with a land-cover model")

    def shortHelpString(self) -> str:
        return tr(
            "Maps land cover on a raster layer with a LoveCS model file (.lovecs) by tiled "
            "inference with smooth blending between overlapping tiles. The result is a GeoTIFF "
            "of class codes (0 = nodata) on the input's grid, styled with the model's class "
            "names and colours (a .qml style is written beside it). Rasters whose pixel size "
            "differs from the model's are resampled on the fly.<br><br>"
            "<b>Bands</b>: the raster bands fed to the model, in the model's order, e.g. "
            "3,2,1 (empty: every band except alpha).<br>"
            "<b>Tile size</b> / <b>Overlap</b>: in pixels; 0 / empty take the model's "
            "defaults.<br><b>Confidence</b>: optional raster of the winning class's "
            "probability in percent.<br><br>The model runs in a separate Python process "
            "(PyTorch), so QGIS stays responsive and Cancel stops it.<br><br>"
            "<b>Area to map</b>: a part of the raster (empty: all of it). A layer that is not a "
            "file (XYZ, WMS/WMTS, a virtual raster) is first rendered over that area at the "
            "model's pixel size (advanced: <b>Pixel size</b>) into a GeoTIFF beside the map "
            "(NAME_render.tif), in the layer's CRS; an XYZ layer needs an area.<br><br>"
            "<b>Ray cluster address</b> (advanced): empty maps on this computer in one process. "
            "<i>local</i> starts a Ray cluster on this computer, <i>auto</i> joins the one "
            "started here with <tt>ray start</tt>, or give a cluster's address "
            "(host:port). The map is the same pixel for pixel; the raster must be readable "
            "at the same path on every node, and the engine's Python needs Ray."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")))
        self.addParameter(model_parameter(self.MODEL))
        for param in area_parameters():
            self.addParameter(param)
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Bands (e.g. 3,2,1; empty: all but alpha)"), optional=True
            )
        )
        self.addParameter(choice_parameter(self.DEVICE, tr("Device"), DEVICES))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.TILE_SIZE,
                tr("Tile size in pixels (0: the model's)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.OVERLAP,
                tr("Tile overlap in pixels (empty: the model's)"),
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=0,
            )
        )
        no_resample = QgsProcessingParameterBoolean(
            self.NO_RESAMPLE,
            tr(
                "Map at the raster's own pixels (no resampling to the model's "
                "pixel size; needed for a raster without georeference)"
            ),
            defaultValue=False,
        )
        no_resample.setFlags(no_resample.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(no_resample)
        ray_address = QgsProcessingParameterString(
            self.RAY_ADDRESS,
            tr("Ray cluster address (empty: this computer, no Ray; local; auto; host:port)"),
            optional=True,
        )
        ray_address.setFlags(ray_address.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(ray_address)
        self.addParameter(tone_parameter(self.TONE))
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Land-cover map"))
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, tr("Confidence (percent)"), optional=True, createByDefault=False
            )
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        layer = self.input_layer(parameters, self.INPUT, context)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        card = read_model_card(model)
        destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        out = output_path(destination)
        source = self.map_input(parameters, context, layer, card, Path(out).parent)
        raster = source.raster
        bands = self.parameterAsString(parameters, self.BANDS, context).strip()
        bands = check_bands(card, source.layer, bands, feedback)
        confidence = output_path(
            self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or ""
        )
        no_resample = self.parameterAsBoolean(parameters, self.NO_RESAMPLE, context)
        with checks_as_processing_errors():
            checks.check_predict_outputs(raster, out, confidence or None)
            rasterchecks.check_georeference(
                card.domain_gsd(card.default_domain),
                raster,
                resample=not no_resample,
                hint=NO_RESAMPLE_HINT,
            )
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        overlap = (
            self.parameterAsInt(parameters, self.OVERLAP, context)
            if parameters.get(self.OVERLAP) not in (None, "")
            else None
        )
        device = self.choice(parameters, self.DEVICE, context)
        ray_address = self.parameterAsString(parameters, self.RAY_ADDRESS, context).strip()
        args = engine_args(
            model=model,
            raster=raster,
            out=out,
            bands=bands or None,
            tile=tile or None,
            overlap=overlap,
            device=device,
            confidence=confidence or None,
            no_resample=no_resample,
            ray=ray_address or None,
            tone=self.parameterAsString(parameters, self.TONE, context).strip() or None,
        )
        args += source.extent_args
        result = self.run_engine(
            args, feedback, outputs=[out] + ([confidence] if confidence else [])
        )
        ensure_qml(out, card.classes)
        style_output_on_load(context, destination, card.classes, map_layer_name(layer.name()))
        feedback.pushInfo(
            tr("{} tiles ({} without data) on {}").format(
                result.get("tiles_total"), result.get("tiles_skipped"), result.get("device")
            )
        )
        outputs = {self.OUTPUT: out}
        if confidence:
            outputs[self.CONFIDENCE] = confidence
        return outputs
