#!/usr/bin/env python3
"""Mapping on a local Ray cluster against one process, same raster, same model (issue 11): wall
time, the Ray path's overhead, and whether the maps are identical. Each run is a fresh child
process. Writes the ``ray-overhead:cpu`` section of bench/RESULTS.md.

    python bench/ray_overhead.py                  # target_b at its own pixels, and a 4096^2 mosaic
    python bench/ray_overhead.py --sizes 0 8192   # 0: the scene itself; N: an N x N mosaic VRT

Runs per raster: one process with all cores (torch's default threads: what a user runs), one
process with 1 thread (the reference the Ray map must equal bit for bit: each worker runs 1
thread), and Ray with one worker per core (1 CPU, 1 thread each): total = starting the local
cluster + workers loading the model + mapping; the mapping part alone is given too. float32
everywhere (the library default; the CLI's bf16 default would change both the same way).
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
from typing import Any, Optional

from adaptation import DEFAULT_DATA, write_section
from inference_memory import write_mosaic_vrt

ROOT = Path(__file__).resolve().parents[1]

MODEL = ROOT / "resources" / "models" / "default.lovecs"


def child(mode: str, raster: str, out: str, threads: int) -> dict[str, Any]:
    """One run in this (fresh) process; returns its timings."""
    import torch

    from lovecs_core.mapping.predict import predict_raster

    torch.set_num_threads(threads)
    common = dict(resample=False, device="cpu", cpu_bf16=False)
    t0 = time.perf_counter()
    if mode == "one":
        r = predict_raster(str(MODEL), raster, out, **common)
        tiles = r.tiles_total - r.tiles_skipped
        return {"total": time.perf_counter() - t0, "map": r.seconds, "tiles": tiles}
    from lovecs_core.mapping.ray.cluster import connected
    from lovecs_core.mapping.ray.map import RayOptions, predict_raster_ray

    with connected("local", num_cpus=os.cpu_count()):
        started = time.perf_counter() - t0
        r = predict_raster_ray(str(MODEL), raster, out, ray_options=RayOptions(), **common)
    return {
        "total": time.perf_counter() - t0,
        "start": started,
        "map": r.seconds,
        "tiles": r.tiles_total - r.tiles_skipped,
        "cluster": r.cluster,
    }


def run_child(mode: str, raster: Path, out: Path, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, str(raster), str(out), str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = os.getloadavg()[0]
    return result


def compare(a: Path, b: Path) -> tuple[bool, float]:
    from osgeo import gdal

    x, y = gdal.Open(str(a)).ReadAsArray(), gdal.Open(str(b)).ReadAsArray()
    valid = (x > 0) | (y > 0)
    return bool((x == y).all()), float((x == y)[valid].mean() * 100)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 4096])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "ray-overhead"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--child", nargs=4, metavar=("MODE", "RASTER", "OUT", "THREADS"))
    p.add_argument("--report-only", action="store_true", help="rewrite the table from runs.json")
    p.add_argument("--note", default="", help="a paragraph of notes under the table")
    args = p.parse_args(argv)
    if args.child:
        mode, raster, out, threads = args.child
        print(json.dumps(child(mode, raster, out, int(threads))))
        return 0

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        measure(args, work)
    lines = render(json.loads((work / "runs.json").read_text()), args.note)
    write_section(Path(args.results), "ray-overhead:cpu", "\n".join(lines))
    print("\n".join(lines))
    return 0


def measure(args: argparse.Namespace, work: Path) -> None:
    """Run every mode on every raster; the numbers go to ``work/runs.json``."""
    from osgeo import gdal

    scene = Path(args.data) / "target_b" / "scene.tif"
    cores = os.cpu_count() or 1
    rows = []
    for size in args.sizes:
        raster = scene if size == 0 else write_mosaic_vrt(scene, size, size, work / f"m{size}.vrt")
        ds = gdal.Open(str(raster))
        w, h = ds.RasterXSize, ds.RasterYSize
        ds = None
        runs = {}
        for mode, threads in (("one", cores), ("one", 1), ("ray", 1)):
            key = f"{mode}{threads}"
            out = work / f"{size}_{key}.tif"
            runs[key] = run_child(mode, raster, out, threads)
            runs[key]["out"] = str(out)
            print(key, runs[key], flush=True)
        same, _ = compare(Path(runs["one1"]["out"]), Path(runs["ray1"]["out"]))
        _, agree = compare(Path(runs[f"one{cores}"]["out"]), Path(runs["ray1"]["out"]))
        rows.append([size, w, h, runs, same, agree])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    meta = {
        "date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "ray": __import__("ray").__version__,
        "cores": cores,
        "machine": platform.machine(),
        "sizes": args.sizes,
    }
    (work / "runs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def render(data: dict[str, Any], note: str = "") -> list[str]:
    """The RESULTS.md section from ``runs.json``."""
    meta, cores = data["meta"], data["meta"]["cores"]
    lines = [
        "### Mapping on Ray against one process (CPU, issue 11)",
        "",
        f"- command: `python bench/ray_overhead.py --sizes {' '.join(map(str, meta['sizes']))}`",
        f"- date: {meta['date']}, commit {meta['commit']}; {meta['machine']} CPU, {cores} cores, "
        f"no GPU; Ray {meta['ray']}, local cluster started by the run (`--ray`), one worker per "
        "core (1 CPU, 1 torch thread each)",
        "- model: the bundled `default.lovecs` (FPN MobileNetV2, tile 512, overlap 64), float32, "
        "batch 1; input: `target_b/scene.tif` at its own pixels (no resampling) or a square VRT "
        "mosaic of it; output GeoTIFF with overviews, as `lovecs predict`",
        "- one process: `predict_raster` in a fresh process, with all cores (torch's default) "
        "and with 1 thread; Ray total: the whole `--ray` run in a fresh process (start the local "
        "cluster, workers load the model, map, write); Ray map: `predict_raster_ray` alone, "
        "workers' start included",
        "",
        f"| raster | one process, {cores} threads s | one process, 1 thread s | Ray total s "
        "| of which cluster start s | Ray map s | Ray total vs 1 thread | vs all cores | blocks "
        "| tile runs / tiles with data | identical to 1 thread | same class as all cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for size, w, h, runs, same, agree in data["rows"]:
        one, one1, par = runs[f"one{cores}"], runs["one1"], runs["ray1"]
        c = par["cluster"]
        non_empty = max(1, par["tiles"])
        name = "target_b scene" if size == 0 else f"mosaic {size}²"
        lines.append(
            f"| {name} ({w}x{h}, {w * h / 1e6:.1f} MPix) | {one['total']:.1f} | "
            f"{one1['total']:.1f} | {par['total']:.1f} | {par['start']:.1f} | {par['map']:.1f} | "
            f"{100 * (par['total'] / one1['total'] - 1):+.0f} % | "
            f"{100 * (par['total'] / one['total'] - 1):+.0f} % | {c['blocks']} of "
            f"{c['block_size']} px | {c['tiles_computed']} / {non_empty} "
            f"({c['tiles_computed'] / non_empty:.2f}x) | {'yes' if same else 'NO'} | "
            f"{agree:.5f} % |"
        )
    loads = [f"{r['load']:.1f}" for row in data["rows"] for r in row[3].values()]
    lines += [
        "",
        f"1-minute load average after each run: {', '.join(loads)} (2 cores). The machine was "
        "shared with background jobs the whole time, so absolute times are slower than on an "
        "idle machine.",
    ]
    if note:
        lines += ["", note]
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())
