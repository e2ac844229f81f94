"""The plugin object QGIS creates (``classFactory``): Processing provider, the dock ("Adapt to
this image") toggled by a toolbar button, and Plugins-menu entries."""

from __future__ import annotations

from typing import Any, Callable, Optional

from qgis.core import QgsApplication, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .i18n import tr
from .paths import icon_path
from .provider import PROVIDER_ID, LoveCSProvider

MENU = "&LoveCS land cover"
#: Plugins-menu entries opening a Processing dialog: (algorithm name, menu text).
DIALOG_ENTRIES = [
    ("classify", "Classify raster…"),
    ("adapt", "Adapt model to this image…"),
    ("trainsource", "Train a model on labelled rasters…"),
    ("evaluate", "Evaluate a map against labels…"),
]


class LoveCSPlugin:
    """Registers the ``lovecs`` Processing provider (also under ``qgis_process``, through
    :meth:`initProcessing`) and, in the GUI, a toolbar button plus Plugins-menu entries."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: Optional[LoveCSProvider] = None
        self.main_action: Optional[QAction] = None
        self.actions: list[QAction] = []
        self.dock: Optional[Any] = None

    # -- Processing ------------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 (QGIS calls this name)
        if self.provider is None:
            self.provider = LoveCSProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # -- GUI -------------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        icon = QIcon(str(icon_path()))
        parent = self.iface.mainWindow()
        self.main_action = QAction(icon, tr("LoveCS land cover panel"), parent)
        self.main_action.setObjectName("lovecsMainAction")
        self.main_action.setToolTip(
            tr("LoveCS land cover: adapt a model to the active raster layer")
        )
        self.main_action.setCheckable(True)
        self.main_action.toggled.connect(self.toggle_dock)
        self.iface.addToolBarIcon(self.main_action)
        self.iface.addPluginToMenu(MENU, self.main_action)
        self.actions = [self.main_action]
        for name, text in DIALOG_ENTRIES:
            action = QAction(icon, tr(text), parent)
            action.setObjectName(f"lovecs_{name}")
            action.triggered.connect(self._opener(name))
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)

    def toggle_dock(self, visible: bool) -> None:
        """Show or hide the "Adapt to this image" panel (created on first use)."""
        if self.dock is None:
            if not visible:
                return
            from .dock import LoveCSDock

            self.dock = LoveCSDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._sync_action)
            self.dock.look_for_devices()
        self.dock.setVisible(visible)

    def _sync_action(self, visible: bool) -> None:
        if self.main_action is not None and self.main_action.isChecked() != visible:
            self.main_action.setChecked(visible)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.cancel()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
        if self.main_action is not None:
            self.iface.removeToolBarIcon(self.main_action)
        self.actions, self.main_action = [], None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def _opener(self, name: str) -> Callable[[], None]:
        return lambda *_: self.open_dialog(name)

    def initial_parameters(self, name: str) -> dict[str, Any]:
        """Dialog presets: the active raster layer as the input (or map, for evaluate)."""
        layer = self.iface.activeLayer()
        if not isinstance(layer, QgsRasterLayer):
            return {}
        key = {"classify": "INPUT", "adapt": "INPUT", "evaluate": "PREDICTION"}.get(name)
        return {key: layer.id()} if key else {}

    def open_dialog(self, name: str) -> None:
        import processing

        processing.execAlgorithmDialog(f"{PROVIDER_ID}:{name}", self.initial_parameters(name))
