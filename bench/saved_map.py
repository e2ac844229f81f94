"""Does a saved refined model map a scene as the refine session did?

A simulated user's clicks (the cached users of ``refine_variants.py --paired``) refine the
default model on a whole scene; the session's map (what the dock shows and what
``interactive.py`` scores) is compared with ``lovecs predict``'s map of the same scene with the
saved model (what ``lovecs refine --map`` writes). The session keeps each tile's core, ``lovecs
predict`` blends overlapping tiles, and this network's output depends on where the tiles lie: the
two maps differ on scattered pixels (bench/RESULTS.md), and are equal where one tile holds the
raster (tests/core/refinement/test_refine.py).

    python bench/saved_map.py [--scenes target_b,sensor_c] [--clicks 50] [--seed 0]
    python bench/saved_map.py --clicks 0     # the source head, widened, saved and mapped
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import interactive
import numpy as np
import torch
from osgeo import gdal
from scenes import DEFAULT_DATA, build_scenes

from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.card import read_source_sample
from lovecs_core.model.networks import model_from_file
from lovecs_core.rasters.corrections import Corrections
from lovecs_core.refinement.features import open_region, region_features
from lovecs_core.refinement.refiner import Refiner

ROOT = Path(__file__).resolve().parents[1]


def compare(scene, refiner: Refiner, clicks: Path, n: int, work: Path) -> str:
    """One Markdown row: pixels where the two maps agree, and each map's mIoU / OA."""
    card, net = refiner.card, refiner.net
    region = open_region(card, net, str(scene.image), scene.bands)
    refiner.use_region(region, region_features(card, refiner.split, region, refiner.device))
    labels = gdal.Open(str(scene.labels)).ReadAsArray()
    rows, cols = np.load(clicks)[str(n)] if n else (np.zeros(0, np.int64),) * 2
    corrections = Corrections(rows, cols, labels[rows, cols].astype(np.uint8), np.arange(n), n)
    outcome = refiner.refine(corrections, measure=False) if n else None
    weights = outcome.weights if outcome is not None else refiner.source_head
    session = refiner.map_codes(weights)
    saved = refiner.save(weights, work / f"{scene.name}.lovecs", outcome, None)
    tone = region.tone if region.tone is not None else "off"
    mapped = predict_raster(
        str(saved), str(scene.image), work / f"{scene.name}.tif", bands=region.bands,
        device="cpu", tone=tone,
    )  # fmt: skip
    predicted = gdal.Open(str(mapped.output)).ReadAsArray()
    clicked = np.zeros(labels.shape, bool)
    clicked[rows, cols] = True
    codes = card.class_codes()
    scores = [interactive.scores(m, labels, codes, clicked) for m in (session, predicted)]
    assert refiner.feats is not None
    agree = 100 * float((session == predicted)[refiner.feats.valid].mean())
    cells = " | ".join(f"{miou:.1f} / {oa:.1f}" for miou, oa in scores)
    return f"| {scene.name} | {n} | {agree:.2f} % | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="target_b,sensor_c")
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    card, net = model_from_file(str(interactive.MODEL))
    refiner = Refiner(card, net, torch.device("cpu"), read_source_sample(interactive.MODEL))
    print("| scene | clicks | pixels alike | session map mIoU / OA | lovecs predict mIoU / OA |")
    print("|---|---:|---:|---:|---:|")
    wanted = args.scenes.split(",")
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as work:
        for scene in build_scenes(Path(args.data), ROOT / "bench" / "data" / "scenes"):
            if scene.name in wanted:
                name = f"{scene.name}_{args.seed}_2_200.npz"  # refine_variants.py --paired's cache
                clicks = ROOT / "bench" / "out" / "refine_clicks" / name
                print(compare(scene, refiner, clicks, args.clicks, Path(work)), flush=True)


if __name__ == "__main__":
    main()
