from pathlib import Path

import numpy as np
import torch
from osgeo import gdal

from lovecs_core.mapping import resample
from lovecs_core.mapping.predict import predict_raster
from tests.core.helpers import tiny_model_file, write_geotiff


def _outputs(tmp_path: Path, raster: Path, model: Path, name: str) -> list[np.ndarray]:
    r = predict_raster(
        model,
        raster,
        tmp_path / f"{name}.tif",
        tile=32,
        overlap=8,
        confidence=tmp_path / f"{name}c.tif",
        probabilities=tmp_path / f"{name}p.tif",
    )
    assert r.resampled
    return [gdal.Open(str(p)).ReadAsArray() for p in (r.output, r.confidence, r.probabilities)]


def test_masked_copy_back_in_narrow_windows_gives_the_same_files(tmp_path: Path, monkeypatch):
    """The copy onto the input grid goes window by window (memory independent of the width):
    windows of one block give the same map, confidence and probabilities as wide ones."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    data = rng.integers(1, 256, (3, 300, 700)).astype(np.uint8)
    data[:, 100:140, 500:650] = 0  # nodata inside the raster
    raster = write_geotiff(tmp_path / "r.tif", data, gsd=1.0, nodata=0)
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=2.0)
    wide = _outputs(tmp_path, raster, model, "wide")
    monkeypatch.setattr(resample, "COPY_COLUMNS", resample.BLOCK)
    windows = []
    real = resample._copy_window
    monkeypatch.setattr(
        resample, "_copy_window", lambda d, s, wr, w: (windows.append(w), real(d, s, wr, w))
    )
    narrow = _outputs(tmp_path, raster, model, "narrow")
    assert {w.xsize for w in windows} == {256, 700 - 512} and len(windows) == 3 * 2
    for a, b in zip(wide, narrow):
        assert (a == b).all()
    assert (narrow[0][100:140, 500:650] == 0).all() and (narrow[0][:100] > 0).all()
