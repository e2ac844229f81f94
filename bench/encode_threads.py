#!/usr/bin/env python3
"""GeoTIFF block encoding on 1 thread against GDAL's multithreaded compression (issue 12): the
engine's writer (:class:`lovecs_core.rasters.geotiff.StripWriter`, DEFLATE, 256 px blocks, internal
overviews) fed a class-map-like uint8 raster, timed for writing and for finishing (last flush
plus overviews). Writes the ``encode-threads:cpu`` section of bench/RESULTS.md.

    python bench/encode_threads.py [--size 8192] [--repeat 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from adaptation import write_section
from osgeo import gdal

from lovecs_core.rasters import geotiff

ROOT = Path(__file__).resolve().parents[1]


def class_map(size: int, seed: int = 0) -> np.ndarray:
    """Blocky 16 px regions of 5 classes with 5 % salt noise: compresses like a real map."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 6, (size // 16, size // 16), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    noise = rng.random((size, size)) < 0.05
    return np.where(noise, rng.integers(1, 6, (size, size), dtype=np.uint8), base)[None]


def write_once(data: np.ndarray, out: Path, threads: str) -> tuple[float, float]:
    """Seconds to write and to finish ``data`` with ``NUM_THREADS=threads``."""
    geotiff.ENCODE_THREADS = threads
    options = [o for o in geotiff.CREATION_OPTIONS if not o.startswith("NUM_THREADS=")]
    geotiff.CREATION_OPTIONS[:] = [*options, f"NUM_THREADS={threads}"]
    _, h, w = data.shape
    start = time.perf_counter()
    writer = geotiff.StripWriter(out, w, h, 1, np.uint8, None, "", 0, temporary=False)
    for y in range(0, h, 512):
        writer.write(y, data[:, y : y + 512])
    wrote = time.perf_counter()
    writer.finish()
    return wrote - start, time.perf_counter() - wrote


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / ".tmp" / "encode-threads"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = class_map(args.size)
    rows, maps = [], {}
    for _ in range(args.repeat):
        for threads in ("1", "ALL_CPUS"):
            out = work / f"map-{threads}.tif"
            write_s, finish_s = write_once(data, out, threads)
            maps[threads] = out
            rate = args.size**2 / 1e6 / (write_s + finish_s)
            rows.append(f"| {threads} | {write_s:.2f} | {finish_s:.2f} | {rate:.1f} |")
            print(rows[-1], flush=True)
    a, b = (gdal.Open(str(maps[t])).ReadAsArray() for t in ("1", "ALL_CPUS"))
    lines = [
        "### GeoTIFF block encoding: one thread against all cores (issue 12)",
        "",
        f"- command: `{' '.join(['python bench/encode_threads.py', *(argv or sys.argv[1:])])}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}; CPU"
        f" {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f};"
        f" GDAL {gdal.__version__}",
        f"- a {args.size} x {args.size} uint8 class map (blocky regions, 5 % noise) through"
        " `StripWriter` (DEFLATE, 256 px tiles, internal overviews) in 512-row strips; finish ="
        " last flush + overviews; the two files hold the same pixels:"
        f" {'yes' if bool((a == b).all()) else 'NO'}",
        "",
        "| NUM_THREADS | write s | finish s | MPix/s end to end |",
        "|---|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(Path(args.results), "encode-threads:cpu", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
