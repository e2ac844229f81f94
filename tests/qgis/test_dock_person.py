"""The dock as a person uses it (issue 23, problems 1-8): a real dock in a main window, driven
through its buttons, with a fake engine (tests/qgis/fake_engine.py) or synthetic engine events."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QMainWindow, QPushButton, QWidget

from lovecs_qgis import dock as dock_module
from lovecs_qgis.dock import LoveCSDock
from lovecs_qgis.events import EngineEvent, Status
from lovecs_qgis.task import EngineTask

from .conftest import wait_until

FAKE = Path(__file__).with_name("fake_engine.py")


BEHAVIOUR = {"now": "ok"}


class FakeEngineTask(EngineTask):
    """The dock's task, running the fake engine in the behaviour :func:`fake` chose."""

    def __init__(self, description, command, args, **kwargs) -> None:
        kwargs["argv"] = [sys.executable, str(FAKE), BEHAVIOUR["now"], command, *args]
        super().__init__(description, command, args, **kwargs)


@pytest.fixture
def dock(qgis_iface, qgis_data: Path, tmp_path: Path, scene_layer, monkeypatch) -> LoveCSDock:
    monkeypatch.setattr(dock_module, "EngineTask", FakeEngineTask)
    BEHAVIOUR["now"] = "ok"
    widget = LoveCSDock(qgis_iface)
    widget.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    widget.output_widget.setFilePath(str(tmp_path / "out"))
    widget.layer_combo.setLayer(scene_layer)
    return widget


def fake(dock: LoveCSDock, behaviour: str) -> None:
    BEHAVIOUR["now"] = behaviour


def run(dock: LoveCSDock, button: QPushButton) -> object:
    """Click ``button`` and wait for the run's outcome."""
    outcomes: list = []
    button.click()
    assert dock.task is not None, dock.log_view.toPlainText()
    dock.task.done.connect(outcomes.append)
    wait_until(lambda: bool(outcomes), timeout=60)
    QgsApplication.processEvents()
    return outcomes[0]


# -- 1. nothing pushed off-screen -------------------------------------------------------------------
def test_a_long_engine_message_does_not_widen_the_dock_or_the_main_window(dock):
    window = QMainWindow()
    window.setCentralWidget(QWidget())
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.resize(1200, 800)
    window.show()
    QgsApplication.processEvents()
    width, dock_width = window.width(), dock.width()
    words = "the engine says something rather long about /a/very/long/path " * 30
    token = "/data/" + "x" * 1500 + ".tif"
    dock.on_event(EngineEvent("progress", {"stage": "mapping", "fraction": 0.3, "message": words}))
    dock.on_event(EngineEvent("progress", {"stage": "mapping", "fraction": 0.4, "message": token}))
    dock.on_event(EngineEvent("log", {"message": f"WARNING lovecs_core.mapping: {words}{token}"}))
    dock.estimate_label.setText(token)
    dock.model_label.setText(token)
    dock.log_group.setCollapsed(False)
    for raw in (False, True):  # the log for people wraps; the engine's raw lines scroll sideways
        dock.show_raw_log(raw) if hasattr(dock, "show_raw_log") else None
        for _ in range(5):
            QgsApplication.processEvents()
        assert dock.minimumSizeHint().width() < 420
        assert window.width() <= width and dock.width() <= dock_width + 2
        assert dock.cancel_button.geometry().right() <= dock.width()
    dock.model_label.setText("LoveCS default: RGB land cover, 0.5 m, 5 classes — 3 bands")
    QgsApplication.processEvents()
    for label in (dock.model_label, dock.stage_label, dock.estimate_label):  # as tall as needed
        assert label.height() <= label.heightForWidth(label.width()) + 4, label.text()[:40]
    window.removeDockWidget(dock)


# -- 2. estimates from measurement ------------------------------------------------------------------
def test_the_estimate_before_a_run_scales_with_the_scene_and_the_preset(dock, qgis_data):
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData("fast"))
    small = dock.estimate_label.text()
    big = QgsRasterLayer(str(qgis_data / "big.tif"), "big")
    QgsProject.instance().addMapLayer(big)
    dock.layer_combo.setLayer(big)
    assert dock.estimate_label.text() != small and "0.6 MPix" in dock.estimate_label.text()
    fast = dock.estimate_label.text()
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData("paper"))
    assert dock.estimate_label.text() != fast


