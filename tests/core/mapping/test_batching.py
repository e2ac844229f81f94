from pathlib import Path

import numpy as np
import torch
from osgeo import gdal

from lovecs_core.mapping.predict import CPU_BATCH, GPU_BATCH, default_batch_size, predict_raster
from lovecs_core.model.networks import build_model
from tests.core.helpers import tiny_card, write_geotiff


def test_cpu_maps_one_tile_per_forward_by_default_with_the_same_result(tmp_path: Path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    card = tiny_card()
    net = build_model(card).eval()
    sizes: list[int] = []
    net.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    data = np.random.default_rng(5).integers(1, 256, (3, 120, 150)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    one = predict_raster((card, net), raster, tmp_path / "a.tif", tile=32, overlap=8, device="cpu")
    assert set(sizes) == {CPU_BATCH} == {1}
    sizes.clear()
    four = predict_raster(
        (card, net), raster, tmp_path / "b.tif", tile=32, overlap=8, device="cpu", batch_size=4
    )
    assert max(sizes) == 4 and one.tiles_total == four.tiles_total
    a, b = (gdal.Open(str(p)).ReadAsArray() for p in (one.output, four.output))
    assert (a == b).all()
    assert default_batch_size(torch.device("cpu")) == 1
    assert default_batch_size(torch.device("cuda", 0)) == GPU_BATCH == 4


def test_predict_raster_is_float32_unless_asked_and_keeps_the_memory_format(tmp_path: Path):
    from lovecs_core.compute.runtime import cpu_bf16_supported

    torch.set_num_threads(1)
    torch.manual_seed(1)
    card = tiny_card()
    net = build_model(card).eval()
    dtypes: list[torch.dtype] = []
    net.register_forward_hook(lambda module, inputs, out: dtypes.append(out.dtype))
    data = np.random.default_rng(6).integers(1, 256, (3, 100, 100)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    exact = predict_raster((card, net), raster, tmp_path / "a.tif", tile=32, overlap=8)
    assert set(dtypes) == {torch.float32}  # the default: float32, channels_last (same sums)
    assert all(p.is_contiguous() for p in net.parameters())  # restored after the run
    if not cpu_bf16_supported():
        return
    dtypes.clear()
    fast = predict_raster(
        (card, net), raster, tmp_path / "b.tif", tile=32, overlap=8, cpu_bf16=True
    )
    assert set(dtypes) == {torch.bfloat16}
    assert (exact.precision, fast.precision) == ("float32", "bfloat16")
    a, b = (gdal.Open(str(p)).ReadAsArray() for p in (exact.output, fast.output))
    assert (a == b).mean() >= 0.99


def test_cli_maps_in_bf16_by_default_and_float32_with_no_amp(tmp_path: Path, monkeypatch):
    import lovecs_core.mapping.predict as predict_module
    from lovecs_core.cli.main import main
    from tests.core.helpers import tiny_model_file

    calls: list[dict] = []
    original = predict_module.predict_raster

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_raster", recording)
    model = tiny_model_file(tmp_path / "m.lovecs")
    data = np.random.default_rng(7).integers(1, 256, (3, 64, 64)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    for flag, out in (([], "a.tif"), (["--no-amp"], "b.tif")):
        argv = ["predict", "--model", str(model), "--raster", str(raster), "--out"]
        assert main([*argv, str(tmp_path / out), "--device", "cpu", *flag]) == 0
        assert (tmp_path / out).is_file()
    assert [(c["cpu_bf16"], c["amp"]) for c in calls] == [(True, True), (False, False)]
    assert all(c["batch_size"] is None for c in calls)  # the device's default
