"""The weak spots seen through ``qgis_process`` (headless QGIS), as batch users meet them."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from tests.core.helpers import write_geotiff
from tests.test_qgis_process import QGIS_PROCESS, qgis_process  # noqa: F401  (fixture)

from .conftest import make_model, make_raster, snapshot, temporary_files

pytestmark = pytest.mark.skipif(
    QGIS_PROCESS is None, reason="qgis_process.bin not found (apt install qgis)"
)


def test_float_raster_with_nan_and_inf(qgis_process, tmp_path):  # noqa: F811
    """No GDAL statistics error that looks like a failure, no .aux.xml beside the input, the
    NaN/inf pixels nodata in the map."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    a = np.random.default_rng(0).uniform(0, 255, (3, 90, 90))
    a[0, :10, :10] = np.nan
    a[1, 20:30, :10] = np.inf
    raster = write_geotiff(inputs / "float.tif", a.astype(np.float64))
    before = snapshot(inputs)
    out = tmp_path / "map.tif"
    proc = qgis_process(
        "run",
        "lovecs:classify",
        "--",
        f"INPUT={raster}",
        f"MODEL={make_model(tmp_path, 'good')}",
        "DEVICE=cpu",
        f"OUTPUT={out}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr
    assert snapshot(inputs) == before
    ds = gdal.Open(str(out))
    codes = ds.GetRasterBand(1).ReadAsArray()
    assert (codes[:10, :10] == 0).all() and (codes[20:30, :10] == 0).all()
    assert (codes[40:, 40:] > 0).all()


def test_model_file_without_the_lovecs_suffix(qgis_process, tmp_path):  # noqa: F811
    model = make_model(tmp_path, "good").rename(tmp_path / "model.bin")
    proc = qgis_process(
        "run",
        "lovecs:classify",
        "--",
        f"INPUT={make_raster(tmp_path, 'good')}",
        f"MODEL={model}",
        f"OUTPUT={tmp_path / 'map.tif'}",
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MODEL (Land-cover model)" in text and "is not a .lovecs file" in text


def test_raster_without_georeference_and_engine_errors_said_once(
    qgis_process,  # noqa: F811
    tmp_path,
):
    model = make_model(tmp_path, "good")
    raster = make_raster(tmp_path, "no_crs")
    out = tmp_path / "map.tif"
    proc = qgis_process(
        "run", "lovecs:classify", "--", f"INPUT={raster}", f"MODEL={model}", f"OUTPUT={out}"
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no coordinate reference system, so its pixel size is unknown" in text
    assert "NO_RESAMPLE=true" in text
    assert not out.exists() and temporary_files(tmp_path) == []
    # an error only the engine finds: no extra copy from the engine's own stderr
    proc = qgis_process(
        "run",
        "lovecs:classify",
        "--",
        f"INPUT={make_raster(tmp_path, 'good')}",
        f"MODEL={model}",
        "TILE_SIZE=32",
        "OVERLAP=30",
        "DEVICE=cpu",
        f"OUTPUT={out}",
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "lovecs predict: error:" not in text  # the engine's own line is gone ...
    # ... what is left is QGIS's report of a failed algorithm (log line, ERROR line, summary)
    assert proc.stderr.count("overlap must be between") <= 3, text
    assert "ERROR:\tLoveCS predict: overlap must be between" in proc.stderr
