"""Tiled-inference throughput: the full pipeline (read, normalise, model, blend, write) against
the model alone on the same tiles; with ``--memory``, peak RSS against raster size (VRT mosaics
of a real scene, 4 MPix to 1 GPix, and very wide strips) for the bundled model and a null model
(a 1x1 convolution: the I/O ceiling), each run in a fresh process. Not a unit test; writes
sections of bench/RESULTS.md (and the plot bench/inference_memory.png).

    python bench/inference.py                       # the bundled model on target_b (CPU here)
    python bench/inference.py --device cuda --batch-size 16
    python bench/inference.py --memory              # the memory sweep (see inference_memory.py)
    python bench/inference.py --precision           # CPU bf16 / channels_last (model alone)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from adaptation import DEFAULT_DATA, device_description, write_section

from lovecs_core.compute.device import resolve_device
from lovecs_core.compute.runtime import autocast, round_up
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.networks import input_divisor, model_from_file
from lovecs_core.rasters.reading import RasterReader

ROOT = Path(__file__).resolve().parents[1]


def model_only_seconds(
    model: torch.nn.Module,
    device: torch.device,
    tiles: int,
    tile: int,
    bands: int,
    batch: int,
    amp: bool,
    cpu_bf16: bool = False,
) -> float:
    """Seconds for the model alone on ``tiles`` random tiles already on the device (channels_last
    on a CPU, as the pipeline runs it)."""
    x = torch.randn(batch, bands, tile, tile, device=device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, amp or cpu_bf16, cpu_bf16=cpu_bf16):
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(max(1, -(-tiles // batch))):
            model(x).float().softmax(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--raster", default=str(DEFAULT_DATA / "target_b" / "scene.tif"))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--tile", type=int)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--cpu-bf16", action="store_true", help="bfloat16 autocast on a CPU")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--memory", action="store_true", help="the peak-RSS sweep instead (--help)")
    p.add_argument("--precision", action="store_true", help="CPU bf16 / channels_last (--help)")
    argv = sys.argv[1:] if argv is None else argv
    if "--memory" in argv:
        from inference_memory import main as memory_main

        return memory_main([a for a in argv if a != "--memory"])
    if "--precision" in argv:
        from inference_precision import main as precision_main

        return precision_main([a for a in argv if a != "--precision"])
    args = p.parse_args(argv)
    if not Path(args.raster).is_file():
        print(f"raster not found: {args.raster} (set LOVECS_SHARED_DATA)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    amp = not args.no_amp
    out = ROOT / "bench" / "out" / "inference"
    out.mkdir(parents=True, exist_ok=True)
    card, model = model_from_file(args.model)
    model.to(device)
    tile = round_up(args.tile or card.tile_size, input_divisor(card.architecture))
    with RasterReader(args.raster) as reader:
        pixels = reader.width * reader.height
    # no resampling: the pipeline and the model-only loop see the same pixels
    result = predict_raster(
        (card, model),
        args.raster,
        out / "map.tif",
        tile=tile,
        device=str(device),
        batch_size=args.batch_size,
        amp=amp,
        cpu_bf16=args.cpu_bf16,
        resample=False,
    )
    processed = result.tiles_total - result.tiles_skipped
    model_s = model_only_seconds(
        model, device, processed, tile, card.band_count, args.batch_size, amp, args.cpu_bf16
    )
    pipe_mpix = pixels / 1e6 / result.seconds
    model_mpix = processed * tile * tile / 1e6 / model_s
    tile_rate_pipe = processed / result.seconds
    tile_rate_model = processed / model_s
    text = "\n".join(
        [
            "### Tiled inference throughput",
            "",
            f"- command: `python bench/inference.py {' '.join(sys.argv[1:])}`",
            f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; device: "
            f"{device_description(device)}; mixed precision: {amp and device.type == 'cuda'}; "
            f"CPU bf16 autocast: {args.cpu_bf16}; load average {os.getloadavg()[0]:.1f}",
            f"- model: {card.name} ({card.architecture.get('arch')} "
            f"{card.architecture.get('encoder', '')}); raster: {Path(args.raster).name}, "
            f"{pixels / 1e6:.2f} MPix; tile {result.tile}, overlap {result.overlap}, "
            f"batch {args.batch_size}; {processed} tiles run, {result.tiles_skipped} all-nodata tiles skipped",
            "",
            "| | seconds | tiles/s | MPix/s |",
            "|---|---:|---:|---:|",
            f"| full pipeline (read, normalise, model, blend, write, overviews) | {result.seconds:.1f} "
            f"| {tile_rate_pipe:.2f} | {pipe_mpix:.2f} (raster pixels) |",
            f"| model alone, same tiles, data already on the device | {model_s:.1f} "
            f"| {tile_rate_model:.2f} | {model_mpix:.2f} (tile pixels) |",
            "",
            f"Pipeline tile rate / model-only tile rate: {100 * tile_rate_pipe / tile_rate_model:.0f} %.",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(Path(args.results), f"inference:{device.type}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
