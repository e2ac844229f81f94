"""Faults injected where they are hard to cause for real: a disk that fills up while the map is
written or renamed, and a GPU that runs out of memory while mapping (simulated on the CPU)."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from osgeo import gdal

from lovecs_core.mapping import writer as writer_mod
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.rasters import outputs as outputfiles
from tests.core.helpers import write_geotiff

from .conftest import make_model, make_raster, snapshot, temporary_files


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["write", "flush", "overviews", "rename"])
def test_disk_full_while_writing_leaves_nothing_and_says_so(cli, tmp_path, monkeypatch, where):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    model = make_model(inputs, "good")
    raster = write_geotiff(
        inputs / "scene.tif",
        np.random.default_rng(0).integers(0, 255, (3, 300, 300)).astype(np.uint8),
    )  # large enough for overviews
    before = snapshot(inputs)
    if where == "write":  # GDAL reports a failed block write as a RuntimeError

        def write_array(self, *a, **k):
            raise RuntimeError("TIFFAppendToStrip:Write error at scanline 0")

        monkeypatch.setattr(gdal.Band, "WriteArray", write_array)
        # the message says nothing of space: the free space (here: "less than 1 PB") decides
        monkeypatch.setattr(outputfiles, "DISK_FULL_BYTES", 1024**5)
    elif where == "flush":
        monkeypatch.setattr(gdal.Dataset, "FlushCache", _enospc)
    elif where == "overviews":
        monkeypatch.setattr(
            gdal.Dataset,
            "BuildOverviews",
            lambda *a, **k: (_ for _ in ()).throw(RuntimeError("No space left on device")),
        )
    else:
        monkeypatch.setattr(writer_mod.os, "replace", _enospc)
    rc, log = cli(
        "predict",
        "--model",
        model,
        "--raster",
        raster,
        "--out",
        outputs / "map.tif",
        "--confidence",
        outputs / "conf.tif",
    )
    monkeypatch.undo()
    assert rc == 1
    assert "disk full: cannot write" in log and "free some space" in log
    assert list(outputs.iterdir()) == []  # neither the map, nor a .part file, nor its .aux.xml
    assert snapshot(inputs) == before


def test_output_made_a_folder_while_running_is_refused_at_commit(tmp_path, monkeypatch):
    """The final rename meets a folder (made by someone else during the run): the partial file
    goes, the folder stays, the error says what happened."""
    model = make_model(tmp_path, "good")
    raster = make_raster(tmp_path, "good")
    out = tmp_path / "map.tif"
    real_commit = writer_mod.StripWriter.commit

    def commit(self):
        if self.final == out:
            out.mkdir(exist_ok=True)
        return real_commit(self)

    monkeypatch.setattr(writer_mod.StripWriter, "commit", commit)
    with pytest.raises(OSError, match="is an existing folder"):
        predict_raster(str(model), raster, out, device="cpu")
    assert out.is_dir() and list(out.iterdir()) == []
    assert temporary_files(tmp_path) == []


def test_abort_removes_the_file_even_when_closing_fails(tmp_path, monkeypatch):
    w = writer_mod.StripWriter(tmp_path / "x.tif", 16, 16, 1, np.uint8, None, "", 0)
    w.write(0, np.ones((16, 16), np.uint8))
    monkeypatch.setattr(gdal.Dataset, "FlushCache", _enospc)
    w.abort()  # no exception
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_commit_is_not_marked_done(tmp_path, monkeypatch):
    w = writer_mod.StripWriter(tmp_path / "x.tif", 16, 16, 1, np.uint8, None, "", 0)
    w.write(0, np.ones((16, 16), np.uint8))
    w.finish()
    monkeypatch.setattr(writer_mod.os, "replace", _enospc)
    with pytest.raises(outputfiles.OutputError, match="disk full"):
        w.commit()
    monkeypatch.undo()
    w.abort()
    assert list(tmp_path.iterdir()) == []


# -- GPU out of memory ------------------------------------------------------------------------------


class OomAbove(torch.nn.Module):
    """Wraps a network and raises CUDA's out-of-memory error for batches above ``limit``."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_gpu_out_of_memory_while_mapping_halves_the_batch(tmp_path, caplog):
    from lovecs_core.model.networks import model_from_file

    model = make_model(tmp_path, "good")
    raster = tmp_path / "big.tif"
    write_geotiff(raster, np.random.default_rng(0).integers(0, 255, (3, 200, 200)).astype(np.uint8))
    card, net = model_from_file(str(model))
    reference = tmp_path / "reference.tif"
    predict_raster((card, net), raster, reference, device="cpu", batch_size=8, tile=32, overlap=8)
    flaky = OomAbove(net, limit=2)
    out = tmp_path / "map.tif"
    with caplog.at_level("WARNING"):
        predict_raster((card, flaky), raster, out, device="cpu", batch_size=8, tile=32, overlap=8)
    assert "out of GPU memory with 8 tiles per batch: going on with 4" in caplog.text
    assert "going on with 2" in caplog.text
    assert max(flaky.sizes[-5:]) <= 2  # the smaller batch is kept for the rest of the run
    a, b = gdal.Open(str(reference)), gdal.Open(str(out))
    assert np.array_equal(a.GetRasterBand(1).ReadAsArray(), b.GetRasterBand(1).ReadAsArray())


def test_gpu_out_of_memory_for_a_single_tile_is_a_clear_error(tmp_path):
    from lovecs_core.model.networks import model_from_file

    card, net = model_from_file(str(make_model(tmp_path, "good")))
    raster = make_raster(tmp_path, "good")
    out = tmp_path / "map.tif"
    with pytest.raises(RuntimeError, match="even for a single tile of 64 px.*--device cpu"):
        predict_raster((card, OomAbove(net, limit=0)), raster, out, device="cpu")
    assert not out.exists() and temporary_files(tmp_path) == []
