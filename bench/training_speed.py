#!/usr/bin/env python3
"""Source-training speed: iterations per second of the real training step under each setting.

Runs ``--iterations`` steps (after ``--warmup``) of the same step ``train_source`` takes (window
sampling from the shared source images, forward, masked cross-entropy, backward, SGD step) for:
the first release's path (float32, contiguous, windows prepared in the training process), then
bfloat16 autocast, channels-last, both, sensor randomisation on, and DataLoader workers. Writes
a table into ``bench/RESULTS.md``.

    python bench/training_speed.py                   # CPU, about 3 minutes on 2 cores
    python bench/training_speed.py --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from adaptation import write_section
from scenes import DEFAULT_DATA, held_out_pairs

from lovecs_core.compute.device import resolve_device
from lovecs_core.compute.runtime import autocast
from lovecs_core.model.card import load_classes
from lovecs_core.model.csn import change_csn
from lovecs_core.model.networks import build_model
from lovecs_core.rasters.labelled import band_statistics, open_sources, pair_rasters
from lovecs_core.training.augment import SensorRandomisation
from lovecs_core.training.optim import make_optimizer, masked_cross_entropy
from lovecs_core.training.sampling import WindowBatches, WindowSampler
from lovecs_core.training.source import fpn_architecture, source_card

ROOT = Path(__file__).resolve().parents[1]

#: (label, bf16 autocast, channels_last, randomisation, DataLoader workers)
SETTINGS = [
    ("first release: float32, contiguous, in-process windows", False, False, False, 0),
    ("bfloat16 autocast", True, False, False, 0),
    ("channels-last", False, True, False, 0),
    ("bfloat16 + channels-last (default)", True, True, False, 0),
    ("default + sensor randomisation", True, True, True, 0),
    ("default + sensor randomisation + 1 DataLoader worker", True, True, True, 1),
]


def measure(
    sources: list,
    card: Any,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    randomise: bool,
    workers: int,
    iterations: int,
    warmup: int,
    batch: int,
    crop: int,
) -> float:
    """Seconds per iteration."""
    torch.manual_seed(0)
    mean, std = card.stats("source")
    sampler = WindowSampler(
        sources,
        card.class_codes(),
        crop,
        mean,
        std,
        scale_range=(0.5, 1.75),
        seed=0,
        randomisation=SensorRandomisation() if randomise else None,
    )
    model = build_model(card).to(device)
    change_csn(model, source=True)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    model.train()
    optimizer = make_optimizer(model, 0.01, 0.9, 5e-4)
    batches = iter(WindowBatches(sampler, batch, workers, seed=0))
    t0 = 0.0
    for it in range(warmup + iterations):
        if it == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = (torch.from_numpy(a).to(device) for a in next(batches))
        with autocast(device, bf16, cpu_bf16=bf16):
            loss = masked_cross_entropy(model(x.contiguous(memory_format=memory)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iterations


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--device", default="cpu")
    p.add_argument("--encoder", default="mobilenet_v2")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "source" / "images").is_dir():
        print(f"shared data not found at {data}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    train, _ = held_out_pairs(
        pair_rasters([data / "source" / "images"], [data / "source" / "labels"])
    )
    sources = open_sources(train)
    card = source_card(
        sources,
        load_classes(data / "classes.json"),
        band_statistics(sources),
        fpn_architecture(args.encoder, (128, 64)),
        None,
        "speed",
    )
    rows = []
    for label, bf16, cl, rand, workers in SETTINGS:
        seconds = measure(
            sources,
            card,
            device,
            bf16,
            cl,
            rand,
            workers,
            args.iterations,
            args.warmup,
            args.batch_size,
            args.crop,
        )
        rows.append((label, seconds))
        print(f"{label}: {seconds:.3f} s/iteration, {1 / seconds:.2f} it/s", flush=True)
    base = rows[0][1]
    where = (
        f"CUDA {torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"CPU {platform.machine()}, {torch.get_num_threads()} thread(s), native bf16: "
        f"{torch.cpu._is_avx512_bf16_supported()}"
    )
    lines = [
        "### Source-training speed",
        "",
        f"- command: `python bench/training_speed.py "
        f"{' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; device: "
        f"{where}",
        f"- step: FPN {args.encoder} (decoder 128/64, CSN), batch {args.batch_size} x "
        f"{args.crop}² px windows from the {len(train)} training images; {args.iterations} "
        f"iterations after {args.warmup} warm-up",
        "",
        "| setting | s / iteration | iterations / s | vs first release |",
        "|---|---:|---:|---:|",
    ] + [f"| {label} | {s:.3f} | {1 / s:.2f} | {base / s:.2f}× |" for label, s in rows]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        key = "training-speed:" + ("cuda" if device.type == "cuda" else "cpu")
        write_section(Path(args.results), key, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