def test_time_left_comes_from_the_runs_own_pace(dock):
    """Events with their arrival times: "estimating…" until a few tiles were timed, then the
    extrapolation; the bar's percentage alone (elapsed x rest / done) is not used."""
    dock.status.begin("Classifying scene", {"starting": 10.0, "mapping": 1000.0}, {})
    dock.status.started = 0.0
    dock.on_event(EngineEvent("progress", {"stage": "mapping", "fraction": 0.0}, at=30.0))
    dock.status.tick(now=31.0)
    assert "estimating" in dock.time_label.text()
    for i in range(1, 6):  # 10 s per 1 % of the tiles
        dock.on_event(
            EngineEvent("progress", {"stage": "mapping", "fraction": i / 100}, 30.0 + 10 * i)
        )
    dock.status.tick(now=80.0)
    assert dock.time_label.text() == "elapsed 1 min 20 s, about 16 min left"  # 95 % x 10 s


# -- 3. "Use this model" stays ----------------------------------------------------------------------
def test_use_this_model_stays_until_the_user_acts_or_a_new_run_starts(dock, tmp_path):
    earlier = set(dock.iface.messageBar().items())  # the bar is shared by the session's tests
    outcome = run(dock, dock.adapt_button)
    assert outcome.status is Status.SUCCESS, outcome.error
    offer = next(
        i
        for i in dock.iface.messageBar().items()
        if i not in earlier
        and any(b.text() == "Use this model" for b in i.findChildren(QPushButton))
    )
    assert offer.duration() == 0  # no timeout: it waits for the user
    run(dock, dock.classify_button)
    assert offer not in dock.iface.messageBar().items()


# -- 4. distinct names ------------------------------------------------------------------------------
def test_plain_and_adapted_maps_and_repeated_runs_get_distinct_layer_names(dock):
    for button in (dock.classify_button, dock.adapt_button, dock.classify_button):
        assert run(dock, button).status is Status.SUCCESS
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    assert "scene — land cover (LoveCS)" in names
    assert "scene — adapted land cover (LoveCS)" in names
    assert "scene — land cover 2 (LoveCS)" in names
    assert len(names) == len(set(names))


# -- 5. cancel ------------------------------------------------------------------------------------
def test_cancel_is_not_a_failed_task_and_clears_the_time_left(dock):
    fake(dock, "long")
    dock.classify_button.click()
    task, ended, outcomes = dock.task, [], []
    task.taskCompleted.connect(lambda: ended.append("completed"))
    task.taskTerminated.connect(lambda: ended.append("terminated"))  # QGIS: "Task failed"
    task.done.connect(outcomes.append)
    wait_until(lambda: "5/10 tiles" in dock.stage_label.text(), timeout=60)
    dock.update_times()
    dock.cancel_button.click()
    wait_until(lambda: bool(outcomes) and bool(ended), timeout=60)
    assert outcomes[0].status is Status.CANCELLED
    assert ended == ["completed"]
    assert "left" not in dock.time_label.text() and "estimating" not in dock.time_label.text()
    assert dock.stage_label.text() == "Cancelled: nothing was written."


