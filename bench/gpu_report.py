"""The Markdown form of ``bench/gpu_check.py``'s report (the JSON holds the same)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MARK = {"passed": "✅", "skipped": "⏭", "failed": "❌", "timeout": "⏱"}


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        text = json.dumps(v, separators=(", ", ": "))
        return text if len(text) <= 400 else text[:397] + "..."
    return str(v)


def _part(e: dict[str, Any]) -> list[str]:
    lines = [f"### {MARK.get(e['status'], '')} {e['name']}: {e['status']} ({e['seconds']:.0f} s)"]
    lines += [
        "",
        f"{e['what']}; cap {e['cap_s']} s" + (f"; log `{e['log']}`" if "log" in e else ""),
    ]
    if e.get("reason"):
        lines += ["", f"Reason: {e['reason']}"]
    rows = e.get("results") or {}
    if rows:
        lines += ["", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {_value(v).replace('|', '/')} |" for k, v in rows.items()]
    return lines + [""]


def markdown(data: dict[str, Any]) -> str:
    c = data["counts"]
    lines = [
        "# GPU check",
        "",
        f"- started {data['started']}; `--device {data['device_arg']}`; device: "
        f"{data['device'] or 'unknown'}",
        f"- {data['total_s']:.0f} s of a {data['budget_s']:.0f} s budget; synthetic raster "
        f"{data['size']} px square",
        f"- parts: {c['passed']} passed, {c['skipped']} skipped, {c['failed']} failed, "
        f"{c['timeout']} over their cap",
        "",
        "| part | status | seconds | reason |",
        "|---|---|---:|---|",
    ]
    for e in data["parts"]:
        reason = str(e.get("reason", "")).replace("|", "/")[:160]
        lines.append(f"| {e['name']} | {e['status']} | {e['seconds']:.0f} | {reason} |")
    lines.append("")
    for e in data["parts"]:
        lines += _part(e)
    return "\n".join(lines)


def record(report: Path, results: Path) -> str:
    """Put ``report`` (a report.json) into ``results`` (bench/RESULTS.md) as the section between
    ``<!-- gpu-check:start -->`` and ``<!-- gpu-check:end -->`` (replaced when it is there)."""
    data = json.loads(report.read_text())
    body = markdown(data).replace("# GPU check", f"### GPU check, {data['started']}", 1)
    text = body.replace("\n### ", "\n#### ")
    start, end = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = results.read_text() if results.is_file() else "# Benchmark results\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = results.with_name(results.name + ".part")
    tmp.write_text(new)
    os.replace(tmp, results)
    return block
