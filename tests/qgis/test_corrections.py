"""The corrections layer and the "Correct" map tool, driven with real mouse events on a canvas."""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsField,
    QgsPointXY,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QPoint, Qt, QVariant
from qgis.PyQt.QtTest import QTest

from lovecs_qgis.corrections.controller import CorrectionsController, MapContext
from lovecs_qgis.corrections.layer import (
    CorrectionsLayerError,
    integer_fields,
    open_corrections,
    reference_set,
    write_snapshot,
)
from lovecs_qgis.corrections.panel import CorrectionsPanel, accuracy_text
from lovecs_qgis.engine import contract
from lovecs_qgis.session import SessionClient
from tests.core.helpers import CLASSES

from .corrections_helpers import class_map, click, drag, map_point, pixel_of, show_on_canvas


@pytest.fixture
def correcting(qgis_iface, qgis_new_project, tmp_path: Path):
    """A controller on a fresh class map shown on the canvas, the "Correct" tool active."""
    canvas = qgis_iface.mapCanvas()
    layer = class_map(tmp_path)
    show_on_canvas(canvas, [layer])
    panel = CorrectionsPanel()
    controller = CorrectionsController(qgis_iface, panel, SessionClient(argv=["false"]))
    controller.set_map(MapContext(layer, str(layer.source()), "m.lovecs", CLASSES, tmp_path))
    panel.correct_button.setChecked(True)
    assert canvas.mapTool() is controller.tool
    yield controller, canvas, layer
    controller.set_correcting(False)
    for lyr in controller.corrections.layers:
        lyr.rollBack()


def features(layer: QgsVectorLayer) -> list[tuple[int, str]]:
    return [(f["class"], f.geometry().asWkt(3)) for f in layer.getFeatures()]


def test_the_corrections_file_is_made_beside_the_map_styled_with_the_cards_classes(correcting):
    controller, _, layer = correcting
    path = Path(layer.source()).with_name("map.corrections.gpkg")
    assert controller.corrections.path == path and path.is_file()
    source = ogr.Open(str(path))
    lyr = source.GetLayerByName(contract.CORRECTIONS_LAYER)
    defn = lyr.GetLayerDefn()
    field = defn.GetFieldDefn(defn.GetFieldIndex(contract.CORRECTIONS_CLASS_FIELD))
    assert field.GetType() == ogr.OFTInteger
    assert lyr.GetSpatialRef().GetAuthorityCode(None) == "32640"
    points, strokes = controller.corrections.layers
    assert points.geometryType() == QgsWkbTypes.PointGeometry
    assert strokes.geometryType() == QgsWkbTypes.LineGeometry
    for vector in (points, strokes):
        renderer = vector.renderer()
        assert renderer.type() == "categorizedSymbol"
        assert renderer.classAttribute() == contract.CORRECTIONS_CLASS_FIELD
        assert [c.label() for c in renderer.categories()] == [f"{c.code} {c.name}" for c in CLASSES]
        assert [c.symbol().color().name().upper() for c in renderer.categories()] == [
            c.color for c in CLASSES
        ]
        assert vector.isEditable() and QgsProject.instance().mapLayer(vector.id()) is vector
    panel = controller.panel
    assert [panel.palette.item(i).text() for i in range(3)] == [
        "1  building  (0)",
        "2  road  (0)",
        "3  water  (0)",
    ]


def test_a_click_adds_a_point_of_the_chosen_class_where_clicked(correcting):
    controller, canvas, _ = correcting
    controller.panel.palette.select_code(3)
    pixel = QPoint(200, 150)
    where = map_point(canvas, pixel)
    click(canvas, pixel)
    points, strokes = controller.corrections.layers
    (feature,) = list(points.getFeatures())
    assert feature["class"] == 3
    assert feature.geometry().asPoint().distance(where) < 1e-6
    assert strokes.featureCount() == 0
    assert controller.panel.palette.item(2).text() == "3  water  (1)"


