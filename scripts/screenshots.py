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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SHARED = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--scene", default=str(SHARED / "target_b" / "scene.tif"))
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--action", choices=("adapt", "classify"), default="adapt")
    p.add_argument("--preset", default="fast")
    p.add_argument(
        "--view", type=int, default=0, help="map a centred view of this many pixels a side"
    )
    args = p.parse_args(argv)
    if not Path(args.scene).is_file():
        print(f"scene not found: {args.scene} (set LOVECS_SHARED_DATA)", file=sys.stderr)
        return 2

    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QObject, QSize, pyqtSignal
    from qgis.PyQt.QtWidgets import QSplitter, QVBoxLayout, QWidget

    app = QgsApplication([], True)
    app.initQgis()
    import lovecs_qgis  # noqa: F401  (engine on sys.path)
    from lovecs_qgis.dock import LoveCSDock

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

    window = QWidget()
    window.setWindowTitle("LoveCS for QGIS")
    layout = QVBoxLayout(window)
    bar = QgsMessageBar(window)
    splitter = QSplitter(window)
    canvas = QgsMapCanvas(splitter)
    canvas.setMinimumSize(QSize(620, 600))
    iface = Iface(canvas, bar)
    layout.addWidget(bar)
    layout.addWidget(splitter)

    scene = QgsRasterLayer(args.scene, Path(args.scene).stem)
    QgsProject.instance().addMapLayer(scene)
    dock = LoveCSDock(iface, splitter)
    splitter.addWidget(dock)
    dock.model_widget.setFilePath(args.model)
    dock.layer_combo.setLayer(scene)
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData(args.preset))
    out = Path(args.out)
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

    done: list = []
    button = dock.adapt_button if args.action == "adapt" else dock.classify_button
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
    # Tearing QGIS down with live canvas/dock widgets can crash at exit on some Qt builds; the
    # screenshot is written, so leave without the teardown.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
