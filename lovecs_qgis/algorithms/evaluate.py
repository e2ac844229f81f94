"""``lovecs:evaluate``: accuracy of a land-cover map against reference labels
(``lovecs evaluate``), as an HTML report and numbers."""

from __future__ import annotations

import json
import os
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

from ..engine import checks, contract
from ..engine import report as accuracy_report
from ..i18n import tr
from ..runner import engine_args
from .base import EngineAlgorithm, checks_as_processing_errors, output_path, raster_path


def write_report(path: str, text: str) -> None:
    """Write an HTML report under a temporary name, then rename: never half a file."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = contract.part_path(final)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


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
        classes = self.parameterAsFile(parameters, self.CLASSES, context)
        with checks_as_processing_errors():
            checks.check_outputs(
                [("accuracy report (OUTPUT_HTML)", report), ("scores (OUTPUT_JSON)", scores_json)],
                [
                    ("map (PREDICTION)", prediction),
                    ("labels (LABELS)", labels),
                    ("classes", classes),
                ],
            )
        args = engine_args(
            pred=prediction, labels=labels, classes=classes, json=scores_json or None
        )
        result = self.run_engine(args, feedback, outputs=[scores_json] if scores_json else [])
        scores = result.get("scores") or {}
        write_report(report, accuracy_report.report_html(scores, prediction, labels))
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
