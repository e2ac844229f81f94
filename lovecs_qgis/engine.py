"""The engine's torch-free modules, as the plugin imports them in QGIS's own process.

An installed plugin carries its copy of the engine inside its folder (``lovecs_qgis/lovecs_core``),
imported here as the subpackage ``lovecs_qgis.lovecs_core``; in a source checkout (tests) the
``lovecs_core`` beside the plugin is importable by its own name. ``sys.path`` is never changed,
so no top-level name in QGIS (``import runner`` in another plugin) can resolve to our files.
The plugin imports only what is listed here; torch lives in the engine's child process.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING


def _engine_package() -> str:
    inside = f"{__package__}.lovecs_core"
    try:
        importlib.import_module(inside)
        return inside
    except ModuleNotFoundError as exc:
        if exc.name != inside:  # the engine is there but broken: say so
            raise
    importlib.import_module("lovecs_core")
    return "lovecs_core"


PACKAGE = _engine_package()


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


if TYPE_CHECKING:  # the same modules as type checkers see them (mypy over the plugin)
    from lovecs_core import contract
    from lovecs_core.checks import outputs as checks
    from lovecs_core.checks import rasters as rasterchecks
    from lovecs_core.checks import settings as settingchecks
    from lovecs_core.compute import estimate
    from lovecs_core.evaluation import report
    from lovecs_core.model import card
    from lovecs_core.rasters import bands, qml
else:
    contract = _load("contract")
    card = _load("model.card")
    checks = _load("checks.outputs")
    rasterchecks = _load("checks.rasters")
    settingchecks = _load("checks.settings")
    bands = _load("rasters.bands")
    estimate = _load("compute.estimate")
    qml = _load("rasters.qml")
    report = _load("evaluation.report")
