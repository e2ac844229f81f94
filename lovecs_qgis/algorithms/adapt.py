"""``lovecs:adapt``: adapt a model to a scene from another sensor, without labels, and map it
(``lovecs adapt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ..engine import checks, contract, settingchecks
from ..i18n import tr
from ..jobs import health_figures
from ..runner import engine_args
from ..styling import ensure_qml, map_layer_name, style_output_on_load
from ..wording import health_reasons
from .base import (
    DEVICES,
    EngineAlgorithm,
    area_parameters,
    check_bands,
    checks_as_processing_errors,
    choice_parameter,
    class_field_parameter,
    output_path,
    raster_path,
    read_model_card,
    tone_parameter,
    vector_source,
)
from .classify import model_parameter

METHODS = list(contract.METHODS)
#: The dock and Processing offer the quickest preset first.
PRESETS = list(contract.ADAPT_PRESETS)


class AdaptAlgorithm(EngineAlgorithm):
    COMMAND = "adapt"
    INPUT, MODEL, METHOD, PRESET, BANDS, DEVICE = (
        "INPUT",
        "MODEL",
        "METHOD",
        "PRESET",
        "BANDS",
        "DEVICE",
    )
    SOURCE_IMAGES, SOURCE_LABELS, ITERATIONS, SEED = (
        "SOURCE_IMAGES",
        "SOURCE_LABELS",
        "ITERATIONS",
        "SEED",
    )
    BATCH_SIZE, CROP, KEEP_ADAPTED = "BATCH_SIZE", "CROP", "KEEP_ADAPTED"
    OUTPUT_MODEL, OUTPUT, CONFIDENCE = "OUTPUT_MODEL", "OUTPUT", "CONFIDENCE"
    VERDICT, REJECTED_MODEL, TONE = "VERDICT", "REJECTED_MODEL", "TONE"
    POINTS, CLASS_FIELD = "POINTS", "CLASS_FIELD"

    def name(self) -> str:
        return "adapt"

    def displayName(self) -> str:
        return tr("Adapt a land-cover model to this image")

    def shortHelpString(self) -> str:
        return tr(
            "Adapts a model trained on one sensor to a scene from another sensor without new "
            "labels, then maps the scene with the adapted model.<br><br>"
            "<b>Method</b>: <i>lovecs</i> (cross-sensor normalisation + multi-scale, "
            "class-balanced self-training; Wang et al., RSE 2022), <i>cbst</i> "
            "(self-training without either), <i>adabn</i> (the scene's statistics only, no "
            "training), <i>source-only</i> (no adaptation).<br>"
            "<b>Preset</b>: <i>fast</i> takes minutes on a CPU; <i>standard</i> and "
            "<i>paper</i> (the paper's schedule) want a GPU.<br>"
            "<b>Source images/labels</b>: the labelled data the model was trained on "
            "(default: the files recorded in the model).<br>"
            "<b>Area to map</b>: adapt to and map a part of the scene (empty: all of it); a "
            "layer that is not a file (XYZ, WMS/WMTS) is rendered there first, at the model's "
            "pixel size, into NAME_render.tif beside the map.<br><br>"
            "Every adaptation ends with a <b>health check</b> (no labels needed) comparing "
            "the adapted map with the source model's: <i>improved</i>, <i>uncertain</i> or "
            "<i>likely harmful</i>. Unless it is improved, the model file and the map are "
            "those of the source model aligned to the scene (the safe result), and the "
            "adapted model is kept beside it as <i>NAME.rejected.lovecs</i>; tick <i>Keep "
            "the adapted model whatever the health check says</i> to override.<br><br>"
            "<b>Corrections</b> (optional: points, lines or polygons with an integer class "
            "field, any CRS) judge instead of the label-free check: both models' heads are "
            "refitted to them and the one that gets more held-out corrections right is "
            "delivered (from 10 corrections). Clicks on the errors of one model's map favour "
            "the other; a random reference sample judges fairly.<br><br>"
            "Outputs: the adapted model file (reuse it on other scenes of the same sensor), "
            "the styled land-cover map, and the verdict."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Scene to adapt to")))
        self.addParameter(model_parameter(self.MODEL, tr("Source model")))
        for param in area_parameters():
            self.addParameter(param)
        self.addParameter(choice_parameter(self.METHOD, tr("Method"), METHODS))
        self.addParameter(
            choice_parameter(self.PRESET, tr("Preset"), PRESETS, contract.DEFAULT_ADAPT_PRESET)
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Bands (e.g. 3,2,1; empty: all but alpha)"), optional=True
            )
        )
        self.addParameter(choice_parameter(self.DEVICE, tr("Device"), DEVICES))
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.POINTS,
                tr("Corrections (points, lines or polygons; optional)"),
                [QgsProcessing.TypeVectorAnyGeometry],
                optional=True,
            )
        )
        self.addParameter(
            class_field_parameter(
                self.CLASS_FIELD,
                self.POINTS,
                tr("Class field of the corrections (integer class codes)"),
                optional=True,
            )
        )
        advanced = [
            QgsProcessingParameterMultipleLayers(
                self.SOURCE_IMAGES,
                tr("Source images (default: those recorded in the model)"),
                QgsProcessing.TypeRaster,
                optional=True,
            ),
            QgsProcessingParameterMultipleLayers(
                self.SOURCE_LABELS,
                tr("Source label rasters (same names as the images)"),
                QgsProcessing.TypeRaster,
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.ITERATIONS,
                tr("Self-training iterations (0: the preset's)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE,
                tr("Windows per domain per iteration (0: the preset's)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.CROP,
                tr("Training window in pixels (0: the preset's)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.SEED, tr("Random seed"), QgsProcessingParameterNumber.Integer, defaultValue=0
            ),
            QgsProcessingParameterBoolean(
                self.KEEP_ADAPTED,
                tr("Keep the adapted model whatever the health check says"),
                defaultValue=False,
            ),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(tone_parameter(self.TONE))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_MODEL, tr("Adapted model"), "LoveCS model (*.lovecs)"
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Land-cover map"))
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, tr("Confidence (percent)"), optional=True, createByDefault=False
            )
        )
        self.addOutput(QgsProcessingOutputString(self.VERDICT, tr("Health check verdict")))
        self.addOutput(
            QgsProcessingOutputString(
                self.REJECTED_MODEL, tr("Adapted model kept aside (if not improved)")
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
        scene = source.raster
        bands = self.parameterAsString(parameters, self.BANDS, context).strip()
        bands = check_bands(card, source.layer, bands, feedback)
        images = [
            raster_path(lyr, "source image")
            for lyr in self.parameterAsLayerList(parameters, self.SOURCE_IMAGES, context)
        ]
        labels = [
            raster_path(lyr, "source label")
            for lyr in self.parameterAsLayerList(parameters, self.SOURCE_LABELS, context)
        ]
        if bool(images) != bool(labels):
            raise QgsProcessingException(
                tr("give both source images and source labels, or neither")
            )
        adapted = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context))
        confidence = output_path(
            self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or ""
        )
        with checks_as_processing_errors():  # before minutes of training, not after
            settingchecks.check_adapt_settings(
                iterations=self.parameterAsInt(parameters, self.ITERATIONS, context) or None,
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
                crop=self.parameterAsInt(parameters, self.CROP, context) or None,
            )
            checks.check_adapt_outputs(model, scene, adapted, out, confidence or None)
        vector = self.parameterAsVectorLayer(parameters, self.POINTS, context)
        points, points_layer = (
            vector_source(vector, context, "corrections") if vector else (None, None)
        )
        args = engine_args(
            model=model,
            target=scene,
            out=adapted,
            method=self.choice(parameters, self.METHOD, context),
            preset=self.choice(parameters, self.PRESET, context),
            bands=bands or None,
            map=out,
            confidence=confidence or None,
            source_images=images,
            source_labels=labels,
            device=self.choice(parameters, self.DEVICE, context),
            iterations=self.parameterAsInt(parameters, self.ITERATIONS, context) or None,
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context) or None,
            crop=self.parameterAsInt(parameters, self.CROP, context) or None,
            seed=self.parameterAsInt(parameters, self.SEED, context),
            keep_adapted=self.parameterAsBool(parameters, self.KEEP_ADAPTED, context),
            tone=self.parameterAsString(parameters, self.TONE, context).strip() or None,
            points=points,
            layer=points_layer,
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
        )
        args += source.extent_args
        result = (
            self.run_engine(
                args, feedback, outputs=[adapted, out] + ([confidence] if confidence else [])
            )
            or {}
        )
        verdict = report_health(result, feedback)
        ensure_qml(out, card.classes)
        style_output_on_load(context, destination, card.classes, map_layer_name(layer.name()))
        outputs = {
            self.OUTPUT_MODEL: adapted,
            self.OUTPUT: out,
            self.VERDICT: verdict,
            self.REJECTED_MODEL: result.get("rejected") or "",
        }
        if confidence:
            outputs[self.CONFIDENCE] = confidence
        return outputs


def report_health(result: dict[str, Any], feedback: QgsProcessingFeedback) -> str:
    """Tell the user the sensor alignment and the health check's verdict; returns the verdict."""
    adaptation = result.get("adaptation") or {}
    alignment = (adaptation.get("alignment") or {}).get("summary")
    if alignment:
        feedback.pushInfo(tr("Sensor alignment: {}").format(alignment))
    health = result.get("health") or {}
    verdict = str(health.get("verdict") or "")
    if not health:
        return verdict
    figures = health_figures(health)
    reasons = health_reasons(health)
    if result.get("rejected"):
        reasons = reasons or contract.VERDICT_MEANING.get(verdict, "")
        note = contract.safe_result_note(verdict, result["rejected"])
        feedback.pushWarning(
            tr("Health check: {} ({}; {}). {}; set KEEP_ADAPTED to use it anyway.").format(
                verdict, figures, reasons, f"{note[0].upper()}{note[1:]}"
            )
        )
    else:
        why = f"; {reasons}" if reasons else ""
        feedback.pushInfo(tr("Health check: {} ({}){}.").format(verdict, figures, why))
    return verdict
