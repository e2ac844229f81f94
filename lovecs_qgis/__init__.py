"""LoveCS land cover: QGIS plugin for land-cover mapping and cross-sensor adaptation.

The plugin is thin: Processing algorithms and a panel that run the ``lovecs_core`` engine in a
separate Python process. The engine travels inside the plugin folder (or sits beside it in a
source checkout); only its torch-free modules (model card, QML) are imported inside QGIS.
"""
from .paths import ensure_engine_importable

ensure_engine_importable()


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS plugin entry point."""
    from .plugin import LoveCSPlugin

    return LoveCSPlugin(iface)
