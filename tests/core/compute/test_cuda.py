"""The CUDA branches on a real GPU (marked ``cuda``, skipped without one; ``make gpu-check`` runs
them first): the device picker, mixed precision in mapping and training, and a real
out-of-memory recovery (the process's GPU memory capped so a batch does not fit): the batch is
halved, and the map is the one the smaller batch gives without the cap, pixel for pixel."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from osgeo import gdal

from lovecs_core.compute.device import DeviceError, device_choices, list_devices, resolve_device
from lovecs_core.compute.oom import OutOfGpuMemory
from lovecs_core.compute.runtime import autocast, grad_scaler
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.networks import model_from_file
from tests.core.helpers import write_geotiff

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MODEL = Path(__file__).resolve().parents[3] / "resources" / "models" / "default.lovecs"
TILE = 512
BATCH = 8


@pytest.fixture(scope="module")
def raster(tmp_path_factory) -> Path:
    """1024 px square at the bundled model's 0.5 m: 9 tiles of 512 px (overlap 64), more than a
    batch."""
    rng = np.random.default_rng(0)
    patches = rng.integers(30, 220, (3, 16, 16)).repeat(64, axis=1).repeat(64, axis=2)
    data = np.clip(patches + rng.integers(-20, 21, patches.shape), 0, 255).astype(np.uint8)
    return write_geotiff(tmp_path_factory.mktemp("cuda") / "scene.tif", data, gsd=0.5)


def classes(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@contextlib.contextmanager
def gpu_memory_cap(extra_bytes: float) -> Iterator[None]:
    """The process may hold what it holds now plus ``extra_bytes`` of GPU memory."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + extra_bytes) / total)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def peak_per_tile(net: torch.nn.Module) -> int:
    """GPU bytes one tile's forward pass and softmax take at their peak."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.inference_mode():
        net(torch.zeros(1, 3, TILE, TILE, device="cuda")).float().softmax(1)
    return torch.cuda.max_memory_allocated() - before


def test_device_picker_lists_the_gpu():
    devices = list_devices()
    assert devices and devices[0].name == "cuda:0" and devices[0].total_memory > 0
    assert "GiB free" in devices[0].describe() and "cuda:0" in device_choices()
    assert resolve_device("auto") == torch.device("cuda", 0) == resolve_device("cuda")
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_mixed_precision_map_agrees_with_float32(raster, tmp_path):
    amp = predict_raster(MODEL, raster, tmp_path / "amp.tif", device="cuda", amp=True)
    fp32 = predict_raster(MODEL, raster, tmp_path / "fp32.tif", device="cuda", amp=False)
    assert amp.precision in ("float16", "bfloat16") and fp32.precision == "float32"
    agreement = np.mean(classes(amp.output) == classes(fp32.output))
    print(f"{amp.precision} map agrees with float32 on {100 * agreement:.3f} % of pixels")
    assert agreement >= 0.98


def test_training_step_in_mixed_precision():
    _, net = model_from_file(str(MODEL))
    dev = torch.device("cuda", 0)
    net.to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    scaler = grad_scaler(dev, True)
    x = torch.randn(2, 3, 256, 256, device=dev)
    y = torch.randint(0, 5, (2, 256, 256), device=dev)
    with autocast(dev, True):
        logits = net(x)
    assert logits.dtype in (torch.bfloat16, torch.float16)
    loss = F.cross_entropy(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss) and scaler.is_enabled() == (not torch.cuda.is_bf16_supported())


def test_out_of_memory_halves_the_batch_and_keeps_the_map(raster, tmp_path, caplog):
    card, net = model_from_file(str(MODEL))
    net.cuda()
    common = dict(device="cuda", tile=TILE, amp=False, resample=False, write_style=False)
    with deterministic():
        whole = predict_raster(
            (card, net), raster, tmp_path / "whole.tif", batch_size=BATCH, **common
        )
        with gpu_memory_cap(3 * peak_per_tile(net)), caplog.at_level("WARNING"):
            capped = predict_raster(
                (card, net), raster, tmp_path / "capped.tif", batch_size=BATCH, **common
            )
        sizes = [int(n) for n in re.findall(r"out of GPU memory with \d+ .*?going on with (\d+)", caplog.text)]  # fmt: skip
        assert sizes and sizes[-1] < BATCH, caplog.text
        # the batch the halving settled on, without a cap: the same chunks, the same map
        same = predict_raster((card, net), raster, tmp_path / "same.tif", batch_size=sizes[-1], **common)  # fmt: skip
    assert capped.tiles_total == whole.tiles_total > BATCH
    assert np.array_equal(classes(capped.output), classes(same.output))
    assert np.mean(classes(capped.output) == classes(whole.output)) >= 0.999


def test_a_tile_that_does_not_fit_is_a_clear_error(raster, tmp_path):
    card, net = model_from_file(str(MODEL))
    net.cuda()
    per_tile = peak_per_tile(net)
    with gpu_memory_cap(per_tile / 8), pytest.raises(OutOfGpuMemory, match="single tile"):
        predict_raster((card, net), raster, tmp_path / "none.tif", device="cuda", tile=TILE,
                       batch_size=2, amp=False, resample=False)  # fmt: skip
    assert not (tmp_path / "none.tif").exists()
