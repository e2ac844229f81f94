#!/usr/bin/env python3
"""Train the benchmark's (and default model's) source model on source/ minus the held-out images.

python bench/train_source.py --iterations 5000 --out bench/out/source-v3/source.lovecs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from scenes import DEFAULT_DATA, held_out_pairs

from lovecs_core.model.card import load_classes
from lovecs_core.progress import ProgressEvent, Reporter
from lovecs_core.rasters.labelled import pair_rasters
from lovecs_core.training.source import TrainConfig, fpn_architecture, train_source

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", required=True)
    p.add_argument("--encoder", default="mobilenet_v2")
    p.add_argument("--decoder", default="128,64")
    p.add_argument("--iterations", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--no-randomisation", action="store_true")
    p.add_argument("--only", nargs="*", help="randomisation parts to use (default: all)")
    p.add_argument("--probability", type=float, help="per part (default: SensorRandomisation's)")
    p.add_argument("--clean-share", type=float, help="default: SensorRandomisation's")
    p.add_argument("--gamma", help="tone part's gamma range LO,HI (default: SensorRandomisation's)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    pairs = pair_rasters([data / "source" / "images"], [data / "source" / "labels"])
    train, held = held_out_pairs(pairs)
    from lovecs_core.cli.train import randomisation

    parts = "none" if args.no_randomisation else (",".join(args.only) if args.only else "all")
    rand = randomisation(parts, args.probability, args.clean_share)
    if rand is not None and args.gamma:
        rand["gamma"] = [float(v) for v in args.gamma.split(",")]
    cfg = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        crop=args.crop,
        device=args.device,
        seed=args.seed,
        randomisation=rand,
        workers=args.workers,
        checkpoint_every=250,
    )
    last = [0.0]

    def show(e: ProgressEvent) -> None:
        if time.monotonic() - last[0] > 60 or e.fraction >= 1:
            last[0] = time.monotonic()
            print(f"{e.stage} {100 * e.fraction:.1f}% {e.message}", flush=True)

    decoder = tuple(int(v) for v in args.decoder.split(","))
    result = train_source(
        train,
        load_classes(data / "classes.json"),
        args.out,
        arch=fpn_architecture(args.encoder, decoder),
        config=cfg,
        held_out=[h[0] for h in held],
        resume=args.resume,
        name="LoveCS source model (sensor-randomised)",
        reporter=Reporter(show),
    )
    print(f"wrote {result.output} in {result.seconds / 60:.1f} min on {result.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
