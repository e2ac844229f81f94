"""Compute device choice: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> :class:`torch.device`.

torch is imported lazily, so the QGIS plugin can list choices in a process without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from ..contract import DEVICES

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """The requested device is malformed or not available; the message says what to use."""


@dataclass(frozen=True)
class DeviceInfo:
    """One CUDA GPU as the GUI lists it."""

    name: str  # "cuda:0": what to pass as device
    label: str  # the GPU's product name
    total_memory: int  # bytes
    free_memory: int  # bytes

    def describe(self) -> str:
        gib = 1024**3
        return (
            f"{self.name} — {self.label} ({self.free_memory / gib:.1f} of "
            f"{self.total_memory / gib:.1f} GiB free)"
        )


def resolve_device(spec: Union[str, "torch.device", None] = "auto") -> "torch.device":
    """Turn a user's device choice into a :class:`torch.device`.

    ``auto`` picks the first CUDA GPU when there is one, else the CPU. Asking for ``cuda`` when
    CUDA is unavailable, or for a GPU index that does not exist, raises :class:`DeviceError`.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    match = _SPEC.match(text)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if kind == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        raise DeviceError(
            f"device {spec!r} was requested but CUDA is not available: "
            f"{cuda_unavailable_reason()}; use --device cpu (or auto)"
        )
    count = torch.cuda.device_count()
    n = int(index) if index is not None else 0
    if n >= count:
        raise DeviceError(
            f"device {spec!r} does not exist: {count} CUDA GPU(s) found "
            f"(cuda:0 .. cuda:{count - 1})"
        )
    return torch.device("cuda", n)


def cuda_unavailable_reason() -> str:
    """Why no GPU can be used, in plain words (empty when CUDA works)."""
    import torch

    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support (CPU-only build)"
    return (
        f"PyTorch was built for CUDA {torch.version.cuda} but finds no usable NVIDIA GPU "
        "(no GPU, or no matching driver)"
    )


def list_devices() -> list[DeviceInfo]:
    """The CUDA GPUs with their names and free/total memory; empty without CUDA or torch."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        try:
            free, total = torch.cuda.mem_get_info(i)
        except RuntimeError:  # a GPU that cannot be queried (busy, exclusive mode)
            free, total = 0, int(torch.cuda.get_device_properties(i).total_memory)
        devices.append(
            DeviceInfo(f"cuda:{i}", torch.cuda.get_device_name(i), int(total), int(free))
        )
    return devices


def device_choices() -> list[str]:
    """What a device picker offers: ``auto``, ``cpu`` and one entry per CUDA GPU."""
    return [d for d in DEVICES if d != "cuda"] + [d.name for d in list_devices()]
