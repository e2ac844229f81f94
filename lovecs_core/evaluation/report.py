"""The accuracy report of ``lovecs evaluate`` as a self-contained HTML page (standard library
only: the QGIS plugin writes it in its own process from the engine's JSON scores)."""

from __future__ import annotations

import html
from typing import Any, Optional


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _page(body: str) -> str:
    """The HTML page around ``body`` (title, style)."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>LoveCS accuracy report</title>\n'
        "<style>body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;"
        "margin:0.5em 0}\ntd,th{border:1px solid #bbb;padding:3px 8px;text-align:right} "
        "th{background:#eee}</style>\n</head><body>\n" + body + "</body></html>\n"
    )


def _matrix_table(names: list[str], matrix: list[list[int]]) -> str:
    """A confusion matrix as an HTML table (``names``: escaped class names)."""
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join(
        f"<tr><th>{names[i] if i < len(names) else i}</th>"
        + "".join(f"<td>{v:,}</td>" for v in row)
        + "</tr>"
        for i, row in enumerate(matrix)
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


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
    area = scores.get("area_adjusted")
    area_html = ""
    if isinstance(area, dict) and area.get("overall_accuracy") is not None:
        area_html = (
            f"<p>Area-adjusted overall accuracy (Olofsson et al. 2014): "
            f"{_pct(area['overall_accuracy'])} %</p>"
        )
    return _page(f"""<h2>Accuracy of a land-cover map</h2>
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
{_matrix_table(names, matrix)}
""")


def _ci(value: Optional[float], ci: Any) -> str:
    if value is None:
        return "–"
    if not ci or ci[0] is None or ci[1] is None:
        return _pct(value)
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _area(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:,.1f}"


def points_report_html(scores: dict[str, Any], prediction: str, points: str) -> str:
    """A self-contained HTML page for ``lovecs evaluate --points``: the sample, the error
    matrix, the plain sample estimates and the area-adjusted ones, with intervals."""
    e = html.escape
    names = [e(str(c["name"])) for c in scores.get("classes", [])]
    sample = scores.get("sample", {})
    plain = scores.get("sample_estimates", {})
    level = f"{100 * plain.get('confidence', 0.95):.0f} %"
    matrix = scores.get("error_matrix", [])
    pa, ua = plain.get("producers_accuracy", {}), plain.get("users_accuracy", {})
    per_class = "".join(
        f"<tr><th>{n}</th><td>{_ci(pa['value'][i], pa['ci'][i])} (n={pa['n'][i]})</td>"
        f"<td>{_ci(ua['value'][i], ua['ci'][i])} (n={ua['n'][i]})</td></tr>"
        for i, n in enumerate(names)
    )
    oa = plain.get("overall_accuracy", {})
    area = scores.get("area_adjusted")
    area_html = ""
    if isinstance(area, dict):
        hectares = "area_ha" in area
        values, cis = (
            (area["area_ha"], area["area_ha_ci"]) if hectares else (area["area"], area["area_ci"])
        )
        unit = "ha" if hectares else e(str(area.get("area_unit", "")))
        rows = "".join(
            f"<tr><th>{n}</th>"
            f"<td>{_ci(area['producers_accuracy'][i], area['producers_accuracy_ci'][i])}</td>"
            f"<td>{_ci(area['users_accuracy'][i], area['users_accuracy_ci'][i])}</td>"
            f"<td>{_area(values[i])} [{_area(cis[i][0])}, {_area(cis[i][1])}]</td></tr>"
            for i, n in enumerate(names)
        )
        area_html = (
            f"<h3>Area-adjusted estimates (Olofsson et al. 2014), {level} intervals</h3>"
            f"<p>Overall accuracy: "
            f"{_ci(area['overall_accuracy'], area['overall_accuracy_ci'])} %</p>"
            f"<table><tr><th>class</th><th>producer's (%)</th><th>user's (%)</th>"
            f"<th>area ({unit})</th></tr>{rows}</table>"
        )
    note = f"<br>{e(str(sample['note']))}" if sample.get("note") else ""
    problems = "".join(f"<li>{e(str(p))}</li>" for p in scores.get("problems", []))
    return _page(f"""<h2>Accuracy of a land-cover map at reference points</h2>
<p>Map: <code>{e(prediction)}</code><br>Reference: <code>{e(points)}</code><br>
Sample: {sample.get("size", 0):,} {e(str(sample.get("unit", "point")))}s{note}</p>
{f"<p>Left out:</p><ul>{problems}</ul>" if problems else ""}
<h3>Error matrix (rows: reference, columns: map)</h3>
{_matrix_table(names, matrix)}
<h3>Sample estimates, {level} Wilson intervals</h3>
<p>Overall accuracy: {_ci(oa.get("value"), oa.get("ci"))} %</p>
<table><tr><th>class</th><th>producer's (%)</th><th>user's (%)</th></tr>{per_class}</table>
{area_html}
""")
