"""``lovecs:refine``: a model refined on corrections (points, lines or polygons with a class
field; ``lovecs refine``), saved as a model file, and the raster mapped with it."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ..i18n import tr
from ..runner import engine_args
from ..styling import ensure_qml, map_layer_name, style_output_on_load
from .base import (
    DEVICES,
    EngineAlgorithm,
    check_bands,
    choice_parameter,
    class_field_parameter,
    output_path,
    raster_path,
    read_model_card,
    vector_source,
)
from .classify import model_parameter


class RefineAlgorithm(EngineAlgorithm):
    COMMAND = "refine"
    INPUT, MODEL, POINTS, CLASS_FIELD = "INPUT", "MODEL", "POINTS", "CLASS_FIELD"
    BANDS, DEVICE, OUTPUT_MODEL, OUTPUT = "BANDS", "DEVICE", "OUTPUT_MODEL", "OUTPUT"

    def name(self) -> str:
        return "refine"

    def displayName(self) -> str:
        return tr("Refine with corrections")

    def shortHelpString(self) -> str:
        return tr(
            "Refits a LoveCS model's last layer to corrections: points, lines or polygons in "
            "any CRS whose integer field holds the model's class codes (ROI layers of SCP or "
            "dzetsaka, field points, or the dock's corrections). The source model's confident "
            "pixels and the labelled sample in the model file keep the classes you did not "
            "correct. The log gives the accuracy of the source and the refined model on "
            "corrections left out of the fit (cross-validation). Writes the refined model "
            "(.lovecs, its card records the corrections) and the raster's map made with it."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")))
        self.addParameter(model_parameter(self.MODEL))
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.POINTS,
                tr("Corrections (points, lines or polygons)"),
                [QgsProcessing.TypeVectorAnyGeometry],
            )
        )
        self.addParameter(class_field_parameter(self.CLASS_FIELD, self.POINTS))
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS, tr("Bands (e.g. 3,2,1; empty: all but alpha)"), optional=True
            )
        )
        self.addParameter(choice_parameter(self.DEVICE, tr("Device"), DEVICES))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_MODEL, tr("Refined model"), "LoveCS model (*.lovecs)"
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, tr("Land-cover map"))
        )

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        layer = self.input_layer(parameters, self.INPUT, context)
        raster = raster_path(layer)
        model = self.parameterAsFile(parameters, self.MODEL, context)
        card = read_model_card(model)
        bands = check_bands(
            card, layer, self.parameterAsString(parameters, self.BANDS, context).strip(), feedback
        )
        points, layer_name = vector_source(
            self.parameterAsVectorLayer(parameters, self.POINTS, context), context, "corrections"
        )
        refined = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context))
        destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        out = output_path(destination)
        args = engine_args(
            model=model,
            raster=raster,
            points=points,
            layer=layer_name,
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
            out=refined,
            map=out,
            bands=bands or None,
            device=self.choice(parameters, self.DEVICE, context),
        )
        result = self.run_engine(args, feedback, outputs=[refined, out])
        ensure_qml(out, card.classes)
        style_output_on_load(context, destination, card.classes, map_layer_name(layer.name()))
        for problem in result.get("problems") or []:
            feedback.pushWarning(str(problem))
        feedback.pushInfo(json.dumps({"accuracy": result.get("accuracy")}))
        return {self.OUTPUT_MODEL: refined, self.OUTPUT: out}