# -- 6. refused before the engine, said once -------------------------------------------------------
def test_a_band_out_of_range_is_refused_before_any_engine_starts(dock, tmp_path):
    dock.bands_edit.setText("3,2,9")
    assert dock.start("predict") is None and dock.task is None
    assert "band(s) [9] do not exist" in dock.log_view.toPlainText()
    # what only the engine refused before: the file's values (complex), read through GDAL
    from osgeo import gdal

    path = str(tmp_path / "complex.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 3, gdal.GDT_CFloat32)
    ds.SetGeoTransform((500000, 1, 0, 2800000, 0, -1))
    ds = None
    layer = QgsRasterLayer(path, "complex")
    QgsProject.instance().addMapLayer(layer)
    dock.layer_combo.setLayer(layer)
    dock.bands_edit.setText("")
    assert dock.start("predict") is None and dock.task is None
    assert "complex values" in dock.log_view.toPlainText()


def test_details_show_the_engines_error_once(dock):
    fake(dock, "fail")
    earlier = set(dock.iface.messageBar().items())  # the bar is shared by the session's tests
    outcome = run(dock, dock.classify_button)
    assert outcome.status is Status.FAILED
    shown: list[str] = []

    def close_modal() -> None:  # a modal box would block: read it and close it
        box = QApplication.activeModalWidget()
        if box is not None:
            shown.append(box.text() if hasattr(box, "text") else "")
            box.close()

    QTimer.singleShot(300, close_modal)
    (item,) = [i for i in dock.iface.messageBar().items() if i not in earlier]
    [b for b in item.findChildren(QPushButton) if b.text() == "Details"][0].click()
    QgsApplication.processEvents()
    if getattr(dock, "details", None) is not None:
        shown.append(dock.details.shown_text())
    assert shown and shown[0].count("band(s) [9] do not exist") == 1, shown
    assert "9] do not exist" in dock.stage_label.text()


# -- 7. wording -------------------------------------------------------------------------------------
def test_the_log_speaks_to_people_and_keeps_the_engine_lines_one_click_away(dock):
    raw = "INFO lovecs_core.mapping.predict: sensor alignment: 16-bit values scaled by 0.0039"
    dock.on_event(EngineEvent("log", {"message": raw}))
    dock.on_event(EngineEvent("log", {"message": "DEBUG lovecs_core.mapping: tile cache 64 MiB"}))
    note = "WARNING lovecs_core.cli.predict: scene_view.vrt holds uint16 values"
    dock.on_event(EngineEvent("log", {"message": note}))
    extra = {"round": 1, "rounds": 2, "iteration": 5, "iterations": 120}
    message = "round 1/2 iteration 5/120 loss 0.412"
    dock.on_event(EngineEvent("progress", {"stage": "training", "fraction": 0.04,
                                           "message": message, "extra": extra}))  # fmt: skip
    shown = dock.log_view.toPlainText()
    assert "INFO" not in shown and "lovecs_core" not in shown and "DEBUG" not in shown
    assert "Sensor alignment: 16-bit values scaled by 0.0039" in shown
    assert "Note: scene_view.vrt holds uint16 values" in shown
    assert "round 1/2: round 1/2" not in dock.stage_label.text()
    assert dock.stage_label.text().count("round 1/2") == 1
    dock.log_group.setCollapsed(False)
    assert dock.log_view.isVisibleTo(dock) and not dock.raw_view.isVisibleTo(dock)
    dock.raw_button.click()
    assert dock.raw_view.isVisibleTo(dock) and not dock.log_view.isVisibleTo(dock)
    assert raw in dock.raw_view.toPlainText() and "tile cache" in dock.raw_view.toPlainText()


def test_the_health_check_words_agree_with_its_numbers():
    from lovecs_qgis.wording import health_text

    health = dict(
        verdict="improved", agreement_confident=0.93, class_shift=0.04,
        confidence_before=0.82, confidence_after=0.81,
        class_confidence_before=0.70, class_confidence_after=0.76,
    )  # fmt: skip
    text = health_text({"health": health})
    assert "more confident per class (70 % → 76 %; all pixels 82 % → 81 %)" in text
    health.update(class_confidence_after=0.66)
    assert "less confident per class" in health_text({"health": health})


# -- 8. start-up ------------------------------------------------------------------------------------
def test_start_up_says_what_is_happening_before_the_first_progress(dock):
    fake(dock, "slow-start")
    seen: list[tuple[str, str, int]] = []

    def watch() -> None:
        seen.append((dock.stage_label.text(), dock.time_label.text(), dock.progress_bar.maximum()))

    timer = QTimer()
    timer.timeout.connect(watch)
    timer.start(50)
    assert run(dock, dock.classify_button).status is Status.SUCCESS
    timer.stop()
    stages = [s for s, _, _ in seen]
    loading = [i for i, s in enumerate(stages) if "loading PyTorch and the model" in s]
    mapping = [i for i, s in enumerate(stages) if s.startswith("Mapping the scene")]
    assert stages[0].endswith("starting the engine…") or loading
    assert loading and mapping and loading[-1] < mapping[0]
    assert all(m == 0 for _, _, m in seen[: loading[-1]])  # a busy bar, not a stuck 0 %
    assert any("estimating" in t for _, t, _ in seen[: loading[-1]])
