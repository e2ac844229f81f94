"""Fixtures for plugin tests (pytest-qgis): the registered provider, small rasters, tiny models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings

from lovecs_qgis.provider import PROVIDER_ID, LoveCSProvider
from tests.core.helpers import CLASSES, tiny_model_file, write_geotiff

_KEEP: list[LoveCSProvider] = []


@pytest.fixture(autouse=True)
def fresh_dock_settings(qgis_app) -> None:
    """Every test starts from the dock's defaults: a run saves the dock's choices (area, model,
    folder ...) in the test profile, and the next test's dock would start from them."""
    from lovecs_qgis.dock_form import SETTINGS

    QgsSettings().remove(SETTINGS.rstrip("/"))


@pytest.fixture
def lovecs_provider(qgis_app, qgis_processing) -> LoveCSProvider:
    """The ``lovecs`` provider, registered in the Processing registry if it is not already (plugin
    tests unload it)."""
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById(PROVIDER_ID)
    if provider is None:
        provider = LoveCSProvider()
        assert registry.addProvider(provider)
        _KEEP.append(provider)  # as a plugin keeps self.provider: the Python object must live
    return provider


@pytest.fixture(scope="session")
def qgis_data(tmp_path_factory) -> Path:
    """A folder with a tiny 3-band model, a 2-band model and small rasters."""
    folder = tmp_path_factory.mktemp("lovecs_qgis")
    tiny_model_file(folder / "tiny.lovecs", seed=1)
    tiny_model_file(folder / "tiny2.lovecs", bands=2)
    rng = np.random.default_rng(0)
    write_geotiff(folder / "scene.tif", rng.integers(0, 255, (3, 90, 110)).astype(np.uint8))
    write_geotiff(folder / "big.tif", rng.integers(0, 255, (3, 768, 768)).astype(np.uint8))
    return folder


@pytest.fixture
def scene_layer(qgis_data: Path, qgis_new_project) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(qgis_data / "scene.tif"), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


CLASS_NAMES = [c.name for c in CLASSES]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 120.0, what: str = "condition"
) -> None:
    """Run the Qt event loop until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f} s"
        QgsApplication.processEvents()
        time.sleep(0.01)
