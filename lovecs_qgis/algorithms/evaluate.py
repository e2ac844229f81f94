"""``lovecs:evaluate``: accuracy of a land-cover map against reference labels
(``lovecs evaluate``), as an HTML report and numbers."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputNumber,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterRasterLayer)

from .base import EngineAlgorithm, engine_args, output_path, raster_path


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def report_html(scores: dict[str, Any], prediction: str, labels: str) -> str:
    """A self-contained HTML page: summary numbers, per-class table, confusion matrix."""
    e = html.escape
    classes = scores.get("classes", [])
    rows = "".join(
        f"<tr><td>{c['code']}</td><td>{e(str(c['name']))}</td><td>{_pct(c.get('iou'))}</td>"
        f"<td>{_pct(c.get('f1'))}</td><td>{_pct(c.get('precision'))}</td>"
        f"<td>{_pct(c.get('recall'))}</td><td>{c.get('support', 0):,}</td></tr>"
        for c in classes)
    names = [e(str(c["name"])) for c in classes]
    matrix = scores.get("confusion_matrix", [])
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join(f"<tr><th>{names[i] if i < len(names) else i}</th>"
                   + "".join(f"<td>{v:,}</td>" for v in row) + "</tr>"
                   for i, row in enumerate(matrix))
    area = scores.get("area_adjusted")
    area_html = ""
    if isinstance(area, dict) and area.get("overall_accuracy") is not None:
        area_html = (f"<p>Area-adjusted overall accuracy (Olofsson et al. 2014): "
                     f"{_pct(area['overall_accuracy'])} %</p>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>LoveCS accuracy report</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} th{{background:#eee}}</style>
</head><body>
<h2>Accuracy of a land-cover map</h2>
<p>Map: <code>{e(prediction)}</code><br>Reference: <code>{e(labels)}</code><br>
{scores.get('pixels', 0):,} labelled pixels compared (label 0 ignored).</p>
<table><tr><th>mIoU</th><th>overall accuracy</th><th>kappa</th><th>mean F1</th></tr>
<tr><td>{_pct(scores.get('miou'))} %</td><td>{_pct(scores.get('overall_accuracy'))} %</td>
<td>{"–" if scores.get("kappa") is None else f"{scores['kappa']:.3f}"}</td>
<td>{_pct(scores.get('mean_f1'))} %</td></tr></table>
{area_html}
<h3>Per class (%)</h3>
<table><tr><th>code</th><th>class</th><th>IoU</th><th>F1</th><th>precision</th><th>recall</th>
<th>reference pixels</th></tr>{rows}</table>
<h3>Confusion matrix (rows: reference, columns: map)</h3>
<table><tr><th></th>{head}</tr>{body}</table>
</body></html>
"""


class EvaluateAlgorithm(EngineAlgorithm):
    COMMAND = "evaluate"
    PREDICTION, LABELS, CLASSES = "PREDICTION", "LABELS", "CLASSES"
    OUTPUT_HTML, OUTPUT_JSON = "OUTPUT_HTML", "OUTPUT_JSON"
    MIOU, OA, KAPPA = "MIOU", "OA", "KAPPA"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:
        return "Evaluate a land-cover map against reference labels"

    def shortHelpString(self) -> str:
        return ("Compares a map of class codes with reference labels on the same grid (label 0 "
                "is ignored): confusion matrix, per-class IoU, F1, precision and recall, mIoU, "
                "overall accuracy, Cohen's kappa and area-adjusted accuracy. Writes an HTML "
                "report (and optionally the scores as JSON); mIoU, overall accuracy and kappa "
                "are also outputs for models and scripts.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.PREDICTION, "Land-cover map"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, "Reference labels"))
        self.addParameter(QgsProcessingParameterFile(
            self.CLASSES, "Classes (JSON; default: the codes found, names from the map)",
            QgsProcessingParameterFile.File, fileFilter="JSON (*.json)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Accuracy report", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, "Scores as JSON", "JSON (*.json)", optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "mIoU"))
        self.addOutput(QgsProcessingOutputNumber(self.OA, "Overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, "Cohen's kappa"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        prediction = raster_path(self.parameterAsRasterLayer(parameters, self.PREDICTION,
                                                             context), "map")
        labels = raster_path(self.parameterAsRasterLayer(parameters, self.LABELS, context),
                             "reference")
        report = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context))
        scores_json = output_path(self.parameterAsFileOutput(parameters, self.OUTPUT_JSON,
                                                             context))
        args = engine_args(pred=prediction, labels=labels,
                           classes=self.parameterAsFile(parameters, self.CLASSES, context),
                           json=scores_json or None)
        result = self.run_engine(args, feedback, outputs=[scores_json] if scores_json else [])
        scores = result.get("scores") or {}
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(report_html(scores, prediction, labels), encoding="utf-8")
        feedback.pushInfo(json.dumps({k: scores.get(k) for k in
                                      ("miou", "overall_accuracy", "kappa")}))
        outputs: dict[str, Any] = {self.OUTPUT_HTML: report, self.MIOU: result.get("miou"),
                                   self.OA: result.get("overall_accuracy"),
                                   self.KAPPA: result.get("kappa")}
        if scores_json:
            outputs[self.OUTPUT_JSON] = scores_json
        return outputs
