"""The optional "Ray cluster address" (issue 11): an advanced Processing parameter and a dock field,
empty by default (one process, no Ray), handed to the engine as ``--ray``; with ``local`` the
Processing algorithm maps through a Ray cluster started by the engine, and the map is the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingParameterDefinition

from lovecs_qgis.algorithms import ClassifyAlgorithm
from lovecs_qgis.dock import LoveCSDock
from lovecs_qgis.jobs import JobRequest, build_job
from tests.core.helpers import tiny_card


def test_classify_has_an_optional_advanced_ray_address(lovecs_provider):
    algorithm = ClassifyAlgorithm()
    algorithm.initAlgorithm()
    param = algorithm.parameterDefinition("RAY_ADDRESS")
    assert param is not None and not param.defaultValue()
    assert param.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert param.flags() & QgsProcessingParameterDefinition.FlagAdvanced


def test_dock_jobs_pass_the_address_to_predict_only(tmp_path: Path):
    card = tiny_card()
    base = dict(layer_name="s", raster="s.tif", band_count=3, data_band_count=3, model="m")
    job = build_job(JobRequest("predict", folder=tmp_path, ray=" auto ", **base), card)
    assert job.args[job.args.index("--ray") + 1] == "auto"
    assert "--ray" not in build_job(JobRequest("predict", folder=tmp_path, **base), card).args
    adapt = build_job(JobRequest("adapt", folder=tmp_path, ray="auto", **base), card)
    assert "--ray" not in adapt.args  # adaptation maps in its own process


def test_dock_keeps_the_address_between_sessions(qgis_iface):
    first = LoveCSDock(qgis_iface)
    assert first.ray_edit.text() == ""  # the default: this computer, no Ray
    try:
        first.ray_edit.setText("10.0.0.5:6379")
        first.save_settings()
        assert LoveCSDock(qgis_iface).ray_edit.text() == "10.0.0.5:6379"
    finally:  # the other dock tests map in one process
        first.ray_edit.setText("")
        first.save_settings()


def test_classify_on_a_local_ray_cluster_gives_the_same_map(
    lovecs_provider, qgis_data, scene_layer, tmp_path, monkeypatch
):
    pytest.importorskip("ray", reason="the engine's Python has no Ray (make setup installs it)")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per forward pass, as each worker
    # Ray's own default would write a token to ~/.ray/auth_token, even more so when RAY_AUTH_MODE
    # was left in the environment: the engine keeps it in its environment instead
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    maps = {}
    for name, address in (("one", ""), ("ray", "local")):
        out = tmp_path / f"{name}.tif"
        processing.run(
            "lovecs:classify",
            {
                "INPUT": scene_layer,
                "MODEL": str(qgis_data / "tiny.lovecs"),
                "DEVICE": "cpu",
                "RAY_ADDRESS": address,
                "OUTPUT": str(out),
            },
        )
        maps[name] = gdal.Open(str(out)).ReadAsArray()
    assert maps["one"].shape == (90, 110) and len(np.unique(maps["one"])) >= 2
    assert np.array_equal(maps["one"], maps["ray"])
    assert not (tmp_path / "home" / ".ray").exists()
