"""The Processing provider ``lovecs`` ("LoveCS land cover")."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .i18n import tr
from .paths import icon_path

PROVIDER_ID = "lovecs"
PROVIDER_NAME = "LoveCS land cover"


class LoveCSProvider(QgsProcessingProvider):
    """Land-cover mapping and cross-sensor adaptation algorithms."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return tr(PROVIDER_NAME)

    def longName(self) -> str:
        return tr("LoveCS land cover: mapping and cross-sensor adaptation (PyTorch engine)")

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def svgIconPath(self) -> str:
        return str(icon_path())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]  # the engine writes GeoTIFF (tiled, compressed, colour table)

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
