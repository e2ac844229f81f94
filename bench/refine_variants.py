"""Variants of the refine's head fit, measured with the simulated user of ``interactive.py``.

* ``base``: the kept fit (class-balanced confident pixels of the source model, soft targets);
* ``uniform``: scene pixels drawn at random instead (every confidence; the scene's class mix);
* ``mixed``: both sets;
* ``evidence``: the base anchors, with the anchor and source-sample weights scaled by 50 / n
  (stronger under 50 clicks, the same at 50);
* ``bias``: the biases held at the source head's (a pull of 1 toward them);
* ``ramp``: the corrections' weight grows with their number up to 50, then stays (n / 50);
* ``features``: the head also reads 256 random ReLU features of the deep features (fixed, seed
  0; a linear head on both, starting at zero weight on the new ones: more capacity, still one
  convex fit);
* ``context``: ``features``, with the deep features' mean over a window of
  ``lovecs_core.model.wide_head.CONTEXT`` cells around each pixel read beside them (the
  refine's widened head);
* ``loose``: a weaker pull toward the source head's weights (``l2`` 0.1 instead of 0.3);
* ``distil``: the source sample's pixels with the source head's probabilities as targets
  instead of their labels (neutral with no corrections: the source head is the fit's optimum);
* ``natural``: the source sample's pixels drawn at random (its class mix) instead of alike
  from every class;
* ``blend``: the source sample's targets go from the source head's probabilities (``distil``)
  with no corrections to their labels at 50, as the corrections' weight grows (``t`` = n / 50:
  ``(1 - t) p + t y``);
* ``brush``: each click labels the disc of ``--brush`` pixels around it with its class (the
  clicked pixel alone stays out of the scores; the disc's other pixels are scored);
* ``loose``'s sibling ``loosen``: the pull toward the source head's weights shrinks as the
  corrections pass 50 (``l2`` x 50 / n; the same fit up to 50);
* several joined by ``+`` (``features+bias``): all of them at once; ``context+ramp`` is the
  refine's own fit.

``--l2`` and ``--anchor-weight`` change the pull toward the source head's weights and the scene
anchors' weight for every variant (``loose`` still sets ``l2`` 0.1).

Each variant walks its own simulated users (the clicks follow its maps) unless ``--paired``: then
every variant is fitted to the same clicks, those of the kept fit's users (cached under
``bench/out/refine_clicks``), which removes the click path's noise from the comparison.

    python bench/refine_variants.py --variants base,mixed --scenes target_b,water --seeds 0,1
    python bench/refine_variants.py --paired --variants base,bias,ramp --checkpoints 10,25,50,100,200
    python bench/refine_variants.py --table bench/out/refine_variants.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import interactive
import numpy as np
import torch
from osgeo import gdal
from scenes import DEFAULT_DATA, build_scenes
from torch import nn

from lovecs_core.model.card import read_source_sample
from lovecs_core.model.networks import model_from_file
from lovecs_core.model.wide_head import CONTEXT, WideHead
from lovecs_core.rasters.corrections import Corrections
from lovecs_core.refinement import anchors
from lovecs_core.refinement.features import (
    RegionFeatures,
    SplitNetwork,
    open_region,
    region_features,
)
from lovecs_core.refinement.head import (
    ANCHOR_WEIGHT,
    FULL_WEIGHT_AT,
    L2_WEIGHT,
    SOURCE_WEIGHT,
    HeadWeights,
    Labelled,
    corrections_weight,
    fit_head,
)
from lovecs_core.refinement.refiner import Refiner

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (
    "base",
    "uniform",
    "mixed",
    "evidence",
    "bias",
    "ramp",
    "features",
    "context",
    "natural",
    "loose",
    "distil",
    "brush",
    "blend",
    "loosen",
)
#: Radius (region pixels) of the ``brush`` variant's disc around each click.
BRUSH_RADIUS = 2
#: Random ReLU features of the ``features`` variant.
RANDOM_FEATURES = 256
#: The fit's pull toward the source head's weights and the scene anchors' weight (``--l2``,
#: ``--anchor-weight``).
PULL, ANCHORS = L2_WEIGHT, ANCHOR_WEIGHT


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
    """A refiner whose anchors, weights or features follow ``variant``."""

    variant = "base"
    parts: frozenset[str] = frozenset({"base"})

    def __init__(self, card, net, device, sample=None) -> None:
        super().__init__(card, net, device, sample, widen=False)  # the variants widen themselves
        self.sample, self.deep, self.plain_head = sample, self.split, self.source_head
        channels = self.plain_head.weight.shape[1]
        self.wide = {"plain": None, "features": random_head(channels, 0)}
        self.wide["context"] = random_head(channels, CONTEXT)
        self.pixel_sets: dict = {}  # (kind, natural) -> the source sample's pixels
        self.region_sets: dict = {}  # kind -> the region's features

    def widened_split(self, kind: str) -> SplitNetwork:
        """The network split with ``kind``'s widened head (its features as the body's)."""
        wide, deep = self.wide[kind], self.deep.body
        if wide is None:
            return self.deep
        return dataclasses.replace(self.deep, body=lambda x: wide.widen(deep(x)), head=wide)

    def use_region(self, region, feats) -> None:
        super().use_region(region, feats)
        self.region_sets = {"plain": feats}
        self.set_variant(self.variant)

    def set_variant(self, variant: str) -> None:
        self.variant, self.parts = variant, frozenset(variant.split("+"))
        kind = next((k for k in ("context", "features") if k in self.parts), "plain")
        if kind not in self.region_sets:  # tile by tile, as the refine computes them
            split = self.widened_split(kind)
            self.region_sets[kind] = region_features(self.card, split, self.region, self.device)
        self.feats = self.region_sets[kind]
        self.source_head = widened_head(self.plain_head, self.feats.features.shape[0])
        natural = "natural" in self.parts
        if (kind, natural) not in self.pixel_sets:
            self.pixel_sets[kind, natural] = anchors.source_sample_pixels(
                self.card, self.widened_split(kind), self.sample, self.device,
                balanced=not natural,
            )  # fmt: skip
        self.source_pixels = self.pixel_sets[kind, natural]
        if "distil" in self.parts and self.source_pixels is not None:
            x = self.source_pixels.x
            self.source_pixels = Labelled(x, p=torch.softmax(self.source_head.logits(x), dim=1))

    def _clicks(self, corrections: Corrections) -> Labelled:
        if "brush" in self.parts:
            corrections = brushed(corrections, self.feats.valid, BRUSH_RADIUS)
        return super()._clicks(corrections)

    def _anchors(self, corrections: Corrections) -> Labelled:
        assert self.feats is not None
        clicked = (corrections.rows, corrections.cols)
        base = anchors.scene_anchors(self.feats, self.source_head, clicked)
        if self.parts & {"uniform", "mixed"}:
            drawn = uniform_anchors(self.feats, self.source_head, clicked)
            if "uniform" in self.parts:
                return drawn
            assert base.p is not None and drawn.p is not None
            return Labelled(torch.cat([base.x, drawn.x]), p=torch.cat([base.p, drawn.p]))
        return base

    def _fit(self, clicks: Labelled, anchor_pixels: Labelled, count: int) -> HeadWeights:
        scale = 50 / max(len(clicks), 1) if "evidence" in self.parts else 1.0
        anchor_weight, source_weight = ANCHORS * scale, SOURCE_WEIGHT * scale
        pull = 0.1 if "loose" in self.parts else PULL
        if "loosen" in self.parts:
            pull *= min(1.0, FULL_WEIGHT_AT / max(count, 1))
        source = self.source_pixels
        if "blend" in self.parts and source is not None and source.y is not None:
            t = corrections_weight(count)
            own = torch.softmax(self.source_head.logits(source.x), dim=1)
            labels = torch.nn.functional.one_hot(source.y, own.shape[1]).float()
            source = Labelled(source.x, p=(1 - t) * own + t * labels)
        return fit_head(
            self.source_head, clicks, anchor_pixels, source,
            anchor_weight=anchor_weight, source_weight=source_weight,
            corrections_weight=corrections_weight(count) if "ramp" in self.parts else 1.0,
            bias_l2=1.0 if "bias" in self.parts else 0.0,
            l2=pull,
        )  # fmt: skip


def brushed(corrections: Corrections, valid: np.ndarray, radius: int) -> Corrections:
    """Each corrected pixel's disc of ``radius`` pixels (inside ``valid``), with its class."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = dy**2 + dx**2 <= radius**2
    dy, dx = dy[disc], dx[disc]
    rows = (corrections.rows[:, None] + dy[None]).ravel()
    cols = (corrections.cols[:, None] + dx[None]).ravel()
    keep = (rows >= 0) & (rows < valid.shape[0]) & (cols >= 0) & (cols < valid.shape[1])
    keep[keep] = valid[rows[keep], cols[keep]]
    codes, feature = (np.repeat(a, dy.size)[keep] for a in (corrections.codes, corrections.feature))
    return dataclasses.replace(
        corrections, rows=rows[keep], cols=cols[keep], codes=codes, feature=feature
    )


