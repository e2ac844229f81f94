"""The tone step, measured: every benchmark scene mapped by the source model with each candidate
gamma forced (``predict_raster(tone=gamma)``), scored against its labels, next to the two
label-free figures the choice could use: the mean confidence over the whole map and the mean
confidence on the 8 sample tiles that ``lovecs_core.alignment.tone`` looks at. The last column says which
gamma the product chose (``tone="auto"``).

    python bench/tone_sweep.py [--model resources/models/default.lovecs] [--threads 1]

Writes the ``tone-sweep`` section of bench/RESULTS.md (``--no-write``: print only).
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
from osgeo import gdal
from scenes import bench_setup, build_scenes

from lovecs_core.alignment.radiometry import scene_alignment
from lovecs_core.alignment.tone import GAMMAS, read_sample_tiles, sample_confidence
from lovecs_core.evaluation.metrics import evaluate_rasters
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.networks import model_from_file

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--scenes", nargs="+", help="only these scenes")
    args, data, work, classes = bench_setup(p, argv, "tone-sweep")
    codes, names = [c.code for c in classes], [c.name for c in classes]
    card, net = model_from_file(args.model)
    t_start = time.monotonic()
    lines = [
        "| scene | gamma | mIoU | OA | vegetation IoU | mean confidence (map) | "
        "mean confidence (8 sample tiles) | chosen (auto) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scene in build_scenes(data, ROOT / "bench" / "data" / "scenes"):
        if args.scenes and scene.name not in args.scenes:
            continue
        ds = gdal.Open(str(scene.image))
        bands = scene.bands or [1, 2, 3]
        affine = scene_alignment(card, ds, bands)
        tiles = read_sample_tiles(card, ds, bands)
        auto = predict_raster(
            (card, net),
            scene.image,
            work / f"{scene.name}-auto.tif",
            bands=scene.bands,
            device="cpu",
            cpu_bf16=True,
        )
        chosen = (auto.alignment or {}).get("gamma", 1.0)
        for gamma in GAMMAS:
            out, conf = work / f"{scene.name}-{gamma}.tif", work / f"{scene.name}-{gamma}-conf.tif"
            predict_raster(
                (card, net),
                scene.image,
                out,
                bands=scene.bands,
                device="cpu",
                cpu_bf16=True,
                tone=gamma,
                confidence=conf,
                confidence_dtype="float32",
            )
            acc = evaluate_rasters(out, scene.labels, codes, names).to_dict()
            c = gdal.Open(str(conf)).ReadAsArray()
            veg = next(k["iou"] for k in acc["classes"] if k["name"] == "vegetation")
            sample = sample_confidence(card, net, tiles, affine.with_gamma(gamma))
            row = (
                f"| {scene.name} | {gamma:g} | {100 * acc['miou']:.1f} | "
                f"{100 * acc['overall_accuracy']:.1f} | "
                f"{'n/a' if veg is None else f'{100 * veg:.1f}'} | {100 * float(c[c > 0].mean()):.2f} | "
                f"{100 * sample:.2f} | {'**chosen**' if abs(gamma - chosen) < 1e-6 else ''} |"
            )
            print(row, flush=True)
            lines.append(row)
            for path in (out, conf):
                gdal.GetDriverByName("GTiff").Delete(str(path))
    minutes = (time.monotonic() - t_start) / 60
    header = [
        "### The tone step: each gamma forced, against the automatic choice",
        "",
        f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; device: CPU "
        f"{platform.machine()}, {torch.get_num_threads()} thread(s), bfloat16 maps; total "
        f"time {minutes:.1f} min",
        f"- model: `{Path(args.model).relative_to(ROOT) if Path(args.model).is_relative_to(ROOT) else args.model}`;"
        " 8-bit scenes never get a tone from `auto` (their rows show what a forced gamma does)",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    if not args.no_write:
        write_section(Path(args.results), "tone-sweep", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
