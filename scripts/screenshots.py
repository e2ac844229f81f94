"""README screenshots: the real dock beside a map canvas, after a finished run over a real scene,
grabbed offscreen (QT_QPA_PLATFORM=offscreen).

    python scripts/screenshots.py --out docs/screenshots [--action adapt|classify]
    python scripts/screenshots.py --action classify --view 700   # a 700 px view: a short run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SHARED = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not Path(args.scene).is_file():
        print(f"scene not found: {args.scene} (set LOVECS_SHARED_DATA)", file=sys.stderr)
        return 2

    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    import lovecs_qgis  # noqa: F401  (engine on sys.path)

    window, canvas, dock, extent = _set_up(app, args)
    code = _run(app, dock, args.action)
    if code:
        return code
    _grab(app, window, canvas, extent, Path(args.out))
    # Tearing QGIS down with live canvas/dock widgets can crash at exit on some Qt builds; the
    # screenshot is written, so leave without the teardown.
    os._exit(0)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--scene", default=str(SHARED / "target_b" / "scene.tif"))
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--action", choices=("adapt", "classify"), default="adapt")
    p.add_argument("--preset", default="fast")
    p.add_argument(
        "--view", type=int, default=0, help="map a centred view of this many pixels a side"
    )
    return p.parse_args(argv)


def _iface(canvas: Any, bar: Any) -> Any:
    """A stand-in for QGIS's ``iface`` over this canvas and message bar."""
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QObject, pyqtSignal

    class Iface(QObject):
        """The parts of QGIS's interface the dock uses."""

        currentLayerChanged = pyqtSignal(object)

        def __init__(self, canvas: QgsMapCanvas, bar: QgsMessageBar) -> None:
            super().__init__()
            self.canvas, self.bar = canvas, bar

        def mapCanvas(self) -> QgsMapCanvas:  # noqa: N802
            return self.canvas

        def messageBar(self) -> QgsMessageBar:  # noqa: N802
            return self.bar

        def layerTreeView(self) -> None:  # noqa: N802
            return None

    return Iface(canvas, bar)


def _set_up(app: Any, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The window (message bar, canvas, dock) showing the scene, the dock filled in; returns the
    window, the canvas, the dock and the extent shown."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtWidgets import QSplitter, QVBoxLayout, QWidget

    from lovecs_qgis.dock import LoveCSDock

    window = QWidget()
    window.setWindowTitle("LoveCS for QGIS")
    layout = QVBoxLayout(window)
    bar = QgsMessageBar(window)
    splitter = QSplitter(window)
    canvas = QgsMapCanvas(splitter)
    canvas.setMinimumSize(QSize(620, 600))
    iface = _iface(canvas, bar)
    layout.addWidget(bar)
    layout.addWidget(splitter)

    scene = QgsRasterLayer(args.scene, Path(args.scene).stem)
    QgsProject.instance().addMapLayer(scene)
    dock = LoveCSDock(iface, splitter)
    splitter.addWidget(dock)
    dock.model_widget.setFilePath(args.model)
    dock.layer_combo.setLayer(scene)
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData(args.preset))
    dock.output_widget.setFilePath(str(ROOT / ".tmp" / "screenshots_run"))
    window.resize(1180, 900)
    window.show()
    canvas.setDestinationCrs(scene.crs())
    extent = scene.extent()
    if args.view:
        half = args.view * scene.rasterUnitsPerPixelX() / 2
        c = extent.center()
        extent = QgsRectangle(c.x() - half, c.y() - half, c.x() + half, c.y() + half)
        dock.area_combo.setCurrentIndex(1)  # "Current map extent"
    canvas.setExtent(extent)
    app.processEvents()
    dock.look_for_devices()
    return window, canvas, dock, extent


def _run(app: Any, dock: Any, action: str) -> int:
    """Click the action's button and wait for the run (and the device search) to end; 0 when
    it succeeded, 1 with the reason on stderr when not. Leaves the log open in plain words."""
    done: list = []
    button = dock.adapt_button if action == "adapt" else dock.classify_button
    button.click()
    if dock.task is None:
        print("the dock refused to start:\n" + dock.log_view.toPlainText(), file=sys.stderr)
        return 1
    dock.task.done.connect(done.append)
    while not done or dock.devices_task is not None:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()
    dock.corrections_group.setCollapsed(True)
    dock.log_group.setCollapsed(False)  # the log in plain words
    app.processEvents()
    dock.widget().verticalScrollBar().setValue(0)
    if not done[0].ok:
        print(f"the run failed: {done[0].error}", file=sys.stderr)
        return 1
    return 0


def _grab(app: Any, window: Any, canvas: Any, extent: Any, out: Path) -> None:
    """Show every layer over the extent, let it render, and save the window as dock.png."""
    from qgis.core import QgsProject

    canvas.setLayers([l for l in QgsProject.instance().layerTreeRoot().layerOrder()])
    canvas.setExtent(extent)
    canvas.refresh()
    canvas.waitWhileRendering()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "dock.png"
    window.grab().save(str(target))
    print(f"wrote {target}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