def random_head(channels: int, context: int) -> WideHead:
    """The refine's widened head (its seeded random projection) over ``channels`` features,
    with a ``context`` window (0: none)."""
    return WideHead.around(nn.Conv2d(channels, 1, 1), RANDOM_FEATURES, context)


def widened_head(head: HeadWeights, channels: int) -> HeadWeights:
    """``head`` over ``channels`` widened features: zero weight on those it did not read."""
    extra = torch.zeros(head.weight.shape[0], channels - head.weight.shape[1])
    return HeadWeights(torch.cat([head.weight, extra], dim=1), head.bias.clone())


def paired(refiner: VariantRefiner, labels: np.ndarray, seed: int, variants: list[str],
           cache: Path) -> dict[str, list[dict]]:  # fmt: skip
    """Every variant fitted to the kept fit's simulated user's clicks (cached) at every
    checkpoint, scored as ``interactive.simulate`` scores."""
    if not cache.is_file():
        refiner.set_variant("base")
        kept: dict = {}
        interactive.simulate(refiner, labels, seed, kept)
        np.savez(cache, **{f"{n}": np.stack(rc) for n, rc in kept.items()})
    clicks = np.load(cache)
    codes = refiner.card.class_codes()
    refiner.set_variant("base")
    source = refiner.map_codes(refiner.source_head)
    none = np.zeros(labels.shape, bool)
    miou, oa = interactive.scores(source, labels, codes, none)
    runs: dict[str, list[dict]] = {v: [{"clicks": 0, "miou": miou, "oa": oa}] for v in variants}
    for n in interactive.CHECKPOINTS:
        rows, cols = clicks[str(n)]
        corr = Corrections(rows, cols, labels[rows, cols].astype(np.uint8), np.arange(n), n)
        clicked = none.copy()
        clicked[rows, cols] = True
        source_miou, source_oa = interactive.scores(source, labels, codes, clicked)
        for variant in variants:
            refiner.set_variant(variant)
            miou, oa = interactive.scores(
                refiner.map_codes(refiner.fit(corr)), labels, codes, clicked
            )
            runs[variant].append(
                {"clicks": n, "miou": miou, "oa": oa,
                 "source_miou": source_miou, "source_oa": source_oa}
            )  # fmt: skip
    return runs


