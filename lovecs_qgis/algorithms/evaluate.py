"""``lovecs:evaluate``: accuracy of a land-cover map against reference labels
(``lovecs evaluate``), as an HTML report and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from ..engine import report as accuracy_report
from ..i18n import tr
from ..runner import engine_args
from .base import EngineAlgorithm, output_path, raster_path


class EvaluateAlgorithm(EngineAlgorithm):
    COMMAND = "evaluate"
    PREDICTION, LABELS, CLASSES = "PREDICTION", "LABELS", "CLASSES"
    OUTPUT_HTML, OUTPUT_JSON = "OUTPUT_HTML", "OUTPUT_JSON"
    MIOU, OA, KAPPA = "MIOU", "OA", "KAPPA"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return tr("Evaluate a land-cover map against reference labels")

    def shortHelpString(self) -> str:
        return tr(
            "Compares a map of class codes with reference labels on the same grid (label 0 "
            "is ignored): confusion matrix, per-class IoU, F1, precision and recall, mIoU, "
            "overall accuracy, Cohen's kappa and area-adjusted accuracy. Writes an HTML "
            "report (and optionally the scores as JSON); mIoU, overall accuracy and kappa "
            "are also outputs for models and scripts."
        )

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, tr("Land-cover map")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, tr("Reference labels")))
        self.addParameter(
            QgsProcessingParameterFile(
                self.CLASSES,
                tr("Classes (JSON; default: the codes found, names from the map)"),
                QgsProcessingParameterFile.File,
                fileFilter="JSON (*.json)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, tr("Accuracy report"), "HTML files (*.html)"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_JSON,
                tr("Scores as JSON"),
                "JSON (*.json)",
                optional=True,
                createByDefault=False,
            )
        )
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, tr("mIoU")))
        self.addOutput(QgsProcessingOutputNumber(self.OA, tr("Overall accuracy")))
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, tr("Cohen's kappa")))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        prediction = raster_path(
            self.parameterAsRasterLayer(parameters, self.PREDICTION, context), "map"
        )
        labels = raster_path(
            self.parameterAsRasterLayer(parameters, self.LABELS, context), "reference"
        )
        report = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context))
        scores_json = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context))
        args = engine_args(
            pred=prediction,
            labels=labels,
            classes=self.parameterAsFile(parameters, self.CLASSES, context),
            json=scores_json or None,
        )
        result = self.run_engine(args, feedback, outputs=[scores_json] if scores_json else [])
        scores = result.get("scores") or {}
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(
            accuracy_report.report_html(scores, prediction, labels), encoding="utf-8"
        )
        feedback.pushInfo(
            json.dumps({k: scores.get(k) for k in ("miou", "overall_accuracy", "kappa")})
        )
        outputs: dict[str, Any] = {
            self.OUTPUT_HTML: report,
            self.MIOU: result.get("miou"),
            self.OA: result.get("overall_accuracy"),
            self.KAPPA: result.get("kappa"),
        }
        if scores_json:
            outputs[self.OUTPUT_JSON] = scores_json
        return outputs
