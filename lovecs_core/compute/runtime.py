"""Run-time helpers shared by training, adaptation and inference: mixed precision, seeding and
rounding sizes to what a network accepts. (Device choice: :mod:`lovecs_core.compute.device`.)"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional

import numpy as np
import torch


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is slow."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def autocast(
    device: torch.device, amp: bool, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); on a CPU only when
    ``cpu_bf16`` is asked for (training) and the CPU has native bfloat16."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if amp and cpu_bf16 and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for float16 autocast."""
    enabled = amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=enabled)


def round_up(value: int, divisor: int) -> int:
    """``value`` rounded up to a multiple of ``divisor`` (a network's input divisor)."""
    return int(math.ceil(value / divisor) * divisor)


def seed_everything(seed: Optional[int]) -> None:
    """Seed torch and numpy's global generator (None: leave them as they are)."""
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
