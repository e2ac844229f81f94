"""Adaptation with torchrun: one process against N gloo (CPU) or NCCL (GPU) processes.

Runs the same short LoVeCS adaptation of a model to a window of a real scene as one process
(``python -m lovecs_core adapt``) and under ``torchrun --nproc_per_node N -m lovecs_core adapt``,
each process on ``--threads`` CPU threads (or its own GPU with ``--device cuda``), and records
the wall time of the whole command (start-up included), the engine's own time (the result's
``seconds``), and how far the adapted models are apart (they should agree within floating-point
reduction order). Writes its section of bench/RESULTS.md with ``--write``::

    python bench/torchrun_adapt.py --nproc 1 2 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DATA = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))
KEY = "torchrun-adapt:cpu"


def crop_scene(scene: Path, window: int, out: Path) -> Path:
    """The top-left-of-centre ``window`` x ``window`` pixels of ``scene`` (a GeoTIFF)."""
    from osgeo import gdal

    ds = gdal.Open(str(scene))
    x0 = max(0, (ds.RasterXSize - window) // 2)
    y0 = max(0, (ds.RasterYSize - window) // 2)
    path = out / f"{scene.parent.name}_{window}.tif"
    if not path.is_file():
        gdal.Translate(str(path), ds, srcWin=[x0, y0, window, window])
    return path


def run(n: int, args: argparse.Namespace, scene: Path, out: Path) -> dict[str, Any]:
    model = out / f"adapted_{n}.lovecs"
    for stale in out.glob(f"adapted_{n}.*"):
        stale.unlink()
    adapt = [
        "adapt", "--model", str(args.model), "--target", str(scene), "--out", str(model),
        "--method", "lovecs", "--preset", "fast", "--iterations", str(args.iterations),
        "--refresh-every", str(args.refresh_every), "--batch-size", str(args.batch_size),
        "--crop", str(args.crop), "--pl-tile", str(args.pl_tile), "--n-scales", "1",
        "--device", args.device, "--keep-adapted",
    ]  # fmt: skip
    if n == 1:
        command = [sys.executable, "-m", "lovecs_core", "--progress", "json", *adapt]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", str(n), "-m", "lovecs_core", "--progress", "json", *adapt]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    done = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"{n} process(es) failed:\n{done.stderr[-3000:]}")
    result = [json.loads(line) for line in done.stdout.splitlines()][-1]
    return {"n": n, "wall": wall, "engine": result["seconds"], "load": load, "model": model}


def max_difference(a: Path, b: Path) -> float:
    from lovecs_core.card import load_model_file

    sa, sb = load_model_file(a)[1], load_model_file(b)[1]
    return max(
        float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if sa[k].is_floating_point()
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--scene", default=str(DATA / "target_b" / "scene.tif"))
    p.add_argument("--window", type=int, default=512, help="side of the scene window, pixels")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--refresh-every", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--pl-tile", type=int, default=256)
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "torchrun-adapt"))
    p.add_argument("--write", action="store_true", help="write the section of bench/RESULTS.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = crop_scene(Path(args.scene), args.window, out)
    rows = [run(n, args, scene, out) for n in args.nproc]
    base = rows[0]
    lines = [
        "## Adaptation with torchrun (CPU, gloo)",
        "",
        f"`{' '.join(['python', 'bench/torchrun_adapt.py', *(argv or sys.argv[1:])])}` on "
        f"{dt.date.today().isoformat()}: {os.cpu_count()}-core {platform.processor() or 'CPU'} "
        f"({platform.machine()}), no GPU, shared with a background benchmark on one thread "
        f"(load average at each start below). Model: {Path(args.model).name}; scene: the "
        f"central {args.window}x{args.window} px of {Path(args.scene).parent.name}; LoveCS, "
        f"{args.iterations} iterations (new pseudo-labels every {args.refresh_every}), global "
        f"batch {args.batch_size} windows of {args.crop} px per domain, one pseudo-labelling "
        f"scale, {args.threads} thread(s) per process, float32 or bfloat16 as the CPU allows.",
        "",
        "| processes | wall (s, with start-up) | engine (s) | speed-up (engine) | load avg | "
        "max weight difference to 1 process |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = "-" if row is base else f"{max_difference(base['model'], row['model']):.2g}"
        lines.append(
            f"| {row['n']} | {row['wall']:.1f} | {row['engine']:.1f} | "
            f"{base['engine'] / row['engine']:.2f}x | {row['load']:.1f} | {diff} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        from adaptation import write_section

        write_section(ROOT / "bench" / "RESULTS.md", KEY, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
