"""Adaptation with torchrun: one process against N gloo (CPU) or NCCL (GPU) processes.

Runs the same short LoveCS adaptation of a model to a window of a real scene as one process
(``python -m lovecs_core adapt``) and under ``torchrun --nproc_per_node N -m lovecs_core adapt``,
each process on the CPU threads ``--runs`` gives it (or its own GPU with ``--device cuda``), and records
the wall time of the whole command (start-up included), the engine's own time (the result's
``seconds``), and how far the adapted models are apart (they should agree within floating-point
reduction order; a one-process run on 2 threads shows how large one process's own
floating-point noise is). Writes its section of bench/RESULTS.md with ``--write``::

    python bench/torchrun_adapt.py --write
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


def run(spec: str, amp: bool, args: argparse.Namespace, scene: Path, out: Path) -> dict[str, Any]:
    """One adaptation: ``spec`` = ``PROCESSES:THREADS`` (threads per process)."""
    n, threads = (int(v) for v in spec.split(":"))
    model = out / f"adapted_{'amp' if amp else 'fp32'}_{n}x{threads}.lovecs"
    for stale in out.glob(model.name + "*"):
        stale.unlink()
    adapt = [
        "adapt", "--model", str(args.model), "--target", str(scene), "--out", str(model),
        "--method", "lovecs", "--preset", "fast", "--iterations", str(args.iterations),
        "--refresh-every", str(args.refresh_every), "--batch-size", str(args.batch_size),
        "--crop", str(args.crop), "--pl-tile", str(args.pl_tile), "--n-scales", "1",
        "--device", args.device, "--keep-adapted", *([] if amp else ["--no-amp"]),
    ]  # fmt: skip
    if n == 1:
        command = [sys.executable, "-m", "lovecs_core", "--progress", "json", *adapt]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", str(n), "-m", "lovecs_core", "--progress", "json", *adapt]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    done = subprocess.run(command, cwd=str(ROOT), env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"{spec} failed:\n{done.stderr[-3000:]}")
    result = [json.loads(line) for line in done.stdout.splitlines()][-1]
    return dict(
        n=n, threads=threads, amp=amp, wall=wall, engine=result["seconds"], load=load,
        model=model, pixels=[r["class_pixels"] for r in result["rounds"]],
    )  # fmt: skip


def difference(a: Path, b: Path, source: Path) -> tuple[float, float]:
    """The largest absolute difference between two adapted models' weights and statistics, and
    the difference as a share of what adaptation changed (L2 norms over all of them)."""
    from lovecs_core.model.card import load_model_file

    sa, sb, s0 = (load_model_file(path)[1] for path in (a, b, source))
    worst, apart, moved = 0.0, 0.0, 0.0
    for key, value in sa.items():
        if value.is_floating_point():
            d = value.double() - sb[key].double()
            worst = max(worst, float(d.abs().max()))
            apart += float((d * d).sum())
            moved += float(((value.double() - s0[key].double()) ** 2).sum())
    return worst, (apart / max(moved, 1e-300)) ** 0.5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--scene", default=str(DATA / "target_b" / "scene.tif"))
    p.add_argument("--window", type=int, default=512, help="side of the scene window, pixels")
    p.add_argument(
        "--runs",
        nargs="+",
        default=["1:1", "2:1", "1:2"],
        help="PROCESSES:THREADS each; the first is the reference (1:2: one process's own "
        "floating-point noise, as its threads sum in another order)",
    )
    p.add_argument("--precision", nargs="+", choices=("amp", "fp32"), default=["amp", "fp32"])
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
    from lovecs_core.compute.runtime import cpu_bf16_supported

    amp_name = "bfloat16 autocast" if cpu_bf16_supported() else "amp (float32 on this CPU)"
    lines = [
        "## Adaptation with torchrun (CPU, gloo)",
        "",
        f"`{' '.join(['python', 'bench/torchrun_adapt.py', *(argv or sys.argv[1:])])}` on "
        f"{dt.date.today().isoformat()}: {os.cpu_count()}-core {platform.machine()} CPU, no GPU, "
        "shared with a background benchmark on one thread and other jobs (load average at "
        f"each start below). Model: {Path(args.model).name}; scene: the central "
        f"{args.window}x{args.window} px of {Path(args.scene).parent.name}; LoveCS, "
        f"{args.iterations} iterations (new pseudo-labels every {args.refresh_every}), global "
        f"batch {args.batch_size} windows of {args.crop} px per domain, one pseudo-labelling "
        "scale. Differences are to the first row of the same precision.",
        "",
        "| precision | processes x threads | wall (s, with start-up) | engine (s) | speed-up "
        "(engine) | load avg | weight difference: largest / share of the adaptation's "
        "change | pseudo-label pixels that differ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision in args.precision:
        rows = [run(spec, precision == "amp", args, scene, out) for spec in args.runs]
        base = rows[0]
        for row in rows:
            if row is base:
                diff, changed = "-", "-"
            else:
                worst, share = difference(base["model"], row["model"], Path(args.model))
                diff = f"{worst:.2g} / {100 * share:.2g} %"
                changed = str(
                    sum(
                        abs(x - y)
                        for a, b in zip(base["pixels"], row["pixels"])
                        for x, y in zip(a, b)
                    )
                )
            lines.append(
                f"| {amp_name if row['amp'] else 'float32'} | {row['n']} x {row['threads']} | "
                f"{row['wall']:.1f} | {row['engine']:.1f} | "
                f"{base['engine'] / row['engine']:.2f}x | {row['load']:.1f} | {diff} | {changed} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.write:
        from adaptation import write_section

        write_section(ROOT / "bench" / "RESULTS.md", KEY, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
