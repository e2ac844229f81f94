"""The refine session's client against a fake engine speaking the session protocol, and the
"Correct the map" section driving it: refine with unsaved corrections, the map reloaded in
place, a killed engine restarted (the panel says so), cancel."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from qgis.core import QgsRasterLayer
from qgis.PyQt.QtCore import QPoint

from lovecs_qgis.corrections.controller import CorrectionsController, MapContext
from lovecs_qgis.corrections.panel import CorrectionsPanel
from lovecs_qgis.dock import LoveCSDock
from lovecs_qgis.engine import contract
from lovecs_qgis.session import SessionClient, SessionError
from tests.core.helpers import CLASSES

from .conftest import wait_until
from .corrections_helpers import class_map, click, fake_engine, map_value, show_on_canvas


def requests(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def test_one_request_at_a_time_and_replies_in_order(tmp_path, qgis_app):
    argv, log = fake_engine(tmp_path)
    client = SessionClient(argv=argv)
    replies: list = []
    client.replied.connect(replies.append)
    with pytest.raises(SessionError, match="takes no colour"):
        client.request(contract.OPEN, model="m", colour="red")
    with pytest.raises(SessionError, match="unknown session request"):
        client.request("paint")
    first = client.request(contract.OPEN, model="m.lovecs", device="cpu")
    second = client.request(contract.SAVE, out=str(tmp_path / "x.lovecs"))
    assert client.busy
    wait_until(lambda: len(replies) == 2, timeout=60, what="two replies")
    assert [(r.id, r.request, r.ok) for r in replies] == [
        (first, contract.OPEN, True),
        (second, contract.SAVE, True),
    ]
    assert replies[1].data["out"] == str(tmp_path / "x.lovecs")
    assert [r["request"] for r in requests(log)] == [contract.OPEN, contract.SAVE]
    assert not client.busy
    client.stop_now()
    assert not client.running


@pytest.fixture
def section(qgis_iface, qgis_new_project, tmp_path):
    """A class map on the canvas, a panel whose session runs the fake engine (slow refines when
    the test's parameter says so)."""

    def make(slow: float = 0.0):
        argv, log = fake_engine(tmp_path, slow)
        canvas = qgis_iface.mapCanvas()
        layer = class_map(tmp_path)
        show_on_canvas(canvas, [layer])
        panel = CorrectionsPanel()
        controller = CorrectionsController(qgis_iface, panel, SessionClient(argv=argv))
        raster = tmp_path / "scene.tif"
        controller.set_map(
            MapContext(layer, str(raster), "m.lovecs", CLASSES, tmp_path / "out", [3, 2, 1])
        )
        panel.correct_button.setChecked(True)
        made.append(controller)
        return controller, canvas, layer, log

    made: list[CorrectionsController] = []
    yield make
    for controller in made:
        controller.session.stop_now()
        controller.set_correcting(False)
        for lyr in controller.corrections.layers if controller.corrections else []:
            lyr.rollBack()


def wait_reply(controller, request: str, timeout: float = 60.0):
    seen: list = []
    controller.session.replied.connect(lambda r: seen.append(r) if r.request == request else None)
    wait_until(lambda: bool(seen), timeout=timeout, what=f"{request} reply")
    return seen[-1]


def test_refine_sends_the_unsaved_corrections_and_reloads_the_map(section, tmp_path):
    controller, canvas, layer, log = section()
    panel = controller.panel
    assert controller.refine() is None and "first" in panel.status_label.text()
    panel.palette.select_code(3)
    click(canvas, QPoint(200, 200))
    click(canvas, QPoint(250, 220))
    assert controller.corrections.point_layer.isModified()  # not saved: in the edit buffer
    repaints: list = []
    layer.repaintRequested.connect(lambda *_: repaints.append(1))
    panel.refine_button.click()
    assert not panel.refine_button.isEnabled() and panel.cancel_button.isEnabled()
    reply = wait_reply(controller, contract.REFINE)
    assert reply.ok, reply.error
    sent = requests(log)
    assert [r["request"] for r in sent] == [contract.OPEN, contract.VIEW, contract.REFINE]
    assert sent[1]["bands"] == [3, 2, 1] and sent[1]["map"] == layer.source()
    refine = sent[2]
    assert refine["class_field"] == contract.CORRECTIONS_CLASS_FIELD
    assert Path(refine["points"]).parent == tmp_path / "out"
    assert map_value(Path(layer.source())) == 3  # the fake engine painted class 3
    assert layer.dataProvider().sample(layer.extent().center(), 1)[0] == 3  # reloaded
    assert repaints
    assert "Source model: 25 %" in panel.accuracy_label.text()
    assert "refined: 75 %" in panel.accuracy_label.text()
    assert "outside the view" in panel.problems_label.text()
    assert "refined" in panel.status_label.text() and panel.refine_button.isEnabled()
    panel.undo_refine_button.click()
    assert wait_reply(controller, contract.UNDO).ok
    assert layer.dataProvider().sample(layer.extent().center(), 1)[0] == 1
    assert [r["request"] for r in requests(log)][-1] == contract.UNDO  # no second open/view
    panel.saveRequested.emit(str(tmp_path / "refined.lovecs"))
    assert wait_reply(controller, contract.SAVE).ok
    assert (tmp_path / "refined.lovecs").is_file()
    assert "saved" in panel.status_label.text()


def test_a_killed_engine_is_reported_and_restarted_with_the_last_open_and_view(section):
    controller, canvas, layer, log = section()
    panel = controller.panel
    click(canvas, QPoint(200, 200))
    controller.refine()
    assert wait_reply(controller, contract.REFINE).ok
    pid = controller.session.pid
    died: list = []
    controller.session.died.connect(died.append)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: bool(died), timeout=30, what="the death notice")
    assert "crashed or was killed" in died[0] and "restarts" in died[0]
    assert "killed" in panel.status_label.text()
    assert not controller.session.running
    panel.reset_button.click()
    reply = wait_reply(controller, contract.RESET)
    assert reply.ok and controller.session.pid != pid and controller.session.restarts == 1
    kinds = [r["request"] for r in requests(log)]
    assert kinds == [contract.OPEN, contract.VIEW, contract.REFINE] + [
        contract.OPEN,
        contract.VIEW,
        contract.RESET,
    ]
    assert "source model" in panel.status_label.text()