def test_a_drag_draws_a_stroke_and_right_click_removes_the_nearest(correcting):
    controller, canvas, _ = correcting
    controller.panel.palette.select_code(2)
    path = [QPoint(100, 100), QPoint(130, 110), QPoint(160, 130), QPoint(200, 160)]
    drag(canvas, path)
    points, strokes = controller.corrections.layers
    (line,) = list(strokes.getFeatures())
    assert line["class"] == 2 and points.featureCount() == 0
    vertices = line.geometry().asPolyline()
    assert vertices[0].distance(map_point(canvas, path[0])) < 1e-6
    assert vertices[-1].distance(map_point(canvas, path[-1])) < 1e-6
    assert len(vertices) >= 3
    click(canvas, QPoint(300, 300))  # a point of class 2 far from the stroke
    assert controller.update_counts() == {2: 2}
    click(canvas, QPoint(400, 400), Qt.RightButton)  # nothing within a few pixels
    assert strokes.featureCount() == 1 and points.featureCount() == 1
    click(canvas, QPoint(162, 133), Qt.RightButton)  # near the stroke
    assert strokes.featureCount() == 0 and points.featureCount() == 1
    assert controller.panel.palette.item(1).text() == "2  road  (1)"


def test_delete_removes_the_correction_under_the_cursor(correcting):
    controller, canvas, _ = correcting
    click(canvas, QPoint(250, 250))
    points = controller.corrections.point_layer
    assert points.featureCount() == 1
    QTest.mouseMove(canvas.viewport(), QPoint(252, 251))
    QTest.keyClick(canvas, Qt.Key_Delete)
    assert points.featureCount() == 0


def test_undo_and_redo_go_through_the_edits_of_both_layers_in_order(correcting):
    controller, canvas, _ = correcting
    panel = controller.panel
    points, strokes = controller.corrections.layers
    click(canvas, QPoint(100, 100))
    panel.palette.select_code(3)
    drag(canvas, [QPoint(200, 200), QPoint(240, 240)])
    click(canvas, QPoint(300, 100))
    assert controller.update_counts() == {1: 1, 3: 2}
    assert panel.undo_button.isEnabled() and not panel.redo_button.isEnabled()
    panel.undo_button.click()  # the last point
    assert points.featureCount() == 1 and strokes.featureCount() == 1
    panel.undo_button.click()  # the stroke
    assert points.featureCount() == 1 and strokes.featureCount() == 0
    assert panel.palette.item(2).text() == "3  water  (0)"
    panel.redo_button.click()
    assert strokes.featureCount() == 1 and points.featureCount() == 1
    click(canvas, QPoint(120, 300), Qt.RightButton)  # nothing there: no edit, redo kept
    assert panel.redo_button.isEnabled()
    click(canvas, QPoint(100, 100), Qt.RightButton)  # removes the first point: a new edit
    assert points.featureCount() == 0 and not panel.redo_button.isEnabled()
    panel.undo_button.click()
    assert points.featureCount() == 1
    assert points.isEditable() and strokes.isEditable()


def test_edits_are_kept_on_disk_and_the_layer_is_reused(correcting, tmp_path):
    controller, canvas, layer = correcting
    click(canvas, QPoint(100, 100))
    drag(canvas, [QPoint(200, 200), QPoint(240, 240)])
    snapshot, written = write_snapshot(controller.corrections, tmp_path / "out")
    assert written == 2  # the edit buffer, not yet saved
    source = ogr.Open(str(snapshot))
    lyr = source.GetLayerByName(contract.CORRECTIONS_LAYER)
    kinds = sorted(f.GetGeometryRef().GetGeometryName() for f in lyr)
    assert kinds == ["LINESTRING", "POINT"]
    assert controller.close() == []
    saved = ogr.Open(str(controller.corrections.path))
    assert saved.GetLayerByName(contract.CORRECTIONS_LAYER).GetFeatureCount() == 2
    again = open_corrections(layer.source(), layer.crs(), CLASSES)
    assert again.layers == controller.corrections.layers  # the same layers, not new copies
    assert again.counts() == {1: 2}


