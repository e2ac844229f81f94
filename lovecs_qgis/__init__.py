"""LoveCS land cover: QGIS plugin for land-cover mapping and cross-sensor adaptation.

The plugin is thin: Processing algorithms and a panel that run the ``lovecs_core`` engine in a
separate Python process. The engine travels inside the plugin folder (or sits beside it in a
source checkout); only its torch-free modules (contract, model card, checks, QML) are imported
inside QGIS, through :mod:`lovecs_qgis.engine`, and every import is package-relative: the
plugin never changes ``sys.path``.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS plugin entry point."""
    from .i18n import install
    from .plugin import LoveCSPlugin

    install()  # the user's language, when the plugin has a translation for it
    return LoveCSPlugin(iface)
