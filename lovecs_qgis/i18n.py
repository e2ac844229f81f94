"""Translation of the plugin's user interface: every string the user reads goes through
:func:`tr` (Qt's translation system; ``pylupdate5`` finds the calls). A translation is a Qt
``.qm`` file ``i18n/lovecs_<locale>.qm`` in the plugin folder, installed by :func:`install`
for QGIS's user locale; without one, the English text is shown."""

from __future__ import annotations

from typing import Any, Optional

from qgis.PyQt.QtCore import QCoreApplication, QTranslator

from .paths import PLUGIN_DIR

CONTEXT = "LoveCS"
_translators: list[QTranslator] = []  # kept alive while installed


def tr(text: str, context: str = CONTEXT) -> str:
    """``text`` in the user's language (as is when there is no translation)."""
    return QCoreApplication.translate(context, text)


def locale_name() -> str:
    """QGIS's user locale, e.g. ``de`` (``en`` when it cannot be read)."""
    try:
        from qgis.core import QgsSettings

        value: Any = QgsSettings().value("locale/userLocale", "") or ""
    except ImportError:
        value = ""
    return str(value)[:2] or "en"


def install(locale: Optional[str] = None) -> bool:
    """Install the plugin's translation for ``locale`` (default: QGIS's); whether one was found."""
    path = PLUGIN_DIR / "i18n" / f"lovecs_{locale or locale_name()}.qm"
    if not path.is_file():
        return False
    translator = QTranslator()
    if not translator.load(str(path)):
        return False
    QCoreApplication.installTranslator(translator)
    _translators.append(translator)
    return True
