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


def engine_import_graph() -> dict[str, set[str]]:
    """Engine module -> engine modules it imports (relative imports, deferred ones included)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(f) for f in ENGINE.rglob("*.py")}
    for path in ENGINE.rglob("*.py"):
        name = _module_name(path)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package[: len(package) - (node.level - 1)]
            stem = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from . import x` names a module, `from .x import y` not
                candidate = ".".join(stem + [alias.name])
                targets.add(candidate if candidate in modules else ".".join(stem))
        targets.discard(name)
    return graph


def _module_name(path: Path) -> str:
    parts = ["lovecs_core", *path.relative_to(ENGINE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles_in_the_engine():
    graph = engine_import_graph()
    assert "lovecs_core.model.csn" in graph["lovecs_core.model.networks"]  # the graph is read
    assert import_circles(graph) == []


def test_the_circle_check_finds_a_circle():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_between_the_engines_packages():
    """Role packages (and the top-level modules) import each other in one direction only."""
    packages: dict[str, set[str]] = {}
    for module, targets in engine_import_graph().items():
        package = ".".join(module.split(".")[:2])
        others = {".".join(t.split(".")[:2]) for t in targets} - {package}
        packages.setdefault(package, set()).update(others)
    assert "lovecs_core.alignment" in packages["lovecs_core.mapping"]  # the graph is read
    assert import_circles(packages) == []