def gain(run: list[dict], i: int, score: str) -> float:
    """Row ``i``'s ``score`` over the source map's (on the same pixels where recorded)."""
    return run[i][score] - run[i].get(f"source_{score}", run[0][score])


def table(results: dict) -> str:
    """Gain in mIoU / OA over the source map at each checkpoint, mean over the users (paired
    runs: over the source map on the same unclicked pixels)."""
    checkpoints = results.get("checkpoints", [10, 25, 50])
    lines = [
        "| variant | scene | " + " | ".join(f"{n} clicks" for n in checkpoints) + " |",
        "|---|---|" + "---:|" * len(checkpoints),
    ]
    for variant, scenes in results["variants"].items():
        for scene, users in scenes.items():
            runs = list(users.values())
            cells = [
                f"{np.mean([gain(r, i, 'miou') for r in runs]):+.1f} / "
                f"{np.mean([gain(r, i, 'oa') for r in runs]):+.1f}"
                for i in range(1, len(checkpoints) + 1)
            ]
            lines.append(f"| {variant} | {scene} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    global RANDOM_FEATURES, BRUSH_RADIUS, PULL, ANCHORS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--scenes", default="target_b,vegetation,water,sensor_c,rural_b,water_b,mixed_b"
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "refine_variants.json"))
    parser.add_argument("--checkpoints", default="10,25,50")
    parser.add_argument("--paired", action="store_true", help="every variant on the same clicks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--random-features", type=int, default=RANDOM_FEATURES)
    parser.add_argument("--brush", type=int, default=BRUSH_RADIUS, help="the brush's radius")
    parser.add_argument("--l2", type=float, default=PULL, help="pull toward the source head")
    parser.add_argument(
        "--anchor-weight", type=float, default=ANCHORS, help="the scene anchors' weight"
    )
    parser.add_argument("--table", metavar="JSON", help="only print the Markdown table of a run")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    torch.set_num_threads(args.threads)
    RANDOM_FEATURES, BRUSH_RADIUS = args.random_features, args.brush
    PULL, ANCHORS = args.l2, args.anchor_weight
    interactive.CHECKPOINTS = tuple(int(n) for n in args.checkpoints.split(","))
    card, net = model_from_file(str(interactive.MODEL))
    refiner = VariantRefiner(card, net, torch.device("cpu"), read_source_sample(interactive.MODEL))
    results: dict = {
        "command": f"python bench/refine_variants.py {'--paired ' if args.paired else ''}"
        f"--variants {args.variants} --scenes {args.scenes} --seeds {args.seeds} "
        f"--checkpoints {args.checkpoints} --threads {args.threads}"
        f" --random-features {args.random_features} --brush {args.brush}"
        f" --l2 {args.l2} --anchor-weight {args.anchor_weight}",
        "checkpoints": list(interactive.CHECKPOINTS),
        "variants": {},
    }
    cache = ROOT / "bench" / "out" / "refine_clicks"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = args.scenes.split(",")
    for scene in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes"):
        if scene.name not in wanted:
            continue
        region = open_region(card, net, str(scene.image), scene.bands)
        refiner.use_region(region, region_features(card, refiner.split, region, refiner.device))
        labels = gdal.Open(str(scene.labels)).ReadAsArray()
        variants = args.variants.split(",")
        for seed in args.seeds.split(","):
            start = time.perf_counter()
            if args.paired:
                name = f"{scene.name}_{seed}_{args.threads}_{interactive.CHECKPOINTS[-1]}.npz"
                runs = paired(refiner, labels, int(seed), variants, cache / name)
            else:
                runs = {}
                for variant in variants:
                    refiner.set_variant(variant)
                    runs[variant] = interactive.simulate(refiner, labels, int(seed))
            for variant, run in runs.items():
                results["variants"].setdefault(variant, {}).setdefault(scene.name, {})[seed] = run
            print(scene.name, seed, f"{time.perf_counter() - start:.0f} s", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
