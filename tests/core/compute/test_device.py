import pytest
import torch

from lovecs_core.compute.device import DeviceError, device_choices, list_devices, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((i + 1) * 2**30, 8 * 2**30))


def test_cpu_and_auto_without_cuda(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert list_devices() == [] and device_choices() == ["auto", "cpu"]


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_requested_but_unavailable_is_a_clear_error(no_cuda, spec):
    with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cpu:0", "cuda:x", "cuda0", "mps", ""])
def test_malformed_device(spec):
    if spec == "":  # empty means automatic
        assert resolve_device(spec).type in ("cpu", "cuda")
        return
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(spec)


def test_cuda_devices_when_available(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="2 CUDA GPU"):
        resolve_device("cuda:2")
    devices = list_devices()
    assert [d.name for d in devices] == ["cuda:0", "cuda:1"]
    assert devices[1].label == "Fake GPU 1" and devices[1].free_memory == 2 * 2**30
    assert devices[1].total_memory == 8 * 2**30 and "2.0 of 8.0 GiB free" in devices[1].describe()
    assert device_choices() == ["auto", "cpu", "cuda:0", "cuda:1"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu():
    dev = resolve_device("cuda")
    assert torch.zeros(1, device=dev).device.type == "cuda"
    info = list_devices()
    assert info and 0 < info[0].free_memory <= info[0].total_memory
