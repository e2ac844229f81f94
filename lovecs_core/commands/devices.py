"""``lovecs devices``: the compute devices the engine can use (for the dock's device picker)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ..device import list_devices
from ..progress import Reporter, emit_json


def cuda_unavailable_reason() -> str:
    """Why no GPU is offered, in plain words (empty when CUDA works)."""
    import torch

    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support (CPU-only build)"
    return (f"PyTorch was built for CUDA {torch.version.cuda} but finds no usable NVIDIA GPU "
            "(no GPU, or no matching driver)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the CPU and CUDA GPUs the engine can use")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    gpus = list_devices()
    reason = cuda_unavailable_reason()
    if args.progress == "json":
        emit_json(sys.stdout, "result", gpus=[asdict(g) for g in gpus], cuda_unavailable=reason)
        return 0
    print("cpu")
    for gpu in gpus:
        print(gpu.describe())
    if reason:
        print(f"no GPU: {reason}")
    return 0