def test_cancel_kills_a_long_refine_and_the_next_request_restarts(section):
    controller, canvas, layer, log = section(slow=60.0)
    panel = controller.panel
    click(canvas, QPoint(200, 200))
    controller.refine()
    wait_until(lambda: "training" in panel.status_label.text(), timeout=60, what="progress")
    pid = controller.session.pid
    failed: list = []
    controller.session.replied.connect(failed.append)
    panel.cancel_button.click()
    assert failed and not failed[0].ok and failed[0].error == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "cancelled" in panel.status_label.text() and panel.refine_button.isEnabled()
    assert map_value(Path(layer.source())) == 1  # nothing written
    panel.undo_refine_button.click()  # restarts: open and view again first
    assert wait_reply(controller, contract.UNDO).ok
    kinds = [r["request"] for r in requests(log)]
    assert kinds[-3:] == [contract.OPEN, contract.VIEW, contract.UNDO]


def test_the_dock_enables_the_section_once_a_map_exists_and_stays_narrow(
    qgis_iface, qgis_new_project, qgis_data, tmp_path
):
    from lovecs_qgis.events import EngineOutcome, Status

    argv, _ = fake_engine(tmp_path)
    dock = LoveCSDock(qgis_iface, session=SessionClient(argv=argv))
    dock.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    scene = QgsRasterLayer(str(qgis_data / "scene.tif"), "scene")
    from qgis.core import QgsProject

    QgsProject.instance().addMapLayer(scene)
    dock.layer_combo.setLayer(scene)
    assert not dock.corrections_panel.isEnabled()
    job = dock.prepare("predict")
    class_map(tmp_path / "out", "scene_landcover")  # what the engine would have written
    dock.job = job
    dock.on_done(EngineOutcome(Status.SUCCESS, result={}, seconds=1.0))
    panel = dock.corrections_panel
    assert panel.isEnabled() and panel.palette.count() == 3
    assert dock.corrections.context.raster == str(qgis_data / "scene.tif")
    assert contract.corrections_path(job.map_path).is_file()
    # the form above already needs about 416 px; the section (wrapped text, long buttons one a
    # row) is narrower, so it makes the dock no wider (two columns of buttons made it 455)
    assert panel.minimumSizeHint().width() <= 300, panel.minimumSizeHint()
    assert dock.minimumSizeHint().width() <= 430, dock.minimumSizeHint()
    dock.close()
    assert not dock.corrections.session.running


ENGINE_SESSION = Path(__file__).resolve().parents[2] / "lovecs_core" / "refinement" / "session.py"


@pytest.mark.skipif(not ENGINE_SESSION.is_file(), reason="the engine's session is not there yet")
def test_refine_with_the_real_engine_and_a_tiny_model(
    qgis_iface, qgis_new_project, qgis_data, tmp_path
):
    import sys

    canvas = qgis_iface.mapCanvas()
    layer = class_map(tmp_path, "scene_landcover")
    show_on_canvas(canvas, [layer])
    panel = CorrectionsPanel()
    controller = CorrectionsController(qgis_iface, panel, SessionClient(python=sys.executable))
    controller.set_map(
        MapContext(
            layer, str(qgis_data / "scene.tif"), str(qgis_data / "tiny.lovecs"), CLASSES, tmp_path
        )
    )
    panel.correct_button.setChecked(True)
    for code, pixels in ((2, [(150, 150), (180, 170), (210, 160)]), (3, [(400, 400), (420, 430)])):
        panel.palette.select_code(code)
        for x, y in pixels:
            click(canvas, QPoint(x, y))
    assert controller.update_counts() == {2: 3, 3: 2}
    try:
        controller.refine()
        reply = wait_reply(controller, contract.REFINE, timeout=300)
        assert reply.ok, reply.error + controller.session.log_tail(20)
        assert reply.data["corrections"]["features"] == 5
        refined = QgsRasterLayer(layer.source(), "check")
        assert refined.width() == 110 and refined.height() == 90  # the view's map, reloaded
        assert layer.width() == 110
        assert panel.accuracy_label.text() or reply.data.get("accuracy") in (None, {})
    finally:
        controller.close()
