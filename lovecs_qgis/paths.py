"""Where the plugin's parts live, in a source checkout and in an installed plugin folder.

An installed plugin is one folder carrying a copy of the engine (``lovecs_qgis/lovecs_core``) and
its resources (``lovecs_qgis/resources``); in a source checkout both are siblings of the plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

PLUGIN_DIR = Path(__file__).resolve().parent
ENGINE_PACKAGE = "lovecs_core"
ICON_NAME = "lovecs.svg"
DEFAULT_MODEL_NAME = "default.lovecs"


def engine_root() -> Path:
    """The folder holding the ``lovecs_core`` package: the plugin folder when it carries the
    engine, else its parent (a source checkout). The engine's child process gets it on its
    ``PYTHONPATH``; QGIS's own ``sys.path`` is never changed (see :mod:`lovecs_qgis.engine`)."""
    for folder in (PLUGIN_DIR, PLUGIN_DIR.parent):
        if (folder / ENGINE_PACKAGE / "__init__.py").is_file():
            return folder
    raise FileNotFoundError(
        f"the LoveCS engine ({ENGINE_PACKAGE}) is neither in {PLUGIN_DIR} "
        f"nor beside it; reinstall the plugin"
    )


def resources_dir() -> Path:
    """``resources/`` inside the plugin folder, or beside it in a source checkout."""
    inside = PLUGIN_DIR / "resources"
    return inside if inside.is_dir() else PLUGIN_DIR.parent / "resources"


def icon_path() -> Path:
    return resources_dir() / "icons" / ICON_NAME


def default_model_path() -> Optional[Path]:
    """The bundled default model (``resources/models/default.lovecs``), if there is one."""
    path = resources_dir() / "models" / DEFAULT_MODEL_NAME
    return path if path.is_file() else None
