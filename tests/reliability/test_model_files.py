"""Model files nested past any sense (a card, or the safetensors header itself, 100,000 levels
deep): one clear line through the command line and Processing, never Python's RecursionError."""

from __future__ import annotations

import pytest
from qgis.core import QgsProcessingException

from lovecs_qgis.algorithms import base

from .conftest import make_model, make_raster, run_engine, snapshot

CASES = [
    ("deep_card", "model card is not valid JSON (the model card is nested more than 64 levels"),
    ("deep_header", "is not a LoveCS model file (safetensors header unreadable: the header is"),
]


@pytest.mark.parametrize("kind,text", CASES, ids=[k for k, _ in CASES])
def test_deeply_nested_model_file_is_one_line(tmp_path, kind, text):
    model = make_model(tmp_path, kind)
    raster = make_raster(tmp_path, "good")
    before = snapshot(tmp_path)
    for args in (
        ["predict", "--model", model, "--raster", raster, "--out", tmp_path / "map.tif"],
        ["info", model],
    ):
        proc = run_engine(*args)
        assert proc.returncode == 1
        assert text in proc.stderr
        assert "Recursion" not in proc.stderr and "Traceback" not in proc.stderr
        assert "maximum recursion depth" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind,text", CASES, ids=[k for k, _ in CASES])
def test_deeply_nested_model_file_in_processing(tmp_path, kind, text):
    with pytest.raises(QgsProcessingException) as err:
        base.read_model_card(str(make_model(tmp_path, kind)))
    assert text in str(err.value) and "\n" not in str(err.value)
