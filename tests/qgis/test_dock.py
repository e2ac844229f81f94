"""Drive the real dock headless: pick a layer, press a button, wait for the task (Qt event loop)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

from lovecs_qgis.dock import LoveCSDock
from lovecs_qgis.events import Status
from lovecs_qgis.jobs import band_problem, free_path
from lovecs_qgis.wording import format_seconds

from .conftest import CLASS_NAMES, wait_until


@pytest.fixture
def dock(qgis_iface, qgis_data: Path, tmp_path: Path) -> LoveCSDock:
    widget = LoveCSDock(qgis_iface)
    widget.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    widget.output_widget.setFilePath(str(tmp_path / "out"))
    widget.confidence_check.setChecked(True)
    return widget


def run_to_end(dock: LoveCSDock, button) -> object:
    outcomes: list = []
    button.click()
    assert dock.task is not None, dock.log_view.toPlainText()
    dock.task.done.connect(outcomes.append)
    wait_until(lambda: bool(outcomes), timeout=300)
    QgsApplication.processEvents()
    return outcomes[0]


def layer_named(name: str) -> QgsRasterLayer:
    layers = QgsProject.instance().mapLayersByName(name)
    assert layers, (
        f"no layer {name!r} in {[l.name() for l in QgsProject.instance().mapLayers().values()]}"
    )
    return layers[0]


def test_classify_only_adds_a_styled_layer_on_top(dock, scene_layer, tmp_path):
    dock.layer_combo.setLayer(scene_layer)
    assert [dock.legend.item(i).text() for i in range(dock.legend.count())] == [
        f"{i + 1}  {n}" for i, n in enumerate(CLASS_NAMES)
    ]
    outcome = run_to_end(dock, dock.classify_button)
    assert outcome.status is Status.SUCCESS, outcome.error
    layer = layer_named("scene — land cover (LoveCS)")
    renderer = layer.renderer()
    assert renderer.type() == "paletted"
    assert [c.label for c in renderer.classes()] == CLASS_NAMES
    root = QgsProject.instance().layerTreeRoot()
    # on top: the map's corrections (a group, drawn above the map), then the map itself
    group, top = root.children()[0], root.children()[1]
    assert group.name() == "LoveCS corrections" and top.layer() is layer
    assert layer_named("scene — confidence (LoveCS)").isValid()
    assert (tmp_path / "out" / "scene_landcover.tif").is_file()
    assert (tmp_path / "out" / "scene_landcover.qml").is_file()
    assert "Done" in dock.stage_label.text() and dock.adapt_button.isEnabled()


def test_adapt_to_this_image_adds_the_map_and_saves_the_adapted_model(dock, scene_layer, tmp_path):
    dock.layer_combo.setLayer(scene_layer)
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData("fast"))
    outcome = run_to_end(dock, dock.adapt_button)
    assert outcome.status is Status.SUCCESS, outcome.error + outcome.log_tail
    adapted = tmp_path / "out" / "scene_adapted.lovecs"
    from lovecs_core.model.card import read_card

    card = read_card(adapted)
    improved = card.adaptation["health"]["verdict"] == "improved"
    kind = "adapted land cover" if improved else "land cover, safe result"
    layer = layer_named(f"scene — {kind} (LoveCS)")  # not the plain map's name
    assert [c.label for c in layer.renderer().classes()] == CLASS_NAMES
    if improved:
        assert card.default_domain == "target" and "target" in card.normalization
    else:  # the safe result: the aligned source model, the adapted one kept beside it
        assert card.default_domain == "source"
        assert (tmp_path / "out" / "scene_adapted.rejected.lovecs").is_file()
    assert "source data" in dock.log_view.toPlainText()  # the tiny model has none: said so
    assert "Health check:" in dock.log_view.toPlainText()  # the verdict, in plain words
    assert card.adaptation["health"]["verdict"].split()[-1] in dock.stage_label.text()


def harmful_adaptation(tmp_path: Path, scene: Path) -> dict:
    """A real run-away adaptation through the engine (a trained tiny model, a learning rate 1000x
    too high): its JSON result."""
    import json
    import subprocess
    import sys

    from tests.core.synthetic import (
        RUN_AWAY_ADAPT,
        SMALL_SAMPLE,
        tiny_train_args,
        write_classes,
        write_source,
    )

    images, labels = write_source(tmp_path / "src", n=2, size=96)
    model = tmp_path / "src.lovecs"
    engine = [sys.executable, "-m", "lovecs_core"]
    classes = write_classes(tmp_path / "c.json")
    train = tiny_train_args(images, labels, classes, model, *SMALL_SAMPLE)
    subprocess.run(engine + train, check=True, capture_output=True)
    adapt = [
        "--progress",
        "json",
        "adapt",
        "--model",
        str(model),
        "--target",
        str(scene),
        "--out",
        str(tmp_path / "a.lovecs"),
        "--map",
        str(tmp_path / "a.tif"),
        *RUN_AWAY_ADAPT,
    ]
    run = subprocess.run(engine + adapt, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_harmful_adaptation_gives_the_safe_map_and_a_way_to_keep_the_adapted_one(
    dock, scene_layer, qgis_data, tmp_path
):
    from qgis.PyQt.QtWidgets import QPushButton

    from lovecs_qgis.events import EngineOutcome

    result = harmful_adaptation(tmp_path, qgis_data / "scene.tif")
    assert result["health"]["verdict"] == "likely harmful" and result["rejected"]
    bar = dock.iface.messageBar()  # shared by the session's tests: look at new widgets only
    earlier = set(bar.findChildren(QPushButton))
    dock.layer_combo.setLayer(scene_layer)
    job = dock.prepare("adapt")
    job.map_path = Path(result["map"])
    dock.job = job
    dock.on_done(EngineOutcome(Status.SUCCESS, result=result, seconds=1.0))
    text = dock.log_view.toPlainText()
    assert "Health check: likely harmful" in text and result["rejected"] in text
    assert "likely harmful" in dock.stage_label.text()
    buttons = {b.text(): b for b in bar.findChildren(QPushButton) if b not in earlier}
    assert "Keep adapted model anyway" in buttons and "Use this model" not in buttons
    outcomes: list = []
    buttons["Keep adapted model anyway"].click()
    assert dock.task is not None and dock.model_widget.filePath() == result["rejected"]
    dock.task.done.connect(outcomes.append)
    wait_until(lambda: bool(outcomes), timeout=300)
    assert outcomes[0].status is Status.SUCCESS, outcomes[0].error
    assert dock.job.map_path.is_file()


def test_cancel_mid_run_stops_the_child_and_leaves_nothing(dock, qgis_data, tmp_path):
    big = QgsRasterLayer(str(qgis_data / "big.tif"), "big")
    QgsProject.instance().addMapLayer(big)
    dock.layer_combo.setLayer(big)
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData("paper"))  # long
    outcomes: list = []
    dock.adapt_button.click()
    task = dock.task
    assert task is not None
    task.done.connect(outcomes.append)
    wait_until(
        lambda: (
            task.process is not None
            and task.process.pid is not None
            and "training" in dock.stage_label.text()
        ),
        timeout=120,
    )
    pid = task.process.pid
    assert dock.cancel_button.isEnabled()
    dock.cancel_button.click()
    wait_until(lambda: bool(outcomes), timeout=60)
    assert outcomes[0].status is Status.CANCELLED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    leftovers = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not [n for n in leftovers if n.endswith((".tif", ".lovecs", ".part"))], leftovers
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    assert not [n for n in names if n.startswith("big — ")], names
    assert "Cancelled" in dock.stage_label.text()


def test_band_mismatch_gives_a_clear_message_and_no_task(dock, scene_layer, qgis_data):
    dock.model_widget.setFilePath(str(qgis_data / "tiny2.lovecs"))
    dock.layer_combo.setLayer(scene_layer)
    dock.bands_edit.setText("")
    assert dock.start("adapt") is None and dock.task is None
    assert "expects 2 band(s)" in dock.log_view.toPlainText()
    dock.bands_edit.setText("3,1")
    assert band_problem(dock.card, scene_layer.name(), scene_layer.bandCount(), 3, "3,1") == ""


def test_settings_persist_between_docks(qgis_iface, qgis_data, tmp_path):
    first = LoveCSDock(qgis_iface)
    first.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    first.preset_combo.setCurrentIndex(first.preset_combo.findData("standard"))
    first.output_widget.setFilePath(str(tmp_path / "kept"))
    first.save_settings()
    second = LoveCSDock(qgis_iface)
    assert second.preset_combo.currentData() == "standard"
    assert second.output_widget.filePath() == str(tmp_path / "kept")
    assert second.model_widget.filePath() == str(qgis_data / "tiny.lovecs")


def test_small_helpers(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    assert free_path(tmp_path, "a", ".tif").name == "a_2.tif"
    assert format_seconds(59) == "59 s" and format_seconds(125) == "2 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"
