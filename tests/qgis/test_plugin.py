"""The plugin loads like QGIS loads it; the provider and its algorithms register; metadata."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from qgis.core import QgsApplication, QgsProject

import lovecs_qgis
from lovecs_qgis.plugin import DIALOG_ENTRIES, LoveCSPlugin
from lovecs_qgis.provider import PROVIDER_ID, PROVIDER_NAME

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(lovecs_qgis.__file__).parent


def test_class_factory_init_gui_and_unload(qgis_app, qgis_iface, qgis_processing):
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById(PROVIDER_ID)
    if existing is not None:  # registered by another test's fixture: start clean
        registry.removeProvider(existing)
    plugin = lovecs_qgis.classFactory(qgis_iface)
    assert isinstance(plugin, LoveCSPlugin)
    plugin.initGui()
    try:
        provider = registry.providerById(PROVIDER_ID)
        assert provider is not None and provider.name() == PROVIDER_NAME
        assert not provider.icon().isNull()
        assert provider.supportedOutputRasterLayerExtensions() == ["tif"]
        ids = sorted(a.id() for a in provider.algorithms())
        assert ids == [
            "lovecs:adapt",
            "lovecs:classify",
            "lovecs:evaluate",
            "lovecs:evaluatepoints",
            "lovecs:refine",
            "lovecs:trainsource",
        ]
        classify = registry.algorithmById("lovecs:classify")
        assert classify.displayName() == "Classify raster with a land-cover model"
        names = [p.name() for p in classify.parameterDefinitions()]
        assert names == [
            "INPUT",
            "MODEL",
            "EXTENT",
            "GSD",
            "BANDS",
            "DEVICE",
            "TILE_SIZE",
            "OVERLAP",
            "NO_RESAMPLE",
            "RAY_ADDRESS",
            "TONE",
            "OUTPUT",
            "CONFIDENCE",
        ]
        for alg in provider.algorithms():  # runs in a background thread in the GUI
            assert not alg.flags() & alg.FlagNoThreading, alg.id()
        assert len(plugin.actions) == 1 + len(DIALOG_ENTRIES)
        assert plugin.main_action.text() == "LoveCS land cover panel"
        assert not plugin.main_action.icon().isNull()
        plugin.main_action.trigger()  # the toolbar button toggles the dock
        assert plugin.dock is not None and not plugin.dock.isHidden()
        assert plugin.dock.adapt_button.text() == "Adapt to this image"
        plugin.main_action.trigger()
        assert plugin.dock.isHidden()
    finally:
        plugin.unload()
    assert registry.providerById(PROVIDER_ID) is None
    assert plugin.actions == [] and plugin.main_action is None and plugin.dock is None


def test_init_processing_alone_registers_the_provider_once(qgis_app, qgis_iface, qgis_processing):
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById(PROVIDER_ID)
    if existing is not None:
        registry.removeProvider(existing)
    plugin = LoveCSPlugin(qgis_iface)
    plugin.initProcessing()  # what qgis_process calls
    plugin.initProcessing()
    assert len([p for p in registry.providers() if p.id() == PROVIDER_ID]) == 1
    plugin.unload()
    assert registry.providerById(PROVIDER_ID) is None


def test_dialog_presets_use_the_active_raster_layer(qgis_iface, scene_layer):
    plugin = LoveCSPlugin(qgis_iface)
    qgis_iface.setActiveLayer(scene_layer)
    assert plugin.initial_parameters("classify") == {"INPUT": scene_layer.id()}
    assert plugin.initial_parameters("evaluate") == {"PREDICTION": scene_layer.id()}
    assert plugin.initial_parameters("trainsource") == {}
    QgsProject.instance().removeMapLayer(scene_layer.id())


def test_metadata():
    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    assert general["name"] == "LoveCS land cover"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    for key in ("description", "about", "version", "author", "tags", "category", "icon"):
        assert general[key].strip(), key
    for key in ("homepage", "repository", "tracker"):  # plugins.qgis.org requires them
        assert general[key].startswith("https://"), key
    assert (ROOT / general["icon"]).is_file()


def test_importing_the_plugin_never_loads_torch():
    """QGIS's own process stays free of torch: the plugin imports only torch-free engine modules
    (card, QML, presets...) and runs the rest in a child process."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import lovecs_qgis
        names = [m.name for m in pkgutil.walk_packages(lovecs_qgis.__path__, "lovecs_qgis.")]
        for name in names:
            importlib.import_module(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       {"torch", "torchvision", "segmentation_models_pytorch", "safetensors"})
        print(len(names), heavy)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    count, heavy = proc.stdout.split(" ", 1)
    assert int(count) >= 10 and heavy.strip() == "[]"