def test_a_canvas_in_another_crs_stores_corrections_in_the_layers_crs(
    qgis_iface, qgis_new_project, tmp_path
):
    canvas = qgis_iface.mapCanvas()
    layer = class_map(tmp_path)
    show_on_canvas(canvas, [layer], crs="EPSG:3857")
    panel = CorrectionsPanel()
    controller = CorrectionsController(qgis_iface, panel, SessionClient(argv=["false"]))
    controller.set_map(MapContext(layer, layer.source(), "m.lovecs", CLASSES, tmp_path))
    panel.correct_button.setChecked(True)
    to_utm = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:3857"), layer.crs(), QgsProject.instance()
    )
    target = QgsPointXY(500030.0, 2799970.0)  # inside the map, in EPSG:32640
    pixel = pixel_of(canvas, to_utm.transform(target, QgsCoordinateTransform.ReverseTransform))
    click(canvas, pixel)
    points = controller.corrections.point_layer
    (feature,) = list(points.getFeatures())
    stored = feature.geometry().asPoint()
    assert points.crs().authid() == "EPSG:32640"
    assert stored.distance(to_utm.transform(map_point(canvas, pixel))) < 1e-3
    assert stored.distance(target) < 2 * canvas.mapUnitsPerPixel()  # metres, about a pixel
    assert 500000 < stored.x() < 500060 and 2799940 < stored.y() < 2800000
    click(canvas, pixel, Qt.RightButton)
    assert points.featureCount() == 0
    controller.set_correcting(False)
    points.rollBack()


def test_a_reference_layer_with_its_own_class_field(qgis_iface, qgis_new_project, tmp_path):
    canvas = qgis_iface.mapCanvas()
    layer = class_map(tmp_path)
    reference = QgsVectorLayer("Point?crs=EPSG:32640", "field work", "memory")
    reference.dataProvider().addAttributes(
        [QgsField("name", QVariant.String), QgsField("lc", QVariant.Int)]
    )
    reference.updateFields()
    QgsProject.instance().addMapLayer(reference)
    assert integer_fields(reference) == ["lc"]
    with pytest.raises(CorrectionsLayerError, match="no integer field 'name'"):
        reference_set(reference, "name")
    show_on_canvas(canvas, [reference, layer])
    panel = CorrectionsPanel()
    controller = CorrectionsController(qgis_iface, panel, SessionClient(argv=["false"]))
    controller.set_map(MapContext(layer, layer.source(), "m.lovecs", CLASSES, tmp_path))
    panel.reference_combo.setLayer(reference)
    panel.field_combo.setField("lc")
    assert controller.corrections.layers == [reference]
    assert controller.corrections.class_field == "lc" and controller.corrections.line_layer is None
    panel.correct_button.setChecked(True)
    panel.palette.select_code(2)
    click(canvas, QPoint(200, 200))
    assert [f["lc"] for f in reference.getFeatures()] == [2]
    assert reference.renderer().classAttribute() == "lc"
    drag(canvas, [QPoint(100, 100), QPoint(150, 150)])  # no line layer: said, nothing added
    assert reference.featureCount() == 1 and "no strokes" in panel.status_label.text()
    controller.set_correcting(False)


def test_accuracy_text():
    accuracy = {
        "source": {"correct": 54, "n": 76, "oa": 0.71, "ci": [0.6, 0.8]},
        "refined": {"correct": 67, "n": 76, "oa": 0.88, "ci": [0.79, 0.94]},
        "folds": 5,
    }
    assert accuracy_text(accuracy) == (
        "Source model: 71 % (54 of 76, 95 % CI 60–80 %); refined: 88 % (67 of 76, "
        "95 % CI 79–94 %) — 5-fold cross-validation on the places you corrected (not the map's "
        "accuracy: a random sample of points measures that)"
    )
    assert accuracy_text({}) == ""


def test_apply_to_the_whole_layer_waits_for_a_correction_then_sends_them(correcting):
    controller, canvas, _ = correcting
    panel = controller.panel
    assert not panel.apply_button.isEnabled()  # nothing to apply yet
    panel.palette.select_code(2)
    click(canvas, QPoint(120, 90))
    assert panel.apply_button.isEnabled()
    sent: list[tuple[str, str]] = []
    controller.applyRequested.connect(lambda points, field: sent.append((points, field)))
    panel.apply_button.click()
    ((points, field),) = sent
    assert field == contract.CORRECTIONS_CLASS_FIELD
    source = ogr.Open(points)  # kept: its layer dies with it
    lyr = source.GetLayerByName(contract.CORRECTIONS_LAYER)
    assert [f.GetField(field) for f in lyr] == [2]  # the click, on disk for the engine
