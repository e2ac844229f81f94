"""The accuracy report of ``lovecs evaluate`` as a self-contained HTML page (standard library
only: the QGIS plugin writes it in its own process from the engine's JSON scores)."""

from __future__ import annotations

import html
from typing import Any, Optional


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
        for c in classes
    )
    names = [e(str(c["name"])) for c in classes]
    matrix = scores.get("confusion_matrix", [])
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join(
        f"<tr><th>{names[i] if i < len(names) else i}</th>"
        + "".join(f"<td>{v:,}</td>" for v in row)
        + "</tr>"
        for i, row in enumerate(matrix)
    )
    area = scores.get("area_adjusted")
    area_html = ""
    if isinstance(area, dict) and area.get("overall_accuracy") is not None:
        area_html = (
            f"<p>Area-adjusted overall accuracy (Olofsson et al. 2014): "
            f"{_pct(area['overall_accuracy'])} %</p>"
        )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>LoveCS accuracy report</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} th{{background:#eee}}</style>
</head><body>
<h2>Accuracy of a land-cover map</h2>
<p>Map: <code>{e(prediction)}</code><br>Reference: <code>{e(labels)}</code><br>
{scores.get("pixels", 0):,} labelled pixels compared (label 0 ignored).</p>
<table><tr><th>mIoU</th><th>overall accuracy</th><th>kappa</th><th>mean F1</th></tr>
<tr><td>{_pct(scores.get("miou"))} %</td><td>{_pct(scores.get("overall_accuracy"))} %</td>
<td>{"–" if scores.get("kappa") is None else f"{scores['kappa']:.3f}"}</td>
<td>{_pct(scores.get("mean_f1"))} %</td></tr></table>
{area_html}
<h3>Per class (%)</h3>
<table><tr><th>code</th><th>class</th><th>IoU</th><th>F1</th><th>precision</th><th>recall</th>
<th>reference pixels</th></tr>{rows}</table>
<h3>Confusion matrix (rows: reference, columns: map)</h3>
<table><tr><th></th>{head}</tr>{body}</table>
</body></html>
"""
