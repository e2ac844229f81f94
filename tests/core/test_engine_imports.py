"""The engine must never import QGIS, Qt or the plugin: parse every module's imports."""

import ast
from pathlib import Path

import lovecs_core

FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip", "lovecs_qgis")
ENGINE = Path(lovecs_core.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_engine_never_imports_qgis_or_qt():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) >= 8
    offenders = {
        str(f.relative_to(ENGINE)): sorted(
            m for m in imported_modules(f) if m.split(".")[0] in FORBIDDEN
        )
        for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_itself_detects_an_import(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom qgis.core import QgsProject\n")
    assert "qgis.core" in imported_modules(bad)
