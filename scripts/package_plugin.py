#!/usr/bin/env python3
"""Build the installable QGIS plugin: one folder ``lovecs_qgis/`` holding the plugin code,
``metadata.txt``, a copy of the engine (``lovecs_core/``) and ``resources/``.

    package_plugin.py zip [--out dist/lovecs_qgis.zip]
    package_plugin.py dir [--out build/plugins] [--engine-python PY]
    package_plugin.py install [--zip dist/lovecs_qgis.zip] [--plugins DIR] [--engine-python PY]

``--engine-python`` records the interpreter that runs the engine (``engine_python.txt`` in the
plugin folder; the plugin tries it first after the user's own setting). Standard library only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "lovecs_qgis"
ENGINE_PYTHON_FILE = "engine_python.txt"
DEFAULT_PLUGINS = Path.home() / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
#: (source relative to the checkout, destination inside the plugin folder)
PARTS = [
    (PLUGIN, "."),
    ("lovecs_core", "lovecs_core"),
    ("resources", "resources"),
    ("metadata.txt", "metadata.txt"),
    ("LICENSE", "LICENSE"),
]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_FILES = {ENGINE_PYTHON_FILE}
SKIP_SUFFIXES = {".pyc", ".pyo", ".part"}
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def plugin_files(root: Path = ROOT) -> Iterator[tuple[Path, str]]:
    """``(source file, path inside the plugin folder)`` for every file the plugin carries."""
    for src, dst in PARTS:
        path = root / src
        if path.is_file():
            yield path, dst
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path)
                if (
                    not file.is_file()
                    or SKIP_DIRS & set(rel.parts)
                    or file.name in SKIP_FILES
                    or file.suffix in SKIP_SUFFIXES
                ):
                    continue
                yield file, str(Path(dst) / rel) if dst != "." else str(rel)
        elif src != "LICENSE":
            raise FileNotFoundError(f"{path} is missing")


def build_zip(out: Path, root: Path = ROOT) -> Path:
    """Write the plugin zip (entries sorted, fixed dates: the same sources give the same zip)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for src, rel in plugin_files(root):
            info = zipfile.ZipInfo(f"{PLUGIN}/{rel}", ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, src.read_bytes())
    tmp.replace(out)
    return out


def record_engine_python(folder: Path, python: Optional[str]) -> None:
    if python:
        (folder / ENGINE_PYTHON_FILE).write_text(
            str(Path(python).absolute()) + "\n", encoding="utf-8"
        )


def build_dir(plugins: Path, engine_python: Optional[str] = None, root: Path = ROOT) -> Path:
    """Copy the plugin folder to ``plugins/lovecs_qgis`` (replacing an older copy)."""
    target = plugins / PLUGIN
    if target.exists():
        shutil.rmtree(target)
    for src, rel in plugin_files(root):
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    record_engine_python(target, engine_python)
    return target


def install(zip_path: Path, plugins: Path, engine_python: Optional[str] = None) -> Path:
    """Unpack the zip into a QGIS profile's plugin folder, as QGIS's installer does."""
    target = plugins / PLUGIN
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        if not names or any(not n.startswith(PLUGIN + "/") for n in names):
            raise ValueError(f"{zip_path} does not hold a single {PLUGIN}/ folder")
        plugins.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        zf.extractall(plugins)
    record_engine_python(target, engine_python)
    return target


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_zip = sub.add_parser("zip", help="build the plugin zip")
    p_zip.add_argument("--out", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    p_dir = sub.add_parser("dir", help="build the plugin folder (development, tests)")
    p_dir.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "plugins",
        help="plugins folder to build lovecs_qgis/ in",
    )
    p_dir.add_argument("--engine-python")
    p_inst = sub.add_parser("install", help="install the zip into a QGIS profile")
    p_inst.add_argument("--zip", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    p_inst.add_argument("--plugins", type=Path, default=DEFAULT_PLUGINS)
    p_inst.add_argument("--engine-python")
    args = parser.parse_args(argv)
    if args.mode == "zip":
        print(build_zip(args.out))
    elif args.mode == "dir":
        print(build_dir(args.out, args.engine_python))
    else:
        target = install(args.zip, args.plugins, args.engine_python)
        print(
            f"installed {target}; enable 'LoveCS land cover' in QGIS (Plugins > Manage and "
            f"Install Plugins > Installed)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
