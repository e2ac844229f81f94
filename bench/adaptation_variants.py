"""One adaptation setting against another on a benchmark scene (not a unit test).

Adapts the bundled model to one scene of :mod:`scenes` with the dock's defaults (preset
``fast``) changed by ``--set NAME=VALUE`` (any :class:`~lovecs_core.adaptation.config.AdaptConfig`
field, JSON values), keeps the adapted model whatever the health check says, maps the scene with
it and prints mIoU, OA, per-class IoU and the verdict. bench/RESULTS.md's ablation of the
self-training changes was measured with it, e.g.::

    python bench/adaptation_variants.py vegetation --set scene_statistics=true
    python bench/adaptation_variants.py target_b --set native_scale=true balanced_windows=false
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
from adaptation import score
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.config import make_config
from lovecs_core.mapping.predict import predict_raster

ROOT = Path(__file__).resolve().parents[1]


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["lr=0.001", "native_scale=true"]`` -> ``{"lr": 0.001, "native_scale": True}``."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = json.loads(value)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("scene", help="a scene of scenes.build_scenes, e.g. target_b, water_b")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    p.add_argument("--model", default=str(ROOT / "resources" / "models" / "default.lovecs"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "variants")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = parse_settings(args.set)
    scenes = {s.name: s for s in build_scenes(args.data, ROOT / "bench" / "data" / "scenes")}
    scene = scenes[args.scene]
    tag = "-".join(f"{k}={v}" for k, v in settings.items()) or "default"
    folder = args.work / scene.name
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{tag}.lovecs"
    cfg = make_config("fast", device="cpu", **settings)
    t0 = time.monotonic()
    result = adapt(args.model, scene.image, out, config=cfg, bands=scene.bands, keep_adapted=True)
    seconds = time.monotonic() - t0
    predict_raster(str(out), scene.image, folder / f"{tag}.tif", bands=scene.bands, device="cpu")
    s = score(folder / f"{tag}.tif", scene.labels, result.card.classes)
    ious = {c["name"]: c["iou"] for c in s["classes"]}
    print(
        f"{scene.name} [{tag}]: mIoU {100 * s['miou']:.1f} %, OA "
        f"{100 * s['overall_accuracy']:.1f} %, IoU "
        + ", ".join(f"{k} {'n/a' if v is None else f'{100 * v:.1f}'}" for k, v in ious.items())
        + f"; adapt {seconds:.0f} s"
    )
    if result.health is not None:
        print(result.health.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
