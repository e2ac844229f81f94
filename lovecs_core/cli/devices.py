"""``lovecs devices``: the compute devices the engine can use (for the dock's device picker)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ..contract import RESULT
from ..progress import Reporter, emit_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the CPU and CUDA GPUs the engine can use")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..compute.device import cuda_unavailable_reason, list_devices

    gpus = list_devices()
    reason = cuda_unavailable_reason()
    if args.progress == "json":
        emit_json(sys.stdout, RESULT, gpus=[asdict(g) for g in gpus], cuda_unavailable=reason)
        return 0
    print("cpu")
    for gpu in gpus:
        print(gpu.describe())
    if reason:
        print(f"no GPU: {reason}")
    return 0
