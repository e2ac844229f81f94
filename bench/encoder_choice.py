"""Choosing the default model's encoder by numbers: accuracy on the five benchmark scenes (the
source model as ``lovecs predict`` applies it: sensor alignment with its tone step, no
adaptation) against speed on this machine (mapping target_b, and a training step) and size.

    python bench/encoder_choice.py MODEL.lovecs [MODEL.lovecs ...] [--threads 2]

Every model must come from ``bench/train_source.py`` with the same data, budget and
randomisation (only ``--encoder`` differing). Writes the ``encoder-choice`` section of
bench/RESULTS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from adaptation import write_section
from scenes import bench_setup, build_scenes
from torch import nn

from lovecs_core.evaluation.metrics import evaluate_rasters
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.networks import model_from_file

ROOT = Path(__file__).resolve().parents[1]


def training_step_seconds(net: nn.Module, steps: int = 6, batch: int = 8, crop: int = 256) -> float:
    """Seconds per training step (forward, cross-entropy, backward, SGD) on a random batch, with
    the training defaults of this CPU: bfloat16 autocast and channels-last."""
    net = net.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop).to(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        y = torch.randint(0, logits.shape[1], (batch, crop, crop))
        loss = nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]  # median after two warm-up steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    args, data, work, classes = bench_setup(p, argv, "encoder-choice")
    codes, names = [c.code for c in classes], [c.name for c in classes]
    scenes = build_scenes(data, ROOT / "bench" / "data" / "scenes")
    rows = []
    for path in args.models:
        card, net = model_from_file(path)
        params = sum(p.numel() for p in net.parameters())
        scores, map_seconds = {}, None
        for scene in scenes:
            out = work / f"{len(rows)}-{scene.name}.tif"
            t0 = time.perf_counter()
            predict_raster((card, net), scene.image, out, bands=scene.bands, cpu_bf16=True)
            if scene.name == "target_b":
                map_seconds = time.perf_counter() - t0
            acc = evaluate_rasters(out, scene.labels, codes, names).to_dict()
            scores[scene.name] = (100 * acc["miou"], 100 * acc["overall_accuracy"])
        step = training_step_seconds(net)
        rows.append((path, card.architecture.get("encoder"), params, scores, map_seconds, step))
        print(rows[-1], flush=True)
    names_ = [s.name for s in scenes]
    lines = [
        "### Encoder choice: accuracy against speed and size",
        "",
        f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; device: CPU "
        f"{platform.machine()}, {torch.get_num_threads()} thread(s)",
        "- accuracy: `lovecs predict` defaults (alignment with tone, bfloat16), no adaptation; "
        "speed: mapping the whole target_b scene (3.8 MPix, resampled to 0.5 m) and the median "
        "training step (batch 8, 256 px, bfloat16 autocast, channels-last, random data)",
        "",
        "| model | encoder | parameters | float16 size | "
        + " | ".join(f"{n} mIoU / OA" for n in names_)
        + " | mean mIoU | map target_b | training step |",
        "|---|---|---:|---:|" + "---:|" * len(names_) + "---:|---:|---:|",
    ]
    for path, encoder, params, scores, map_s, step in rows:
        mean = sum(m for m, _ in scores.values()) / len(scores)
        lines.append(
            f"| `{path}` | {encoder} | {params / 1e6:.1f} M | "
            f"{params * 2 / 1e6:.0f} MB | "
            + " | ".join(f"{scores[n][0]:.1f} / {scores[n][1]:.1f}" for n in names_)
            + f" | {mean:.1f} | {map_s:.1f} s | {step:.2f} s |"
        )
    text = "\n".join(lines) + "\n"
    if not args.no_write:
        write_section(Path(args.results), "encoder-choice", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
