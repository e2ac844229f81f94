"""The plugin zip: one folder carrying plugin, metadata, engine and resources; it installs and
imports on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import package_plugin  # noqa: E402

sys.path.remove(str(ROOT / "scripts"))


def test_zip_holds_one_self_contained_plugin_folder(tmp_path):
    archive = package_plugin.build_zip(tmp_path / "lovecs_qgis.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert {n.split("/")[0] for n in names} == {"lovecs_qgis"}
    for required in (
        "__init__.py",
        "metadata.txt",
        "plugin.py",
        "runner.py",
        "algorithms/classify.py",
        "lovecs_core/cli/main.py",
        "lovecs_core/mapping/predict.py",
        "lovecs_core/model/card.py",
        "resources/icons/lovecs.svg",
    ):
        assert f"lovecs_qgis/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".part"))]
    assert "lovecs_qgis/engine_python.txt" not in names
    # the same sources give the same bytes
    again = package_plugin.build_zip(tmp_path / "again.zip")
    assert again.read_bytes() == archive.read_bytes()


def test_installed_plugin_imports_its_own_engine(tmp_path):
    archive = package_plugin.build_zip(tmp_path / "lovecs_qgis.zip")
    plugins = tmp_path / "profile" / "python" / "plugins"
    target = package_plugin.install(archive, plugins, engine_python=sys.executable)
    assert (target / "engine_python.txt").read_text().strip() == str(
        Path(sys.executable).absolute()
    )
    package_plugin.install(archive, plugins)  # reinstalling replaces the folder
    assert not (target / "engine_python.txt").exists()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = list(sys.path); "
        "import lovecs_qgis.plugin, lovecs_qgis.dock; "
        "from lovecs_qgis import engine; "
        "from lovecs_qgis.paths import default_model_path, icon_path; "
        "assert sys.path == before, 'the plugin changed sys.path'; "
        "print(engine.contract.__file__); print(icon_path().is_file()); "
        "print('runner' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(plugins)],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    engine_file, icon_ok, top_level_runner = proc.stdout.split()
    assert Path(engine_file).parent == target / "lovecs_core"  # not the checkout's copy
    assert icon_ok == "True"
    assert top_level_runner == "False"  # package-relative imports only


def test_dev_folder_matches_the_zip(tmp_path):
    folder = package_plugin.build_dir(tmp_path / "plugins", engine_python="/opt/py/bin/python")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    names = zipfile.ZipFile(package_plugin.build_zip(tmp_path / "p.zip")).namelist()
    assert sorted([n.split("/", 1)[1] for n in names] + ["engine_python.txt"]) == files
