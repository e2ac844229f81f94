"""Helpers for the corrections and session tests: a small class map on a canvas, mouse events on
the canvas's viewport, and a fake engine session speaking the session protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QEvent, QPoint, QPointF, Qt
from qgis.PyQt.QtGui import QMouseEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication

from lovecs_qgis.styling import apply_class_style
from tests.core.helpers import CLASSES, write_geotiff

#: The map's grid: 60 x 60 pixels of 1 m, origin (500000, 2800000), EPSG:32640.
ORIGIN = (500000.0, 2800000.0)
SIZE = 60


def class_map(folder: Path, name: str = "map", value: int = 1) -> QgsRasterLayer:
    """A styled land-cover layer (every pixel ``value``) added to the project."""
    path = write_geotiff(folder / f"{name}.tif", np.full((SIZE, SIZE), value, np.uint8))
    layer = QgsRasterLayer(str(path), f"{name} — land cover")
    assert layer.isValid()
    apply_class_style(layer, CLASSES)
    QgsProject.instance().addMapLayer(layer)
    return layer


def show_on_canvas(canvas, layers, crs: str = "EPSG:32640") -> None:
    """Draw ``layers`` on ``canvas`` in ``crs``, zoomed on the map."""
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem(crs))
    canvas.setLayers(layers)
    canvas.window().show()  # a hidden parent keeps the viewport at its first, tiny size
    canvas.show()
    canvas.resize(600, 600)
    QApplication.processEvents()
    size = canvas.viewport().size()
    assert size.width() >= 500 and size.height() >= 500, size
    assert canvas.mapSettings().outputSize() == size, (canvas.mapSettings().outputSize(), size)
    extent = layers[-1].extent()
    if crs != layers[-1].crs().authid():
        from qgis.core import QgsCoordinateTransform

        transform = QgsCoordinateTransform(
            layers[-1].crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance()
        )
        extent = transform.transformBoundingBox(extent)
    canvas.setExtent(extent)
    canvas.refresh()
    QApplication.processEvents()


def map_point(canvas, pixel: QPoint) -> QgsPointXY:
    """The canvas-CRS position of a viewport pixel."""
    return canvas.getCoordinateTransform().toMapCoordinates(pixel.x(), pixel.y())


def pixel_of(canvas, point: QgsPointXY) -> QPoint:
    p = canvas.getCoordinateTransform().transform(point)
    return QPoint(round(p.x()), round(p.y()))


def click(canvas, pixel: QPoint, button=Qt.LeftButton) -> None:
    QTest.mouseClick(canvas.viewport(), button, Qt.NoModifier, pixel)
    QApplication.processEvents()


def drag(canvas, pixels: list[QPoint]) -> None:
    """Press at the first pixel, move through the others with the button held, release."""
    viewport = canvas.viewport()
    QTest.mousePress(viewport, Qt.LeftButton, Qt.NoModifier, pixels[0])
    for p in pixels[1:]:
        event = QMouseEvent(QEvent.MouseMove, QPointF(p), Qt.NoButton, Qt.LeftButton, Qt.NoModifier)
        QApplication.sendEvent(viewport, event)
    QTest.mouseRelease(viewport, Qt.LeftButton, Qt.NoModifier, pixels[-1])
    QApplication.processEvents()


FAKE_ENGINE = r'''
"""A fake `lovecs_core session`: answers every request of the protocol; a refine fills the map
with the class of the first correction. Each request is appended to the log file (argv[1])."""
import json, sys, time
from osgeo import gdal, ogr
log = open(sys.argv[1], "a")
slow = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def fill(path, value):
    ds = gdal.Open(path, gdal.GA_Update); band = ds.GetRasterBand(1)
    band.Fill(value); ds = None
depth = 0
for line in sys.stdin:
    req = json.loads(line)
    log.write(json.dumps(req) + "\n"); log.flush()
    kind, reply = req["request"], {"type": "reply", "id": req["id"], "request": req["request"]}
    if kind == "quit":
        send({**reply, "ok": True}); break
    if kind == "refine":
        send({"type": "progress", "stage": "training", "fraction": 0.5, "message": "half"})
        time.sleep(slow)
        src = ogr.Open(req["points"]); lyr = src.GetLayerByName("corrections")
        codes = [f.GetField(req["class_field"]) for f in lyr]
        if not codes:
            send({**reply, "ok": False, "error": "no corrections"}); continue
        fill(req["map"], codes[0]); depth += 1
        per = {str(c): codes.count(c) for c in sorted(set(codes))}
        send({**reply, "ok": True, "map": req["map"], "seconds": 0.1,
              "corrections": {"features": len(codes), "per_class": per},
              "accuracy": {"source": {"correct": 1, "n": 4, "oa": 0.25, "ci": [0.05, 0.7]},
                           "refined": {"correct": 3, "n": 4, "oa": 0.75, "ci": [0.3, 0.95]},
                           "folds": 4},
              "problems": ["2 features lie outside the view"]})
    elif kind in ("undo", "reset"):
        fill(req["map"], 1)
        send({**reply, "ok": True, "map": req["map"], "seconds": 0.1})
    elif kind == "view":
        fill(req["map"], 1)
        send({**reply, "ok": True, "map": req["map"], "seconds": 0.1, "pixels": 3600})
    elif kind == "save":
        open(req["out"], "w").write("model")
        send({**reply, "ok": True, "out": req["out"]})
    else:
        send({**reply, "ok": True})
'''


def fake_engine(folder: Path, slow: float = 0.0) -> tuple[list[str], Path]:
    """``(argv, request log)`` of a fake session engine written to ``folder``."""
    script = folder / "fake_session.py"
    script.write_text(FAKE_ENGINE, encoding="utf-8")
    log = folder / "requests.jsonl"
    return [sys.executable, str(script), str(log), str(slow)], log


def map_value(path: Path) -> int:
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    return int(dataset.GetRasterBand(1).ReadAsArray()[0, 0])
