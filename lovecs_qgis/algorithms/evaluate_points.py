"""``lovecs:evaluatepoints``: accuracy of a land-cover map at reference points
(``lovecs evaluate --points``): error matrix, accuracies with confidence intervals and the
area-adjusted estimates of Olofsson et al. (2014), as JSON and an HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ..engine import checks
from ..engine import report as accuracy_report
from ..i18n import tr
from ..runner import engine_args
from .base import (
    EngineAlgorithm,
    checks_as_processing_errors,
    class_field_parameter,
    output_path,
    raster_path,
    vector_source,
)
from .evaluate import write_report


class EvaluatePointsAlgorithm(EngineAlgorithm):
    COMMAND = "evaluate"
    PREDICTION, POINTS, CLASS_FIELD, MODEL = "PREDICTION", "POINTS", "CLASS_FIELD", "MODEL"
    OUTPUT_JSON, OUTPUT_HTML = "OUTPUT_JSON", "OUTPUT_HTML"
    OA, OA_AREA, SAMPLE_SIZE = "OA", "OA_AREA_ADJUSTED", "SAMPLE_SIZE"

    def name(self) -> str:
        return "evaluatepoints"

    def displayName(self) -> str:
        return tr("Evaluate with reference points")

    def shortHelpString(self) -> str:
        return tr(
            "Compares a map of class codes with reference points (or polygons, whose pixels "
            "each count) in any CRS; their integer field holds the true class codes. Gives "
            "the error matrix, overall, producer's and user's accuracy with 95 % confidence "
            "intervals, and the area-adjusted accuracy and class areas of Olofsson et al. "
            "(2014) for a simple random sample or one stratified by map class. Features "
            "outside the map, with unknown codes or on unmapped pixels are named in the log "
            "and left out. Writes the scores as JSON and an HTML report."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, tr("Land-cover map")))
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.POINTS,
                tr("Reference points or polygons"),
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
            )
        )
        self.addParameter(class_field_parameter(self.CLASS_FIELD, self.POINTS))
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                tr("Classes from this model (default: the codes found, names from the map)"),
                QgsProcessingParameterFile.File,
                fileFilter="LoveCS model (*.lovecs)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_JSON, tr("Scores as JSON"), "JSON (*.json)"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, tr("Accuracy report"), "HTML files (*.html)"
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.OA, tr("Overall accuracy (sample)")))
        self.addOutput(QgsProcessingOutputNumber(self.OA_AREA, tr("Area-adjusted accuracy")))
        self.addOutput(QgsProcessingOutputNumber(self.SAMPLE_SIZE, tr("Sample size")))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        prediction = raster_path(self.input_layer(parameters, self.PREDICTION, context), "map")
        points, layer_name = vector_source(
            self.parameterAsVectorLayer(parameters, self.POINTS, context), context
        )
        scores_json = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context))
        report = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context))
        model = self.parameterAsFile(parameters, self.MODEL, context)
        with checks_as_processing_errors():
            checks.check_outputs(
                [("scores (OUTPUT_JSON)", scores_json), ("accuracy report (OUTPUT_HTML)", report)],
                [("map (PREDICTION)", prediction), ("reference points", points), ("model", model)],
            )
        Path(scores_json).parent.mkdir(parents=True, exist_ok=True)
        args = engine_args(
            pred=prediction,
            points=points,
            layer=layer_name,
            class_field=self.parameterAsString(parameters, self.CLASS_FIELD, context) or None,
            model=model,
            json=scores_json,
        )
        result = self.run_engine(args, feedback, outputs=[scores_json])
        scores = result.get("scores") or {}
        write_report(report, accuracy_report.points_report_html(scores, prediction, points))
        keys = ("overall_accuracy", "area_adjusted_overall_accuracy", "sample_size", "unit")
        feedback.pushInfo(json.dumps({k: result.get(k) for k in keys}))
        return {
            self.OUTPUT_JSON: scores_json,
            self.OUTPUT_HTML: report,
            self.OA: result.get("overall_accuracy"),
            self.OA_AREA: result.get("area_adjusted_overall_accuracy"),
            self.SAMPLE_SIZE: result.get("sample_size"),
        }
