"""The dock's "Apply to the whole layer": the scene adapted with the user's corrections, which
judge the delivered model (``lovecs adapt --points``), through the real engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import QgsApplication

from lovecs_core.model.card import read_card
from lovecs_core.rasters.corrections import pixel_centres, write_points
from lovecs_qgis.dock import LoveCSDock
from lovecs_qgis.engine import contract
from lovecs_qgis.events import Status

from .conftest import wait_until


def test_apply_adapts_the_layer_and_the_corrections_judge(
    qgis_iface, qgis_data: Path, scene_layer, tmp_path: Path
):
    dock = LoveCSDock(qgis_iface)
    dock.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    dock.layer_combo.setLayer(scene_layer)
    dock.preset_combo.setCurrentIndex(dock.preset_combo.findData("fast"))
    grid = gdal.Open(str(qgis_data / "scene.tif"))
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 90, 12), rng.integers(0, 110, 12)
    points = write_points(
        tmp_path / "clicks.gpkg", pixel_centres(grid, rows, cols), [1, 2, 3] * 4,
        grid.GetProjection(),
    )  # fmt: skip
    task = dock.apply_corrections(str(points), contract.CORRECTIONS_CLASS_FIELD)
    assert task is not None, dock.log_view.toPlainText()
    outcomes: list = []
    task.done.connect(outcomes.append)
    wait_until(lambda: bool(outcomes), timeout=600)
    QgsApplication.processEvents()
    assert outcomes[0].status is Status.SUCCESS, outcomes[0].error
    card = read_card(tmp_path / "out" / "scene_adapted.lovecs")
    record = card.adaptation["corrections"]
    assert record["source"]["refined"]["n"] == 12 and record["delivered"] in (
        "adapted model",
        "source model",
    )
    assert card.provenance["refinement"]["corrections"]["features"] == 12
    log = dock.log_view.toPlainText()  # the dock says the corrections judged, and their lean
    assert "Why: judged on the corrections: " in log and "random sample" in log, log
