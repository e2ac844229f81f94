"""CPU inference variants, model alone (``bench/inference.py --precision``): tiles per forward
pass (4, the CLI's default, against 1), float32 against bfloat16 autocast, and channels_last;
tiles per second and how often a pixel's class agrees with float32 at batch 4, on every tile of
a real scene (the tiles the pipeline would run). Variants run in turn, ``--repeat`` times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lovecs_core.alignment.normalize import normalize
from lovecs_core.compute.runtime import cpu_bf16_supported
from lovecs_core.mapping.tiling import make_grid
from lovecs_core.model.csn import csn_domain
from lovecs_core.model.networks import model_from_file
from lovecs_core.rasters.reading import RasterReader

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: name: (tiles per forward pass, bf16 autocast, channels_last); the first is the reference.
VARIANTS = {
    "float32, batch 4": (4, False, False),
    "float32, batch 1": (1, False, False),
    "float32, batch 1, channels_last": (1, False, True),
    "bf16 autocast, batch 1": (1, True, False),
    "bf16 autocast, batch 1, channels_last": (1, True, True),
    "bf16 autocast, batch 4, channels_last": (4, True, True),
}


def scene_tiles(path: Path, card: Any) -> torch.Tensor:
    """Every full tile of the scene's grid, normalised like the pipeline does."""
    mean, std = card.stats(card.default_domain)
    tiles = []
    with RasterReader(path) as reader:
        grid = make_grid(reader.width, reader.height, card.tile_size, card.overlap)
        for t in grid.tiles():
            data, valid = reader.read(t.window)
            x = normalize(data, mean, std)
            x[:, ~valid] = 0
            tiles.append(x)
    return torch.from_numpy(np.stack(tiles))


def run(net: torch.nn.Module, x: torch.Tensor, bf16: bool, cl: bool, batch: int) -> tuple:
    """(seconds, classes) for all tiles of ``x``, after one warm-up batch."""
    fmt = torch.channels_last if cl else torch.contiguous_format
    net = net.to(memory_format=fmt)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    out = []
    with torch.inference_mode(), amp:
        net(x[:batch].contiguous(memory_format=fmt))
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            logits = net(x[i : i + batch].contiguous(memory_format=fmt))
            out.append(logits.float().argmax(1).to(torch.uint8))
        seconds = time.perf_counter() - t0
    return seconds, torch.cat(out)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--raster", default=str(SHARED / "target_b" / "scene.tif"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="rounds over all variants (best kept)")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    card, net = model_from_file(args.model)
    net.eval()
    x = scene_tiles(Path(args.raster), card)
    best: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}
    with csn_domain(net, card.default_domain):
        for _ in range(args.repeat):  # interleaved rounds: load changes hit every variant
            for name, (batch, bf16, cl) in VARIANTS.items():
                seconds, maps[name] = run(net, x, bf16, cl, batch)
                best[name] = min(seconds, best.get(name, seconds))
                print(name, f"{seconds:.1f} s", flush=True)
    rows = [(name, best[name], maps[name]) for name in VARIANTS]
    ref = rows[0][2]
    lines = [
        "### CPU inference: batch size, bfloat16 autocast, channels_last (model alone)",
        "",
        f"- command: `python bench/inference.py --precision {' '.join(sys.argv[2:])}`".rstrip(),
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; CPU "
        f"{platform.processor() or platform.machine()}, native bf16: {cpu_bf16_supported()}; "
        f"{args.threads} torch thread(s), machine shared with a training run (load average "
        f"{os.getloadavg()[0]:.1f})",
        f"- model: {card.name}; {len(x)} tiles of {card.tile_size} px from "
        f"{Path(args.raster).parent.name}/{Path(args.raster).name}; seconds: the best of "
        f"{args.repeat} interleaved rounds",
        "",
        "| variant | seconds | tiles/s | speed vs first row | pixels whose class agrees with the first row |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds, classes in rows:
        agree = float((classes == ref).float().mean()) * 100
        lines.append(
            f"| {name} | {seconds:.1f} | {len(x) / seconds:.2f} "
            f"| {rows[0][1] / seconds:.2f}x | {agree:.2f} % |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from adaptation import write_section

        write_section(Path(args.results), "inference-precision:cpu", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
