"""CPU inference in float32 against bfloat16 autocast and channels_last, model alone
(``bench/inference.py --precision``): tiles per second and how often the class of a pixel
agrees with float32, on every tile of a real scene (the tiles the pipeline would run).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))

from lovecs_core.csn import csn_domain  # noqa: E402
from lovecs_core.models import model_from_file  # noqa: E402
from lovecs_core.pipeline import normalize  # noqa: E402
from lovecs_core.raster import RasterReader  # noqa: E402
from lovecs_core.runtime import cpu_bf16_supported  # noqa: E402
from lovecs_core.tiling import make_grid  # noqa: E402

VARIANTS = {
    "float32": (False, False),
    "float32, channels_last": (False, True),
    "bf16 autocast": (True, False),
    "bf16 autocast, channels_last": (True, True),
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
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    card, net = model_from_file(args.model)
    net.eval()
    x = scene_tiles(Path(args.raster), card)
    rows = []
    with csn_domain(net, card.default_domain):
        for name, (bf16, cl) in VARIANTS.items():
            seconds, classes = run(net, x, bf16, cl, args.batch_size)
            rows.append((name, seconds, classes))
            print(name, f"{seconds:.1f} s", flush=True)
    ref = rows[0][2]
    lines = [
        "### CPU inference precision: float32, bfloat16 autocast, channels_last (model alone)",
        "",
        f"- command: `python bench/inference.py --precision {' '.join(sys.argv[2:])}`".rstrip(),
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; CPU "
        f"{platform.processor() or platform.machine()}, native bf16: {cpu_bf16_supported()}; "
        f"{args.threads} torch thread(s), machine shared with a training run (load average "
        f"{os.getloadavg()[0]:.1f})",
        f"- model: {card.name}; {len(x)} tiles of {card.tile_size} px from "
        f"{Path(args.raster).parent.name}/{Path(args.raster).name}, batch {args.batch_size}",
        "",
        "| variant | seconds | tiles/s | vs float32 | pixels whose class agrees with float32 |",
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
        sys.path.insert(0, str(ROOT / "bench"))
        from adaptation import write_section

        write_section(Path(args.results), "inference-precision:cpu", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
