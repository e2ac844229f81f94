#!/usr/bin/env python3
"""Sensor randomisation on vs off: source models trained alike (same images, iterations, seed)
applied as `lovecs predict` applies them (sensor alignment, no adaptation) to the benchmark's
five scenes. Train the models with bench/train_source.py (with and without --no-randomisation,
or --only PARTS for one part), then:

    python bench/randomisation_ablation.py NAME=MODEL.lovecs [NAME=MODEL.lovecs ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
from adaptation import score, write_section
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.card import load_classes, read_card

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="NAME=MODEL")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "randomisation-ablation"))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--key", default="randomisation-ablation:cpu", help="RESULTS.md section key")
    p.add_argument("--title", default="Sensor randomisation: on vs off (no adaptation)")
    args = p.parse_args(argv)
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    classes = load_classes(data / "classes.json")
    scenes = build_scenes(data, ROOT / "bench" / "data" / "scenes")
    names = [c.name for c in classes]
    lines = [
        f"### {args.title}",
        "",
        f"- command: `python bench/randomisation_ablation.py "
        f"{' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; device: "
        f"CPU {platform.machine()}, {torch.get_num_threads()} thread(s)",
        "- each model applied with the sensor alignment, as `lovecs predict` does; vegetation and "
        "water are source images held out of every training; clean share 0.0: models trained "
        "before the setting existed",
        "",
        "| model | training | scene | mIoU | " + " | ".join(names) + " | OA |",
        "|---|---|---|---:|" + "---:|" * len(names) + "---:|",
    ]
    for item in args.models:
        name, _, path = item.partition("=")
        card = read_card(path)
        t = card.provenance.get("training", {})
        rand = t.get("randomisation")
        what = f"{t.get('iterations')} it., randomisation " + (
            "off"
            if not rand
            else ",".join(rand["parts"])
            + f" p={rand['probability']}, clean share {rand.get('clean_share', 0.0)}"
        )
        for scene in scenes:
            out = work / f"{name}-{scene.name}.tif"
            predict_raster(path, scene.image, out, bands=scene.bands, device="cpu")
            r = score(out, scene.labels, classes)
            ious = ["n/a" if c["iou"] is None else f"{100 * c['iou']:.1f}" for c in r["classes"]]
            lines.append(
                f"| {name} | {what} | {scene.name} | {100 * r['miou']:.1f} | "
                + " | ".join(ious)
                + f" | {100 * r['overall_accuracy']:.1f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        write_section(Path(args.results), args.key, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
