"""Variants of the refine's anchors, measured with the simulated user of ``interactive.py``
(up to 50 clicks): which pixels keep a refitted head from forgetting what nobody clicked.

* ``base``: the kept fit (class-balanced confident pixels of the source model, soft targets);
* ``uniform``: scene pixels drawn at random instead (every confidence; the scene's class mix);
* ``mixed``: both sets;
* ``evidence``: the base anchors, with the anchor and source-sample weights scaled by 50 / n
  (stronger under 50 clicks, the same at 50).

    python bench/refine_variants.py --variants base,mixed --scenes target_b,water --seeds 0,1
    python bench/refine_variants.py --table bench/out/refine_variants.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import interactive
import numpy as np
import torch
from osgeo import gdal
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.model.card import read_source_sample
from lovecs_core.model.networks import model_from_file
from lovecs_core.rasters.corrections import Corrections
from lovecs_core.refinement import anchors
from lovecs_core.refinement.features import RegionFeatures, open_region, region_features
from lovecs_core.refinement.head import HeadWeights, Labelled, fit_head
from lovecs_core.refinement.refiner import Refiner

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "uniform", "mixed", "evidence")


def uniform_anchors(
    feats: RegionFeatures, start: HeadWeights, clicked: tuple, count: int = anchors.SCENE_ANCHORS
) -> Labelled:
    """Random scene pixels away from the clicks, the source head's probabilities as targets."""
    rng = np.random.default_rng(0)
    valid = np.flatnonzero(feats.valid.ravel())
    drawn = rng.choice(valid, size=min(valid.size, count * 2), replace=False)
    rows, cols = np.divmod(drawn, feats.valid.shape[1])
    keep = anchors._away_from(rows, cols, clicked)
    x = feats.at(rows[keep][:count], cols[keep][:count])
    return Labelled(x, p=torch.softmax(start.logits(x), dim=1))


class VariantRefiner(Refiner):
    """A refiner whose anchors or weights follow ``variant``."""

    variant = "base"

    def _anchors(self, corrections: Corrections) -> Labelled:
        assert self.feats is not None
        clicked = (corrections.rows, corrections.cols)
        base = anchors.scene_anchors(self.feats, self.source_head, clicked)
        if self.variant in ("uniform", "mixed"):
            drawn = uniform_anchors(self.feats, self.source_head, clicked)
            if self.variant == "uniform":
                return drawn
            assert base.p is not None and drawn.p is not None
            return Labelled(torch.cat([base.x, drawn.x]), p=torch.cat([base.p, drawn.p]))
        return base

    def _fit(self, clicks: Labelled, anchor_pixels: Labelled) -> HeadWeights:
        scale = 50 / max(len(clicks), 1) if self.variant == "evidence" else 1.0
        return fit_head(
            self.source_head, clicks, anchor_pixels, self.source_pixels,
            anchor_weight=0.5 * scale, source_weight=0.5 * scale,
        )  # fmt: skip


def table(results: dict) -> str:
    """Gain in mIoU / OA over the source map at 10, 25 and 50 clicks, mean over the users."""
    lines = ["| variant | scene | 10 clicks | 25 clicks | 50 clicks |", "|---|---|---:|---:|---:|"]
    for variant, scenes in results["variants"].items():
        for scene, users in scenes.items():
            runs = list(users.values())
            cells = [
                f"{np.mean([r[i]['miou'] - r[0]['miou'] for r in runs]):+.1f} / "
                f"{np.mean([r[i]['oa'] - r[0]['oa'] for r in runs]):+.1f}"
                for i in (1, 2, 3)
            ]
            lines.append(f"| {variant} | {scene} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--scenes", default="target_b,vegetation,water,sensor_c,rural_b,water_b,mixed_b"
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "refine_variants.json"))
    parser.add_argument("--table", metavar="JSON", help="only print the Markdown table of a run")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    torch.set_num_threads(2)
    interactive.CHECKPOINTS = (10, 25, 50)
    card, net = model_from_file(str(interactive.MODEL))
    refiner = VariantRefiner(card, net, torch.device("cpu"), read_source_sample(interactive.MODEL))
    results: dict = {"command": f"python bench/refine_variants.py --variants {args.variants} "
                     f"--scenes {args.scenes} --seeds {args.seeds}", "variants": {}}  # fmt: skip
    wanted = args.scenes.split(",")
    for scene in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes"):
        if scene.name not in wanted:
            continue
        region = open_region(card, net, str(scene.image), scene.bands)
        refiner.use_region(region, region_features(card, refiner.split, region, refiner.device))
        labels = gdal.Open(str(scene.labels)).ReadAsArray()
        for variant in args.variants.split(","):
            refiner.variant = variant
            for seed in args.seeds.split(","):
                start = time.perf_counter()
                runs = results["variants"].setdefault(variant, {}).setdefault(scene.name, {})
                runs[seed] = interactive.simulate(refiner, labels, int(seed))
                print(scene.name, variant, seed, f"{time.perf_counter() - start:.0f} s", flush=True)
                Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
