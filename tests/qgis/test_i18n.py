"""Every text the plugin shows the user goes through tr() (issue 10): a literal or f-string given
straight to a message, label, button or Processing error is untranslatable."""

from __future__ import annotations

import ast
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[2] / "lovecs_qgis"

#: calls whose first argument the user reads
USER_TEXT = {
    "QgsProcessingException",
    "pushInfo",
    "pushWarning",
    "reportError",
    "pushMessage",
    "setText",
    "setToolTip",
    "setWindowTitle",
    "setPlaceholderText",
    "QLabel",
    "QPushButton",
    "QCheckBox",
    "QGroupBox",
    "QAction",
}


def untranslated(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        literal = isinstance(first, ast.JoinedStr) or (
            isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value
        )
        if name in USER_TEXT and literal:
            found.append((node.lineno, name))
    return found


def test_the_check_finds_a_literal_message():
    tree = ast.parse('feedback.pushInfo(f"done in {s} s")\nlabel.setText(tr("ok"))\nQLabel("")')
    assert untranslated(tree) == [(1, "pushInfo")]


def test_user_texts_in_the_plugin_go_through_tr():
    problems = [
        f"{path.relative_to(PLUGIN)}:{line} {name}(...)"
        for path in sorted(PLUGIN.rglob("*.py"))
        for line, name in untranslated(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not problems, "wrap these texts in tr(): " + ", ".join(problems)
